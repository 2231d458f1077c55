"""Damaged files: a truncated or corrupted model, tokenizer, checkpoint, teacher cache or metrics file is
detected by the sizes and checksums recorded with it (or by not parsing), and refused with a message
naming the file and the command that rebuilds it; a damaged checkpoint is deleted and redone.

Snakemake does not see such damage: a file truncated after its job finished still exists and is no older
than before. The reader is the first to know, and says so before any work starts (`xkdbench.integrity`).
These tests run in seconds, by default; test_damaged_study.py does the same through the workflow.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.errors import IntegrityError
from xkdbench.integrity import MANIFEST, command_line, usable_checkpoint, verify_files
from xkdbench.models import load_model, load_tokenizer, save_tokenizer

LLAMA = pytest.mark.parametrize("family", ["llama"])  # the integrity layer does not depend on the family
RUN_INFO = {"command": "train-teacher",
            "arguments": {"config": "results/s/config.yaml", "task": "reasoning", "data": "results/s/data/reasoning",
                          "tokenizer": "results/s/tokenizer/reasoning", "seed": 0, "out": "results/s/teacher/reasoning",
                          "threads": None}}
REBUILD = ("xkdbench train-teacher --config results/s/config.yaml --task reasoning --seed 0 --data results/s/data/reasoning "
           "--tokenizer results/s/tokenizer/reasoning --out results/s/teacher/reasoning")


def damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "corrupt":  # the same size, one bit flipped in the middle
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    else:
        path.unlink()


@pytest.fixture
def teacher_run(tmp_path, tokenizer):
    """A training run's directory as train-teacher leaves it: run_info.json and the saved model."""
    run = tmp_path / "teacher"
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps(RUN_INFO))
    tiny_model(tokenizer, "llama").save(run / "model", method={"method": "sft", "settings": {}})
    return run


