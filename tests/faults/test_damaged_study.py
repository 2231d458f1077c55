"""Damaged files and full or read-only folders in a whole study, through Snakemake (copies of the
uninterrupted fault-injection study, `reference_study`)."""
from __future__ import annotations

import re
import shutil

import pytest

from tests.faults.conftest import NAME, artefacts, run_snakemake, tables
from tests.faults.test_write_errors import mounted, read_only

GKD_CELL = f"results/{NAME}/cells/summarization/gkd_jsd0.5_lambda0.5/f1/seed0"


def copy(reference, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(reference, work, symlinks=True)  # modification times kept: the copy is up to date
    return work


@pytest.mark.faults
def test_a_truncated_teacher_model_is_named_by_the_job_that_reads_it(tmp_path, reference_study):
    """The issue's case. A teacher model.safetensors truncated after its job finished: Snakemake sees
    nothing to do (the file exists, no newer than before). The next job that loads the teacher (here a
    GKD cell, rerun) stops before any work with the file's name and the rebuild command, not a
    safetensors traceback; the Snakemake command it gives plans the teacher and every job after it.
    (Running it redoes nearly the whole study: the cheaper damage below is rebuilt end to end.)"""
    reference, _ = reference_study
    work = copy(reference, tmp_path)
    weights = work / f"results/{NAME}/teacher/summarization/model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    dry = run_snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    out = run_snakemake(work, "--forcerun", f"{GKD_CELL}/train_summary.json")
    assert out.returncode != 0
    log = (work / f"results/{NAME}/logs/distill/summarization/gkd_jsd0.5_lambda0.5/f1/seed0.log").read_text()
    teacher_dir = f"results/{NAME}/teacher/summarization"
    assert (f"xkdbench distill: error: {teacher_dir}/model/model.safetensors has 1000 bytes, xkdbench_files.json "
            "recorded") in log, log[-3000:]
    assert "Traceback" not in log and "Safetensor" not in log
    assert f"rerun snakemake with `--forcerun {teacher_dir}/train_summary.json` (rule train_teacher;" in log
    assert f"`xkdbench train-teacher --config results/{NAME}/config.yaml --task summarization" in log
    assert "model.safetensors has 1000 bytes" in out.stdout + out.stderr  # the failed job's log is shown

    plan = run_snakemake(work, "-n", "--forcerun", re.search(r"--forcerun (\S+)`", log).group(1))
    rules = set(re.findall(r"^(?:local)?rule (\w+):$", plan.stdout, flags=re.MULTILINE))
    assert {"train_teacher", "teacher_outputs", "teacher_cache", "evaluate_teacher", "distill", "report"} <= rules
    # Deleting the teacher instead would not do: Snakemake reruns no job whose outputs exist for a missing
    # input (it takes it for a deleted intermediate file), and the report's outputs exist.
    shutil.rmtree(work / teacher_dir)
    dry = run_snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.faults
def test_outputs_cut_at_a_line_boundary_are_refused_by_the_report_and_rebuilt_as_told(tmp_path, reference_study):
    """A cell's eval/outputs.jsonl cut between two lines still parses; the report (rerun) refuses it,
    since metrics.json counts more inputs, naming the file and its cell's job. Doing what the message says
    redoes that cell and the report: every table equals the uninterrupted run's again."""
    reference, _ = reference_study
    work = copy(reference, tmp_path)
    outputs = work / GKD_CELL / "eval" / "outputs.jsonl"
    lines = outputs.read_text().splitlines(keepends=True)
    outputs.write_text("".join(lines[:-4]))

    out = run_snakemake(work, "--forcerun", "report")
    assert out.returncode != 0
    log = (work / f"results/{NAME}/logs/report.log").read_text()
    assert (f"xkdbench report: error: {GKD_CELL}/eval/outputs.jsonl is damaged ({len(lines) - 4} outputs, "
            f"metrics.json counts {len(lines)} inputs") in log, log[-3000:]
    assert f"rerun snakemake with `--forcerun {GKD_CELL}/train_summary.json` (rule distill;" in log
    assert not (work / "paper_figures" / NAME / "main_table.md").exists()  # removed, never half-made

    out = run_snakemake(work, "--forcerun", re.search(r"--forcerun (\S+)`", log).group(1))
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    assert tables(work) == tables(reference)
    assert artefacts(work) == artefacts(reference)


@pytest.mark.faults
def test_a_read_only_or_full_figures_folder_through_the_workflow(tmp_path, reference_study):
    """Read-only: Snakemake itself refuses to run the report into write-protected outputs, touching
    nothing. Full (a 96 KiB tmpfs): the report job fails naming the file it could not write; every
    file it wrote before is whole (equal to the uninterrupted run's), none is half-written."""
    reference, _ = reference_study
    work = copy(reference, tmp_path)
    figures = work / "paper_figures" / NAME
    before = {p.name: p.read_bytes() for p in figures.iterdir() if p.is_file()}
    with read_only(figures):
        out = run_snakemake(work, "--forcerun", "report")
        assert out.returncode != 0
        assert "Write-protected output files for rule report" in out.stdout + out.stderr
    assert {p.name: p.read_bytes() for p in figures.iterdir() if p.is_file()} == before

    with mounted(figures, "-o", "size=96k") as disk:
        out = run_snakemake(work, "--forcerun", "report")
        assert out.returncode != 0
        log = (work / f"results/{NAME}/logs/report.log").read_text()
        assert re.search(rf"xkdbench report: error: cannot write paper_figures/{NAME}/\S+: no space left on the "
                         r"device \(ENOSPC\); nothing was written in its place", log), log[-3000:]
        assert "Traceback" not in log
        written = [p for p in disk.rglob("*") if p.is_file()]
        assert written and not [p for p in disk.rglob(".*")]
        for path in written:
            assert path.read_bytes() == (reference / "paper_figures" / NAME / path.relative_to(disk)).read_bytes()
    assert {p.name: p.read_bytes() for p in figures.iterdir() if p.is_file()} == before
