"""The public API: names, errors that name the field, options, splits, fractions, prepare/data_dir."""
from __future__ import annotations

import json
import math

import datasets
import pytest

from tests.tasks.conftest import SMALL, TASKS
from xkdbench.registry import UnknownNameError
from xkdbench.tasks import SPLITS, Task, get_task, task_names


def test_names_splits_and_headline_metrics():
    assert task_names() == ["reasoning", "summarization", "translation"]
    assert SPLITS == ("train", "warmup", "validation", "test")
    headline = {name: get_task(name, sizes=SMALL).headline_metric for name in TASKS}
    assert headline == {"summarization": "rouge2", "translation": "bleu", "reasoning": "accuracy_strict"}
    for name in TASKS:
        task = get_task(name, sizes=SMALL)
        assert isinstance(task, Task) and task.name == name and task.source == "embedded" and task.has_oracle


def test_unknown_task_and_source_list_the_known_ones():
    with pytest.raises(UnknownNameError) as err:
        get_task("summarisation")
    assert isinstance(err.value, KeyError)
    assert "summarisation" in str(err.value) and "reasoning, summarization, translation" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        get_task("translation", source="huggingface")
    assert "huggingface" in str(err.value) and "embedded, hf" in str(err.value)


@pytest.mark.parametrize("source,option", [("embedded", "dataset_path"), ("embedded", "difficultly"),
                                           ("hf", "difficulty"), ("hf", "size")])
def test_unknown_option_names_it_and_the_allowed_ones(source, option):
    with pytest.raises(ValueError) as err:
        get_task("reasoning", source=source, **{option: 1})
    message = str(err.value)
    assert repr(option) in message and "allowed options" in message
    allowed = message.split("allowed options: ")[1]
    assert ("difficulty" in allowed) == (source == "embedded") and ("dataset_path" in allowed) == (source == "hf")


@pytest.mark.parametrize("value", [-1, 4, 1.0, "1", True, None])
def test_difficulty_out_of_range(value):
    with pytest.raises(ValueError, match=r"difficulty must be an integer in 0\.\.3"):
        get_task("summarization", difficulty=value)



@pytest.mark.parametrize("options,message", [
    ({"longer_share": 1.5}, r"longer_share must be a number in \[0, 1\].*got 1\.5"),
    ({"longer_share": "0.5"}, r"longer_share must be a number in \[0, 1\].*got '0\.5'"),
    ({"longer_share": True}, r"longer_share must be a number in \[0, 1\].*got True"),
    ({"longer_share": 0.2, "difficulty": 3}, r"longer_share must be 0 at difficulty 3.*allowed at difficulty 0\.\.2"),
])
def test_reasoning_longer_share_is_checked(options, message):
    with pytest.raises(ValueError, match=message):
        get_task("reasoning", **options)


def test_longer_share_is_reasonings_own_option():
    assert get_task("reasoning", difficulty=2, longer_share=1).options()["longer_share"] == 1.0
    assert get_task("reasoning", difficulty=3).options()["longer_share"] == 0.0
    for name in ("translation", "summarization"):
        with pytest.raises(ValueError, match=r"unknown option\(s\) 'longer_share'"):
            get_task(name, longer_share=0.5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'longer_share'"):
        get_task("reasoning", source="hf", longer_share=0.5)


@pytest.mark.parametrize("sizes,field", [({"training": 5}, "unknown split"), ({"train": 0}, "sizes.train"),
                                         ({"test": 2.5}, "sizes.test"), ([1, 2], "sizes must be a mapping")])
def test_bad_sizes(sizes, field):
    with pytest.raises(ValueError, match=field):
        get_task("translation", sizes=sizes)


def test_bad_seed_and_hf_values():
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        get_task("reasoning", seed=-3)
    with pytest.raises(ValueError, match="warmup_size must be an integer >= 1"):
        get_task("reasoning", source="hf", warmup_size=0)
    with pytest.raises(ValueError, match="revision must be a string"):
        get_task("reasoning", source="hf", revision=3)


def test_resolved_options():
    task = get_task("translation", seed=3, sizes={"test": 7})
    assert task.options() == {"seed": 3, "difficulty": 1, "data_dir": None,
                              "sizes": {"train": 4000, "warmup": 200, "validation": 200, "test": 7}}
    hf = get_task("reasoning", source="hf")
    assert hf.options()["dataset_path"] == "openai/gsm8k" and hf.options()["dataset_name"] == "main"
    assert get_task("translation", source="hf").options()["dataset_name"] == "de-en"
    assert get_task("summarization", source="hf").options()["dataset_path"] == "EdinburghNLP/xsum"
    assert not hf.has_oracle and hf.source == "hf"


@pytest.mark.parametrize("split", ["dev", "Train", "eval", ""])
def test_bad_split_names_the_allowed_ones(split):
    task = get_task("reasoning", sizes=SMALL)
    with pytest.raises(ValueError, match="split must be one of train, warmup, validation, test"):
        task.load(split)


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.2, True, "0.5", None])
def test_bad_fraction(fraction):
    task = get_task("summarization", sizes=SMALL)
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
        task.load("train", fraction)


def test_fraction_only_for_train():
    task = get_task("summarization", sizes=SMALL)
    with pytest.raises(ValueError, match="fraction applies only to the train split"):
        task.load("test", 0.5)
    assert len(task.load("test", 1.0)) == SMALL["test"]


