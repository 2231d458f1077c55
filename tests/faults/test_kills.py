"""SIGKILL at ten seeded moments of a study, a rerun after each: the same tables, nothing half-written.

The study is faults.yaml: the smoke study cut to one task, one fraction and three variants (every kind
of job), because eleven runs of the full smoke grid take far longer than this test's budget of minutes
on 2 cores; its training checkpoints every few steps, so a killed training job resumes from a checkpoint.

The victims follow a fixed plan through the study's DAG (`PLAN`): the snakemake process itself, a
training job (train-teacher or init-student), a teacher job (teacher outputs or cache), an evaluation
(`xkdbench evaluate`, or a distill job past its training), snakemake again, distill jobs while they
train, snakemake, the report. A planned kind with no job left to run (the runs so far finished them
all) becomes a snakemake kill, and the record says so; so does a job kill that would miss (the job ended
before its drawn moment: a missed kill would let the run finish the study). Each victim is picked by its command line among
the processes below snakemake and killed at a moment drawn from a seeded generator (`WINDOWS`): so many
seconds after the run's first job started (snakemake), after a job started (teacher outputs,
evaluate, report), or after it began the phase aimed at (training: its run_info.json written; a cell's
evaluation: its train_summary.json written; the teacher cache: its temporary directory made). What the
killed job had written by then (checkpoint, model, summary, ...) is recorded with the kill.

After each kill the study is rerun as a user would: `snakemake` again (the default profile's
rerun-incomplete redoes half-finished jobs), after `snakemake --unlock` when snakemake itself was killed
(a killed snakemake leaves its lock); its jobs then in flight are orphaned and run to their end first, and
are redone, Snakemake having marked them incomplete. The copy's profile drops keep-going, so a failed job
stops the run's scheduling as a crash would: with it, the run would finish every job independent of the
killed one, and a one-task study would be done after two or three kills.

At the end, the tables equal an uninterrupted run's (`reference_study`) byte for byte, the wall-clock
columns aside; so do the models' weights (sha256), every evaluation's outputs, the teacher outputs and
cache; every file parses or matches its recorded checksum (`assert_nothing_half_written`); and Snakemake
has nothing left to do. The record (kills, phases hit, seconds) is printed (`pytest -s`) and written to
kills.json in the test's directory.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.conftest import (
    NAME,
    OFFLINE,
    artefacts,
    assert_nothing_half_written,
    leftovers,
    run_snakemake,
    snakemake_command,
    study_copy,
    tables,
)

SEED = 13
PLAN = ["snakemake", "train", "teacher", "evaluation", "snakemake", "distill", "evaluation", "distill", "snakemake",
        "report"]
# seconds: snakemake is killed so long after its first job started; a job so long after it became a target
WINDOWS = {"snakemake": (0.0, 12.0), "train": (0.0, 0.6), "teacher": (0.0, 0.4), "distill": (0.0, 0.4),
           "evaluation": (0.0, 1.2), "report": (1.0, 4.0),
           "evaluate": (3.0, 7.0), "teacher-outputs": (2.0, 6.0)}  # these two: from the job's start
KINDS = {"train-teacher": "train", "init-student": "train", "distill": "distill", "teacher-outputs": "teacher",
            "teacher-cache": "teacher", "evaluate": "evaluation", "report": "report"}


def job(process: psutil.Process) -> tuple[str, str, Path | None] | None:
    """(kind, subcommand, --out) of an `xkdbench` process (not the shell that runs it); None otherwise.
    A distill job is of kind "distill" while training and "evaluation" once its train_summary.json is written."""
    try:
        if process.name() in ("bash", "sh", "dash"):
            return None
        words, cwd = process.cmdline(), Path(process.cwd())
    except psutil.Error:
        return None
    for i, word in enumerate(words[:-1]):
        if os.path.basename(word) == "xkdbench" or (word == "-m" and words[i + 1] == "xkdbench"):
            rest = words[i + 1:] if os.path.basename(word) == "xkdbench" else words[i + 2:]
            if not rest or rest[0] not in KINDS:
                return None
            out = Path(rest[rest.index("--out") + 1]) if "--out" in rest else None
            kind = KINDS[rest[0]]
            if rest[0] == "distill" and out is not None and (cwd / out / "train_summary.json").exists():
                kind = "evaluation"
            return kind, rest[0], out
    return None


def target_since(process: psutil.Process, kind: str, subcommand: str, out: Path | None, work: Path) -> float | None:
    """Since when (time.time()) the process is a target, or None if not yet: a training job once it wrote
    its run_info.json (training under way), a distill job's evaluation once its train_summary.json exists,
    the teacher cache once its build's temporary directory exists, any other job from its start."""
    marker = None
    if subcommand in ("train-teacher", "init-student", "distill") and out is not None:
        marker = work / out / ("train_summary.json" if kind == "evaluation" else "run_info.json")
    elif subcommand == "teacher-cache" and out is not None:
        marker = next((work / out).parent.glob(f".{out.name}.tmp-*"), None)
        if marker is None:
            return None
    if marker is None:
        return process.create_time()
    try:
        since = marker.stat().st_mtime
    except OSError:
        return None
    return since if since >= process.create_time() - 1 else None  # not one an earlier, killed job left