def test_a_saved_model_records_its_files_sizes_and_checksums(teacher_run):
    manifest = json.loads((teacher_run / "model" / MANIFEST).read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json", "xkdbench_method.json"} <= set(manifest["files"])
    size = (teacher_run / "model" / "model.safetensors").stat().st_size
    assert manifest["files"]["model.safetensors"]["bytes"] == size
    assert verify_files(teacher_run / "model")
    load_model(teacher_run / "model")


@pytest.mark.parametrize("how,message", [("truncate", r"has \d+ bytes, xkdbench_files.json recorded \d+"),
                                         ("corrupt", r"is corrupted \(its sha256 differs"),
                                         ("delete", r"is missing")])
def test_a_damaged_model_file_is_refused_naming_it_and_its_rebuild(teacher_run, how, message):
    """The issue's case: a truncated teacher model.safetensors surfaced as a safetensors traceback deep
    inside a later job; now the job that loads it stops first, naming the file and the command."""
    weights = teacher_run / "model" / "model.safetensors"
    damage(weights, how)
    with pytest.raises(IntegrityError, match=message) as error:
        load_model(teacher_run / "model")
    text = str(error.value)
    assert str(weights) in text
    assert f"rerun snakemake with `--forcerun {teacher_run / 'train_summary.json'}` (rule train_teacher;" in text
    assert f"`{REBUILD}`" in text


def test_a_damaged_config_or_tokenizer_file_of_a_model_is_refused(teacher_run):
    damage(teacher_run / "model" / "tokenizer.json", "corrupt")
    with pytest.raises(IntegrityError, match=re.escape(str(teacher_run / "model" / "tokenizer.json"))):
        load_model(teacher_run / "model")


def test_a_damaged_manifest_is_refused(teacher_run):
    damage(teacher_run / "model" / MANIFEST, "truncate")
    with pytest.raises(IntegrityError, match="xkdbench_files.json is damaged"):
        load_model(teacher_run / "model")


def test_a_model_without_a_manifest_loads_unverified(tmp_path, tokenizer):
    """A Hugging Face checkpoint (or a model saved before manifests) has nothing to check against."""
    model = tiny_model(tokenizer, "llama")
    model.model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    assert verify_files(tmp_path / "hf") is False
    loaded = load_model(tmp_path / "hf")
    assert torch.equal(loaded.model.lm_head.weight, model.model.lm_head.weight)


def test_a_damaged_tokenizer_is_refused(tmp_path, tokenizer):
    save_tokenizer(tokenizer, tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / MANIFEST).is_file()
    damage(tmp_path / "tokenizer" / "tokenizer.json", "truncate")
    with pytest.raises(IntegrityError, match=r"tokenizer.json has \d+ bytes.*--forcerun .*tokenizer/tokenizer_config.json"):
        load_tokenizer(tmp_path / "tokenizer")


def test_the_rebuild_command_is_the_recorded_one():
    info = {"command": "distill", "arguments": {"config": "c.yaml", "task": "t", "method": "m", "fraction": 0.5,
                                                 "teacher_outputs": None, "evaluate": True, "record_divergence": False}}
    assert command_line(info) == "xkdbench distill --config c.yaml --task t --method m --fraction 0.5 --evaluate"
    assert command_line({"command": "unknown", "arguments": {}}) is None


# -- training checkpoints ---------------------------------------------------------------------------
def _checkpointed_run(tmp_path, tokenizer, toy_data, stop_after):
    from tests.core.test_trainer import run

    return run(tokenizer, "llama", toy_data, tmp_path / "run", stop_after=stop_after, steps=4, checkpoint_every=2)


@LLAMA
def test_a_checkpoint_records_its_files_and_a_damaged_one_is_deleted(tmp_path, tokenizer, toy_data, family, capsys):
    _checkpointed_run(tmp_path, tokenizer, toy_data, stop_after=2)
    checkpoint = tmp_path / "run" / "checkpoint"
    files = json.loads((checkpoint / MANIFEST).read_text())["files"]
    assert {"trainer_state.pt", "model/model.safetensors", "model/config.json"} <= set(files)
    assert usable_checkpoint(checkpoint)
    damage(checkpoint / "trainer_state.pt", "truncate")
    assert not usable_checkpoint(checkpoint)
    assert not checkpoint.exists()
    err = capsys.readouterr().err
    assert "checkpoint not resumed" in err and "trainer_state.pt has" in err and "training starts over" in err


@LLAMA
def test_a_run_resumed_from_a_damaged_checkpoint_starts_over_with_the_same_result(tmp_path, tokenizer, toy_data,
                                                                                   family):
    whole, _ = _checkpointed_run(tmp_path / "whole", tokenizer, toy_data, stop_after=None)
    _checkpointed_run(tmp_path, tokenizer, toy_data, stop_after=2)
    damage(tmp_path / "run" / "checkpoint" / "model" / "model.safetensors", "truncate")
    resumed, _ = _checkpointed_run(tmp_path, tokenizer, toy_data, stop_after=None)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


# -- the teacher cache -------------------------------------------------------------------------------
@LLAMA
def test_a_damaged_teacher_cache_manifest_is_refused_naming_it(tmp_path, tokenizer, toy_data, family):
    from tests.core.test_teacher_cache import IDENTITY, build, the_teacher
    from xkdbench.core.teacher_cache import TeacherCache, TeacherCacheError

    build(tmp_path / "cache", the_teacher(tokenizer, family), toy_data, top_k=4)
    damage(tmp_path / "cache" / "manifest.json", "truncate")
    with pytest.raises(TeacherCacheError, match=r"manifest.json is damaged .*xkdbench teacher-cache.*--forcerun "
                                                r".*cache/manifest.json"):
        TeacherCache.open(tmp_path / "cache", expect=IDENTITY, mode="top_k", top_k=4)


# -- metrics, outputs and summaries, where the report reads them ------------------------------------------
@pytest.fixture
def results(tmp_path):
    from tests.reporting.conftest import make_config, write_results

    write_results(tmp_path / "results")
    cell = tmp_path / "results" / "cells" / "summarization" / "sft" / "f1" / "seed0"
    (cell / "run_info.json").write_text(json.dumps({"command": "distill", "arguments": {
        "config": "c.yaml", "task": "summarization", "method": "sft", "fraction": 1.0, "seed": 0,
        "out": str(cell), "evaluate": True}}))
    (cell / "eval" / "run_info.json").write_text(json.dumps({"command": "evaluate", "arguments": {
        "checkpoint": str(cell / "model"), "out": str(cell / "eval"), "with_samples": True}}))
    return make_config(), tmp_path / "results", cell


@pytest.mark.parametrize("name,how,message", [
    ("eval/metrics.json", "truncate", "does not parse as JSON"),
    ("eval/outputs.jsonl", "truncate", "a line is cut short"),
    ("train_summary.json", "truncate", "does not parse as JSON"),
])
def test_a_damaged_result_file_stops_the_report_naming_it_and_the_cell_job(tmp_path, results, name, how, message):
    from xkdbench.reporting import build_report

    config, root, cell = results
    damage(cell / name, how)
    with pytest.raises(IntegrityError, match=re.escape(message)) as error:
        build_report(config, root, tmp_path / "out")
    text = str(error.value)
    assert str(cell / name) in text
    # a cell's evaluation belongs to its distill job: that is the job to rerun
    assert f"rerun snakemake with `--forcerun {cell / 'train_summary.json'}` (rule distill;" in text
    assert "`xkdbench distill --config c.yaml --task summarization --method sft" in text
    assert not (tmp_path / "out" / "main_table.md").exists()


def test_outputs_cut_at_a_line_boundary_are_caught_by_the_count_metrics_records(tmp_path, results):
    """A file cut between two lines parses; it is the number of inputs metrics.json records that gives it away."""
    from xkdbench.reporting import build_report

    config, root, cell = results
    lines = (cell / "eval" / "outputs.jsonl").read_text().splitlines(keepends=True)
    (cell / "eval" / "outputs.jsonl").write_text("".join(lines[:-3]))
    with pytest.raises(IntegrityError, match=r"17 outputs, metrics.json counts 20 inputs"):
        build_report(config, root, tmp_path / "out")


def test_the_report_command_exits_2_with_the_message(tmp_path, results, capsys):
    from tests.faults.conftest import synthetic_config_file
    from xkdbench.cli import main

    _, root, cell = results
    path = synthetic_config_file(tmp_path / "config.yaml")
    damage(cell / "eval" / "metrics.json", "truncate")
    code = main(["report", "--config", str(path), "--results", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"xkdbench report: error: {cell / 'eval' / 'metrics.json'} is damaged" in err


def test_a_whole_tree_reports(tmp_path, results):
    from xkdbench.reporting import build_report

    config, root, _ = results
    shutil.rmtree(root / "cells" / "reasoning" / "sft" / "f1" / "seed0" / "eval")  # missing: listed, not an error
    paths = build_report(config, root, tmp_path / "out")
    assert paths["main_table"]
    assert "reasoning/sft/f1/seed0: eval/metrics.json missing" in (tmp_path / "out" / "missing_cells.txt").read_text()


@pytest.mark.parametrize("cut", [8, 30])
def test_teacher_outputs_cut_short_are_refused_naming_the_file(tmp_path, cut):
    """SeqKD's cached teacher outputs are JSON lines; a file cut inside a record is refused with the
    file's name and the job that rebuilds it, not a JSON traceback."""
    from xkdbench.io import write_jsonl
    from xkdbench.stages import cached_teacher_outputs

    path = tmp_path / "teacher_outputs" / "summarization.jsonl"
    path.parent.mkdir()
    write_jsonl(path, [{"prompt": f"p{i}", "output": f"o{i}"} for i in range(3)])
    assert cached_teacher_outputs(path, ["p2", "p0"]) == ["o2", "o0"]
    text = path.read_text()
    path.write_text(text[: len(text) - cut])
    with pytest.raises(IntegrityError, match="damaged or was cut short") as error:
        cached_teacher_outputs(path, ["p0"])
    assert str(path) in str(error.value) and "rerun snakemake with `--forcerun`" in str(error.value)