@pytest.mark.parametrize("name", TASKS)
def test_fractions_are_nested_prefixes(name):
    task = get_task(name, sizes={**SMALL, "train": 30})
    full = task.load("train").to_list()
    assert isinstance(task.load("train"), datasets.Dataset) and len(full) == 30
    previous = []
    for fraction in (0.01, 0.1, 1 / 3, 0.5, 0.75, 1.0):
        part = task.load("train", fraction).to_list()
        assert len(part) == max(1, math.ceil(round(fraction * 30, 9)))
        assert part == full[: len(part)] and part[: len(previous)] == previous
        previous = part
    assert len(task.load("train", 0.1)) == 3  # 0.1 * 30 is 3.0000000000000004 in floats


@pytest.mark.parametrize("name", TASKS)
def test_prepare_then_data_dir_reads_the_files(name, tmp_path):
    task = get_task(name, sizes=SMALL, seed=5)
    sizes = task.prepare(tmp_path / "data")
    assert sizes == SMALL
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["task.json", "test.jsonl", "train.jsonl",
                                                                     "validation.jsonl", "warmup.jsonl"]
    info = json.loads((tmp_path / "data" / "task.json").read_text())
    assert info["name"] == name and info["source"] == "embedded" and info["sizes"] == SMALL
    assert info["options"] == {"seed": 5, "difficulty": task.options()["difficulty"], "sizes": SMALL,
                               **({"longer_share": 0.0} if name == "reasoning" else {})}  # reasoning's own option
    local = get_task(name, sizes=SMALL, seed=5, data_dir=str(tmp_path / "data"))
    for split in SPLITS:
        assert local.load(split).to_list() == task.load(split).to_list()
    # the files are what is read: edit one record and see it
    lines = (tmp_path / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    key = next(iter(record))
    record[key] = {"de": "x", "en": "y"} if key == "translation" else "edited"
    (tmp_path / "data" / "test.jsonl").write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n", encoding="utf-8")
    assert get_task(name, sizes=SMALL, seed=5, data_dir=str(tmp_path / "data")).load("test")[0] == record


def test_data_dir_with_other_options_is_an_error(tmp_path):
    get_task("reasoning", sizes=SMALL, difficulty=1).prepare(tmp_path)
    with pytest.raises(ValueError, match="prepared for"):
        get_task("reasoning", sizes=SMALL, difficulty=2, data_dir=str(tmp_path)).load("train")


def test_data_dir_without_files_generates(tmp_path):
    task = get_task("translation", sizes=SMALL, data_dir=str(tmp_path / "empty"))
    assert task.load("validation").to_list() == get_task("translation", sizes=SMALL).load("validation").to_list()


def test_malformed_local_records_are_an_error(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1", "extra": 1}) + "\n")
    with pytest.raises(ValueError, match="differ from the reasoning schema"):
        get_task("reasoning", sizes=SMALL, data_dir=str(tmp_path)).load("train")


@pytest.mark.parametrize("name", TASKS)
def test_training_texts_are_prompts_and_targets_of_train_and_warmup(name):
    task = get_task(name, sizes=SMALL)
    texts = list(task.training_texts())
    assert len(texts) == 2 * (SMALL["train"] + SMALL["warmup"])
    first = task.load("train")[0]
    assert texts[:2] == [task.prompt(first), task.target(first)]
    assert texts[-1] == task.target(task.load("warmup")[-1])


def test_prompts_and_targets():
    s = {"document": "Anna had a busy week.", "summary": "S.", "id": "1"}
    t = {"translation": {"de": "Der Mann.", "en": "The man."}}
    r = {"question": "How many?", "answer": "1+1 = <<1+1=2>>2\n#### 2"}
    assert get_task("summarization").prompt(s) == "summarize: Anna had a busy week."
    assert get_task("summarization").target(s) == "S."
    assert get_task("translation").prompt(t) == "translate English to German: The man."
    assert get_task("translation").target(t) == "Der Mann."
    assert get_task("reasoning").prompt(r) == "question: How many?"
    assert get_task("reasoning").target(r) == r["answer"]


@pytest.mark.parametrize("name,keys", [("summarization", {"rouge1", "rouge2", "rougeL", "oracle"}),
                                       ("translation", {"bleu", "chrf", "oracle"}),
                                       ("reasoning", {"accuracy_strict", "accuracy_flexible", "oracle", "valid_steps"})])
def test_score_keys_and_perfect_predictions(name, keys):
    task = get_task(name, sizes=SMALL)
    examples = task.load("test").to_list()
    gold = [task.target(ex) for ex in examples]
    scores = task.score(gold, examples)
    assert set(scores) == keys
    perfect = 1.0 if name == "reasoning" else 100.0
    assert scores[task.headline_metric] == pytest.approx(perfect)
    assert scores["oracle"] == 1.0
    # every example at the top of the scale, not merely all equal
    assert task.example_scores(gold, examples) == pytest.approx([perfect] * len(examples))
    empty = task.score([""] * len(examples), examples)
    assert empty[task.headline_metric] == 0.0 and empty["oracle"] == 0.0
    assert task.example_scores([""] * len(examples), examples) == [0.0] * len(examples)
    with pytest.raises(ValueError, match="predictions"):
        task.score(gold[:-1], examples)


@pytest.mark.parametrize("name", TASKS)
def test_records_are_load_without_the_dataset(name, tmp_path):
    """Jobs iterate `records`; it must be exactly what `load` holds, split by split and fraction by fraction,
    generated or read back from a prepared data_dir."""
    task = get_task(name, sizes=SMALL)
    task.prepare(tmp_path)
    for source in (task, get_task(name, sizes=SMALL, data_dir=str(tmp_path))):
        for split, fraction in (("train", 1.0), ("train", 0.1), ("test", 1.0), ("validation", 1.0)):
            records = source.records(split, fraction)
            assert isinstance(records, list) and records == list(source.load(split, fraction))
            assert len(records) == math.ceil(fraction * SMALL[split])
    with pytest.raises(ValueError, match="fraction applies only to the train split"):
        task.records("test", 0.5)