def pending(kind: str, work: Path, reference: Path) -> bool:
    """Whether the study in `work` still has a job of this kind to run: an output the uninterrupted run has
    and this one lacks. (The report is pending until the end.)"""
    patterns = {"train": ["teacher/*/train_summary.json", "student_init/*/*/train_summary.json"],
                "teacher": ["teacher_outputs/*.jsonl", "teacher_cache/*/manifest.json"],
                "evaluation": ["**/eval/metrics.json"], "distill": ["cells/**/train_summary.json"],
                "report": ["report.done"], "snakemake": ["report.done"]}[kind]
    results = reference / "results" / NAME
    return any(not (work / "results" / NAME / path.relative_to(results)).exists()
               for pattern in patterns for path in results.glob(pattern))


def phase(work: Path, out: Path | None) -> str:
    """Which files the killed job had written: what the kill interrupted."""
    if out is None:
        return "n/a"
    run = work / out
    present = [name for name in ("run_info.json", "checkpoint", "model", "train_summary.json", "eval/outputs.jsonl",
                                 "eval/metrics.json") if (run / name).exists()]
    if not run.is_dir():
        present = [p.name for p in run.parent.glob(f".{run.name}.tmp-*")] + (["done"] if run.exists() else [])
    return ", ".join(present) or "nothing yet"


def kill_snakemake(snakemake: subprocess.Popen, root: psutil.Process, started: float) -> dict:
    """SIGKILL snakemake itself; the jobs it had in flight run to their end first."""
    orphans = root.children(recursive=True)
    jobs = [j for j in (job(p) for p in orphans) if j]
    os.kill(snakemake.pid, signal.SIGKILL)
    snakemake.wait()
    psutil.wait_procs(orphans, timeout=600)
    return {"victim": "snakemake", "kind": "snakemake", "after_s": round(time.time() - started, 2),
            "jobs_in_flight": [f"{sub} {out}" for _, sub, out in jobs]}


def missed_kill(snakemake: subprocess.Popen, root: psutil.Process, started: float, target: tuple) -> dict:
    """The planned job ended before its drawn moment (a fast machine's short jobs do): a kill that missed
    would let this run finish the study, so snakemake dies instead, and the record says which job ended."""
    moment, subcommand, out, since = target
    record = kill_snakemake(snakemake, root, started)
    record["missed"] = f"xkdbench {subcommand} {out} ended before {moment - since:.2f} s after its target"
    return record


def hunt(work: Path, snakemake: subprocess.Popen, kind: str, rng: random.Random, started: float,
         kills_after: int = 0) -> dict | None:
    """Kill the planned victim of this run at its drawn moment; None if the run ended first. A job's
    moment is drawn when it becomes a target and kept: it is killed then, whatever phase it has reached.
    A snakemake kill with `kills_after` more to come happens at the latest when the report job starts: on
    a fast machine the drawn moment can fall after the study's last job, and a finished study leaves
    nothing for the kills after it (the report's marker is touched by snakemake, so a report orphaned by
    the kill leaves the report pending)."""
    root = psutil.Process(snakemake.pid)
    if kind == "snakemake":
        moment = None
        while snakemake.poll() is None:
            jobs = [found for found in (job(p) for p in root.children(recursive=True)) if found]
            if moment is None and jobs:
                moment = time.time() + rng.uniform(*WINDOWS["snakemake"])  # from its first job's start
            at_the_end = kills_after > 0 and any(subcommand == "report" for _, subcommand, _ in jobs)
            if moment is not None and (time.time() >= moment or at_the_end):
                early = time.time() < moment
                record = kill_snakemake(snakemake, root, started)
                if early:
                    record["before_drawn_moment"] = "the report job started first"
                return record
            time.sleep(0.02)
        return None
    moments: dict[int, tuple[float, str, Path | None, float]] = {}  # pid -> (moment, subcommand, out, since)
    while snakemake.poll() is None:
        try:
            processes = root.children(recursive=True)
        except psutil.Error:
            break
        alive = {process.pid for process in processes}
        gone = [pid for pid, (moment, *_rest) in moments.items() if pid not in alive and time.time() < moment]
        if gone and snakemake.poll() is None:  # a job ended before its moment: see `finished` below
            return missed_kill(snakemake, root, started, moments[gone[0]])
        for process in processes:
            if process.pid not in moments:
                found = job(process)
                if not found or found[0] != kind:
                    continue
                _, subcommand, out = found
                since = target_since(process, kind, subcommand, out, work)
                if since is None:
                    continue
                window = WINDOWS.get(subcommand, WINDOWS[kind])
                moments[process.pid] = (since + rng.uniform(*window), subcommand, out, since)
            moment, subcommand, out, since = moments[process.pid]
            if time.time() >= moment:
                try:
                    finished = process.status() == psutil.STATUS_ZOMBIE
                    if not finished:
                        process.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    finished = True
                if finished:  # e.g. a teacher cache built in 0.2 s, before its drawn moment
                    return missed_kill(snakemake, root, started, moments[process.pid])
                return {"victim": f"xkdbench {subcommand}", "kind": kind, "out": str(out),
                        "after_s": round(time.time() - started, 2), "after_target_s": round(time.time() - since, 2),
                        "job_files_at_kill": phase(work, out)}
        time.sleep(0.02)
    return None


