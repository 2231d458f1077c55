"""The workflow through a real SLURM controller: Debian's slurm-wlm and munge on this machine (installed with
apt when missing), one node started and stopped here (tests/slurm/controller.py), jobs submitted by
snakemake-executor-plugin-slurm through workflows/profiles/slurm-local.

Run with `pytest -m slurm` as root on a Debian machine (CI is one); other users are skipped with a reason.
A missing apt, a failed install or a controller that does not come up fails the test with the daemons'
logs, never skips it.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.slurm.controller import Controller, ControllerError, ensure_packages
from tests.workflow.test_workflow import OFFLINE, SNAKEMAKE, workflow_copy

pytestmark = pytest.mark.slurm

CONFIG = "workflows/config/smoke_slurm.yaml"
PROFILE = "workflows/profiles/slurm-local"
TASK = "reasoning"  # the smoke task that every variant runs on, the one-cell side variants included
# sft, sequence-level KD on teacher outputs, X-KD (a learned reward), mixed GKD (the teacher cache), on-policy
# GKD and its A/A control
METHODS = ["sft", "seqkd", "xkd_seq", "gkd_jsd0.5_lambda0.5", "gkd_rkl_on", "gkd_rkl_on_aa"]
WALL_CLOCK = {"train_seconds", "eval_seconds", "time_to_best_validation"}  # seconds: differ between any two runs
TIMINGS: dict[str, float] = {}
TIMEOUT = 1200  # seconds per run: a hang protection (the SLURM run took 6.6 min on an idle 2-core machine)


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the slurm tests install packages with apt and start SLURM's daemons: run them as root")
    started = time.monotonic()
    try:
        installed = ensure_packages()
    except ControllerError as error:
        pytest.fail(f"cannot install SLURM for the slurm tests: {error}", pytrace=False)
    TIMINGS["install"] = time.monotonic() - started
    print(f"installed: {installed or 'nothing (already present)'}")
    slurm = Controller(tmp_path_factory.mktemp("slurm"))
    started = time.monotonic()
    try:
        slurm.start()
    except ControllerError as error:
        slurm.stop()
        pytest.fail(f"the SLURM controller did not come up: {error}", pytrace=False)
    TIMINGS["controller start"] = time.monotonic() - started
    yield slurm
    slurm.stop()


def smoke_subset(work: Path) -> None:
    """The smoke study on one task and one data fraction, with its six built-in variants (every rule of the
    workflow but the external methods' runs) and the claims among them."""
    config = yaml.safe_load((work / "workflows/config/smoke.yaml").read_text())
    config["tasks"] = {TASK: config["tasks"][TASK]}
    config["fractions"] = [1.0]
    config["methods"] = [m for m in config["methods"] if m["name"] in METHODS]
    assert [m["name"] for m in config["methods"]] == METHODS, "smoke.yaml lost a variant this test runs"
    claims = config["report"]["claims"]
    config["report"]["claims"] = [c for c in claims if c["a"] in METHODS and c["b"] in METHODS]
    (work / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def start(work: Path, args: list[str]) -> tuple[subprocess.Popen, float]:
    log = open(work / "snakemake.out", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(SNAKEMAKE + args, cwd=work, env=OFFLINE, stdout=log, stderr=subprocess.STDOUT)
    return process, time.monotonic()


def finish(run: tuple[subprocess.Popen, float], work: Path, timeout: float, what: str, slurm: Controller) -> str:
    """Wait for a run; fail at once if a job pends for a reason that never clears (a request beyond the
    node), and after `timeout` seconds in any case (a hang protection, far above the expected times)."""
    process, started = run
    while process.poll() is None:
        stuck = slurm.stuck_jobs()
        if stuck or time.monotonic() > started + timeout:
            process.kill()
            process.wait()
            text = (work / "snakemake.out").read_text(errors="replace")
            why = f"jobs pend for good: {stuck}" if stuck else f"did not finish in {timeout:.0f} s"
            pytest.fail(f"{what} {why}\n{text[-5000:]}\n{slurm.diagnostics()}", pytrace=False)
        time.sleep(5)
    TIMINGS[what] = time.monotonic() - started
    print("seconds: " + ", ".join(f"{key} {value:.0f}" for key, value in TIMINGS.items()))
    text = (work / "snakemake.out").read_text(errors="replace")
    assert process.returncode == 0, f"{what} failed\n{text[-5000:]}\n{slurm.diagnostics()}"
    return text


def tables(work: Path) -> dict[str, pd.DataFrame]:
    name = yaml.safe_load((work / CONFIG).read_text())["name"]
    figures = work / "paper_figures" / name
    found = {path.name: pd.read_csv(path) for path in sorted(figures.glob("*.csv"))}
    return {key: frame.drop(columns=[c for c in frame.columns if c in WALL_CLOCK]) for key, frame in found.items()}


def test_smoke_study_through_slurm_equals_the_local_run(controller, tmp_path):
    """The smoke study restricted to the reasoning task and data fraction 1 (all six built-in variants, every
    rule of the workflow, the report; 15 jobs) runs once locally (`--cores 2`, the default profile) and once
    through the controller (workflows/profiles/slurm-local: each job an sbatch submission), each from a
    fresh copy of the workflow. The two runs go at the same time: a SLURM job spends most of its time
    starting Python (each job parses the workflow twice, in the batch script and in its `srun` step) and
    the queue sits idle between status checks, so the local run fills those gaps.

    Every job that ran locally was an sbatch submission in the SLURM run, and slurmctld logged each of
    those job ids as received and completed with exit status 0. Every table of the report (every CSV under
    paper_figures/<study>/) is equal, number for number, the wall-clock columns (train and evaluation
    seconds, time to best validation) aside; every model's weights and decoded outputs are the same bytes."""
    (tmp_path / "local").mkdir()
    (tmp_path / "slurm").mkdir()
    local, cluster = workflow_copy(tmp_path / "local"), workflow_copy(tmp_path / "slurm")
    for work in (local, cluster):
        smoke_subset(work)

    slurm_run = start(cluster, ["--workflow-profile", PROFILE, "--configfile", CONFIG])
    local_run = start(local, ["--cores", "2", "--configfile", CONFIG])
    try:
        local_log = finish(local_run, local, TIMEOUT, "local run", controller)
        slurm_log = finish(slurm_run, cluster, TIMEOUT, "SLURM run", controller)
    finally:
        for process, _ in (local_run, slurm_run):
            if process.poll() is None:
                process.kill()
                process.wait()

    # every job went through sbatch, and the controller ran each one to a clean exit
    local_jobs = [rule for rule in re.findall(r"^(?:local)?rule (\w+):$", local_log, flags=re.MULTILINE)
                  if rule != "all"]
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", slurm_log)
    assert len(local_jobs) == 15 and len(submitted) == len(local_jobs), (local_jobs, slurm_log[-3000:])
    log = controller.log("slurmctld")
    received = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+) ", log))
    completed = set(re.findall(r"_job_complete: JobId=(\d+) WEXITSTATUS 0", log))
    assert set(submitted) <= received and set(submitted) <= completed, log[-3000:]

    # the same tables, number for number
    expected, got = tables(local), tables(cluster)
    assert {"all_cells.csv", "main_table.csv", "claims.csv", "cost.csv"} <= set(expected)
    assert set(got) == set(expected)
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, check_exact=True, obj=name)
    distilled = expected["all_cells.csv"].query("role == 'distilled' and decoding == 'greedy'")
    assert len(distilled) == 6 and set(distilled.fraction) == {1.0}
    # and underneath them, every trained model (teacher, student initialisation, cells) and every decoded
    # output byte for byte
    files = sorted(path.relative_to(local) for pattern in ("model.safetensors", "outputs.jsonl")
                   for path in (local / "results").rglob(pattern))
    assert len(files) == 2 * (2 + 6), files
    differ = [str(name) for name in files if (local / name).read_bytes() != (cluster / name).read_bytes()]
    assert not differ, differ


def test_cluster_profile_requests_reach_sbatch(controller, tmp_path):
    """The users' cluster profile (workflows/profiles/slurm) with the paper study: a teacher job's requests
    from the config's `resources` (1 GPU, 8 CPUs, 64 GB, 2 days) reach the real sbatch as `--gpus=1
    --cpus-per-task=8 --mem 64000 -t 2880`, with no account (none given, none to guess here). This controller has
    no GPUs (`sbatch: error: Invalid generic resource (gres) specification`), so the job is refused at
    submission and nothing runs; the teacher's inputs are empty placeholders."""
    work = workflow_copy(tmp_path)
    for name in ("data/summarization/task.json", "tokenizer/summarization/tokenizer_config.json"):
        (work / "results/paper" / name).parent.mkdir(parents=True, exist_ok=True)
        (work / "results/paper" / name).touch()
    target = "results/paper/teacher/summarization/train_summary.json"
    out = subprocess.run(SNAKEMAKE + [target, "--workflow-profile", "workflows/profiles/slurm", "--configfile",
                                      "workflows/config/paper.yaml", "--default-resources", "slurm_partition=debug"],
                         cwd=work, env=OFFLINE, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "rule train_teacher:" in text, text[-3000:]
    call = re.search(r"sbatch call:\s*(sbatch [^\n]*)", text)
    assert call, text[-3000:]
    for request in ("--gpus=1", "--cpus-per-task=8", "--mem 64000", "-t 2880", "-p debug"):
        assert request in call.group(1), call.group(1)
    assert " -A " not in call.group(1)
    refused = re.search(r"SLURM sbatch failed\. The error message was '([^']*)'", text)
    assert refused and refused.group(1).startswith("sbatch: error"), text[-3000:]  # no GPUs configured here
    print(f"{call.group(1)}\n-> {refused.group(1)}")
