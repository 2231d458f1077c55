"""The hf source on local fixtures in the real schemas and hub layouts, offline."""
from __future__ import annotations

import json

import datasets
import pytest

from tests.tasks.conftest import HF_PATHS, TASKS
from xkdbench.tasks import SPLITS, OracleUnavailableError, get_task

FIELDS = {"summarization": ["document", "summary", "id"], "translation": ["translation"],
          "reasoning": ["question", "answer"]}
# records per split in the fixture files (GSM8K has no validation split)
FIXTURE_SIZES = {"summarization": {"train": 8, "validation": 3, "test": 3},
                 "translation": {"train": 10, "validation": 3, "test": 3},
                 "reasoning": {"train": 10, "test": 3}}


def _task(name, **options):
    options.setdefault("warmup_size", 2)
    if name == "reasoning":
        options.setdefault("validation_size", 3)
    return get_task(name, source="hf", dataset_path=str(HF_PATHS[name]), **options)


@pytest.mark.parametrize("name", TASKS)
def test_splits_mapping_and_schema(name, hf_offline):
    task = _task(name)
    loaded = {split: task.load(split).to_list() for split in SPLITS}
    real = datasets.load_dataset(str(HF_PATHS[name]), task.options()["dataset_name"])
    n_train = FIXTURE_SIZES[name]["train"]
    carved = 2 + (3 if name == "reasoning" else 0)
    assert len(loaded["warmup"]) == 2 and len(loaded["train"]) == n_train - carved
    if name == "reasoning":  # validation carved out of train, disjoint from warmup and the train pool
        assert len(loaded["validation"]) == 3
    else:
        assert loaded["validation"] == real["validation"].to_list()
    assert loaded["test"] == real["test"].to_list()
    from_train = loaded["warmup"] + loaded["train"] + (loaded["validation"] if name == "reasoning" else [])
    key = json.dumps
    assert sorted(map(key, from_train)) == sorted(map(key, real["train"].to_list()))
    for records in loaded.values():
        for record in records:
            assert list(record) == FIELDS[name]
            if name == "translation":
                assert set(record["translation"]) == {"de", "en"}
    # the train pool is in a seeded random order, not the file's order
    assert [key(r) for r in loaded["train"]] != [key(r) for r in real["train"].to_list()[carved:]]


@pytest.mark.parametrize("name", TASKS)
def test_seed_fixes_the_carve_out(name, hf_offline):
    a = _task(name, seed=0).load("warmup").to_list()
    assert _task(name, seed=0).load("warmup").to_list() == a
    others = [_task(name, seed=s).load("warmup").to_list() for s in (1, 2, 3)]
    assert any(o != a for o in others)


def test_caps_and_fractions(hf_offline):
    task = _task("translation", sizes={"train": 4, "test": 2})
    assert len(task.load("train")) == 4 and len(task.load("test")) == 2 and len(task.load("validation")) == 3
    assert task.load("train", 0.5).to_list() == task.load("train").to_list()[:2]
    assert len(task.load("train", 0.1)) == 1
    full = _task("translation")
    assert task.load("train").to_list() == full.load("train").to_list()[:4]


@pytest.mark.parametrize("name", TASKS)
def test_prepare_and_score_on_fixtures(name, hf_offline, tmp_path, monkeypatch):
    task = _task(name)
    sizes = task.prepare(tmp_path / "data")
    carved = 2 + (3 if name == "reasoning" else 0)
    assert sizes == {"train": FIXTURE_SIZES[name]["train"] - carved, "warmup": 2,
                     "validation": 3, "test": 3}
    info = json.loads((tmp_path / "data" / "task.json").read_text())
    assert info["source"] == "hf" and info["has_oracle"] is False and info["options"]["warmup_size"] == 2
    expected = task.load("test").to_list()
    # after prepare, consumers read the files and never call load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called"))
    local = _task(name, data_dir=str(tmp_path / "data"))
    test = local.load("test").to_list()
    assert test == expected
    gold = [local.target(ex) for ex in test]
    scores = local.score(gold, test)
    assert "oracle" not in scores and scores[local.headline_metric] == pytest.approx(
        1.0 if name == "reasoning" else 100.0)
    assert local.example_scores(gold, test) == pytest.approx([1.0 if name == "reasoning" else 100.0] * len(test))
    with pytest.raises(OracleUnavailableError):
        local.oracle_score(test[0], gold[0])
    texts = list(local.training_texts())
    assert len(texts) == 2 * (sizes["train"] + sizes["warmup"])
    assert texts[0] == local.prompt(local.load("train")[0])


def test_reasoning_prompts_on_real_records(hf_offline):
    task = _task("reasoning")
    example = task.load("test")[0]
    assert task.prompt(example) == "question: " + example["question"]
    assert task.target(example).endswith("#### 18")


def test_missing_field_is_an_error(hf_offline, tmp_path):
    for split in ("train", "validation", "test"):
        rows = [{"document": f"d{i}", "id": str(i)} for i in range(5)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("summarization", source="hf", dataset_path=str(tmp_path), warmup_size=1)
    with pytest.raises(ValueError, match="lacks field.*summary"):
        task.load("test")


def test_missing_split_is_an_error(hf_offline):
    task = get_task("translation", source="hf", dataset_path=str(HF_PATHS["reasoning"]), dataset_name="main")
    with pytest.raises(ValueError, match="missing: validation"):
        task.load("train")


def test_too_small_train_split_is_an_error(hf_offline):
    with pytest.raises(ValueError, match="too few to carve out"):
        _task("reasoning", warmup_size=5, validation_size=5).load("train")