@pytest.mark.faults
def test_ten_kills_leave_the_same_study(tmp_path, reference_study):
    reference, reference_seconds = reference_study
    work = study_copy(tmp_path)
    profile = work / "workflows" / "profiles" / "default" / "profile.yaml"
    text = profile.read_text()
    assert "rerun-incomplete: true" in text and "keep-going: true" in text
    profile.write_text(text.replace("keep-going: true\n", ""))

    rng = random.Random(SEED)
    kills, runs, began = [], 0, time.perf_counter()
    while len(kills) < len(PLAN):
        kind = planned = PLAN[len(kills)]
        if not pending(kind, work, reference):  # the runs so far got past every job of this kind
            kind = "snakemake"
        with open(tmp_path / f"run{runs}.log", "w") as log:
            started = time.time()
            snakemake = subprocess.Popen(snakemake_command(), cwd=work, env=OFFLINE, stdout=log,
                                         stderr=subprocess.STDOUT)
            runs += 1
            try:
                killed = hunt(work, snakemake, kind, rng, started, kills_after=len(PLAN) - len(kills) - 1)
                code = snakemake.wait(timeout=900)
            finally:
                if snakemake.poll() is None:
                    snakemake.kill()
        if killed is None:
            pytest.fail(f"run {runs} ended (exit status {code}) before kill {len(kills) + 1} ({kind}); kills so far: "
                        f"{kills}\n" + (tmp_path / f"run{runs - 1}.log").read_text()[-5000:])
        killed["kill"], killed["run_exit_status"] = len(kills) + 1, code
        if kind != planned:
            killed["planned"] = f"{planned} (no such job left)"
        kills.append(killed)
        if killed["victim"] == "snakemake":
            unlocked = run_snakemake(work, "--unlock")
            assert unlocked.returncode == 0, unlocked.stderr[-3000:]

    final = run_snakemake(work)
    runs += 1
    assert final.returncode == 0, final.stdout[-5000:] + final.stderr[-5000:]
    seconds = time.perf_counter() - began

    results = work / "results" / NAME
    counts = assert_nothing_half_written(results)
    expected, got = tables(reference), tables(work)
    assert sorted(got) == sorted(expected)
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, f"tables differ from the uninterrupted run's: {differing}"
    expected_artefacts, got_artefacts = artefacts(reference), artefacts(work)
    assert sorted(got_artefacts) == sorted(expected_artefacts)
    differing = [name for name in expected_artefacts if got_artefacts[name] != expected_artefacts[name]]
    assert not differing, f"results differ from the uninterrupted run's: {differing}"
    dry = run_snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]

    kinds = {k.get("kind", k["victim"]) for k in kills}
    # Which job kinds a run can still hit depends on the machine's speed: the jobs in flight when snakemake
    # is killed run to their end, so on a fast machine every training job may be done before its planned
    # kill (the record then says "no such job left"). The snakemake and report kills always happen.
    assert {"snakemake", "report"} <= kinds, kills
    record = {"kills_survived": len(kills), "runs": runs, "identical_tables": len(expected),
              "identical_artefacts": len(expected_artefacts), "checked": counts,
              "leftover_temporaries": leftovers(results), "seconds_killed_study": round(seconds, 1),
              "seconds_reference_study": round(reference_seconds, 1), "kills": kills}
    (tmp_path / "kills.json").write_text(json.dumps(record, indent=2))
    print("\nfault injection:", json.dumps(record, indent=2))
