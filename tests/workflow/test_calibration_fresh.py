"""benchmarks/calibration.py --fresh: inputs drawn with the generator's next seed, none of them already in
one of the study's splits by prompt (with --fresh-keep-seen, all of them), in a copy of the data whose
other splits are the study's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.scripts import load_script
from xkdbench.tasks import get_task


@pytest.fixture(scope="module")
def calibration():
    return load_script("benchmarks/calibration.py")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def test_fresh_inputs_are_the_next_seeds_draw_less_the_studys_prompts(calibration, tmp_path):
    options = {"difficulty": 0, "sizes": {"train": 400, "warmup": 20, "validation": 20, "test": 20}}
    task = get_task("reasoning", **options)
    data = tmp_path / "study_data"
    config = {"tasks": {"reasoning": {"options": options}}}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    calibration.run(calibration.xkdbench("prepare-data", "--config", str(config_path), "--task", "reasoning",
                                         "--out", str(data), threads=False), tmp_path / "prepare.log")

    fresh = calibration.fresh_inputs(config, "reasoning", data, 300, tmp_path / "out" / "fresh", tmp_path / "draw.log")

    prompt = task.prompt
    seen = {prompt(r) for split in ("train", "warmup", "validation", "test") for r in _lines(data / f"{split}.jsonl")}
    drawn = _lines(tmp_path / "out" / "fresh" / "drawn" / "validation.jsonl")
    kept = _lines(fresh / "validation.jsonl")
    # level 0 has few distinct problems, so the next seed repeats some of the study's: they are dropped
    assert 0 < len(kept) < len(drawn) == 300
    assert kept == [r for r in drawn if prompt(r) not in seen]
    # the next seed's draw, not the study's validation split again
    assert json.loads((tmp_path / "out" / "fresh" / "drawn" / "task.json").read_text())["options"]["seed"] == 1
    for split in ("train", "warmup", "test", "task"):
        name = f"{split}.json" if split == "task" else f"{split}.jsonl"
        assert (fresh / name).read_text() == (data / name).read_text()
    # a second call reuses the finished copy
    assert calibration.fresh_inputs(config, "reasoning", data, 300, tmp_path / "out" / "fresh", tmp_path / "draw.log") == fresh
    # --fresh-keep-seen: the same draw, every input kept in the order drawn (mixed as a test split is)
    as_drawn = calibration.fresh_inputs(config, "reasoning", data, 300, tmp_path / "out" / "fresh_as_drawn",
                                        tmp_path / "draw.log", keep_seen=True)
    assert _lines(as_drawn / "validation.jsonl") == drawn
    assert (as_drawn / "test.jsonl").read_text() == (data / "test.jsonl").read_text()


def test_fresh_is_refused_where_nothing_can_be_drawn(calibration):
    calibration.check_fresh({"tasks": {"reasoning": {"source": "hf"}}}, "reasoning", 0)  # not asked for
    calibration.check_fresh({"tasks": {"reasoning": {}}}, "reasoning", 100)  # embedded by default
    with pytest.raises(SystemExit, match="not embedded"):  # a real dataset has no generator to draw from
        calibration.check_fresh({"tasks": {"reasoning": {"source": "hf"}}}, "reasoning", 10)
    with pytest.raises(SystemExit, match=">= 0, got -1"):
        calibration.check_fresh({"tasks": {"reasoning": {}}}, "reasoning", -1)
