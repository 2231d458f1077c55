"""What a run wrote is what a later job reads: sizes and sha256 recorded with every directory it writes.

A directory written through `xkdbench.io.atomic_path` (a model, a tokenizer, a training checkpoint, a
teacher cache) carries `xkdbench_files.json`: the byte size and sha256 of each file in it, written last,
inside the temporary directory, before the directory is renamed into place. Readers verify it:

- `load_model` and `load_tokenizer` refuse a directory whose files differ from their manifest, with an
  `IntegrityError` naming the file and the command that rebuilds it, before any work starts. Snakemake
  cannot notice such damage: a file truncated or overwritten after its job finished still exists and is
  no older than before, so the job that reads it is the first to know.
- `usable_checkpoint` says whether a training checkpoint may be resumed from; a damaged one is deleted
  and the run starts over (the same numbers: training is seeded).

A directory without a manifest (a Hugging Face checkpoint, a model saved by an older version) is read
unverified. Single files a job writes last (train_summary.json, eval/metrics.json) are checked where they
are read (`xkdbench.reporting.collect`): they must parse, and the per-input outputs must number what the
metrics record.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from xkdbench.errors import IntegrityError

MANIFEST = "xkdbench_files.json"
FORMAT = 1
RUN_INFO = "run_info.json"
# xkdbench command -> (the Snakemake rule that runs it, its output file in the job's directory)
RULES = {"train-teacher": ("train_teacher", "train_summary.json"), "init-student": ("init_student", "train_summary.json"),
         "distill": ("distill", "train_summary.json"), "evaluate": ("evaluate_teacher or evaluate_student_init",
                                                                    "metrics.json")}
# the order of a command line's options (`xkdbench <command> --help`)
ORDER = ("config", "task", "method", "fraction", "seed", "data", "tokenizer", "teacher", "student", "teacher_outputs",
         "teacher_cache", "checkpoint", "out", "threads", "evaluate")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_files(directory: str | os.PathLike) -> dict:
    """Write directory/xkdbench_files.json: {"format", "files": {relative path: {"bytes", "sha256"}}} of
    every file below `directory` (the manifest itself aside). Called by `atomic_path` on the temporary
    directory, after everything else is written and before the rename."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p != directory / MANIFEST):
        files[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format": FORMAT, "files": files}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def verify_files(directory: str | os.PathLike, *, rebuild: str | None = None) -> bool:
    """Check every file the directory's manifest lists: present, of the recorded size, of the recorded
    sha256. True when it holds, False when there is no manifest (nothing to check); otherwise raises
    IntegrityError naming the first damaged file and how to rebuild it (`rebuild`, or `rebuild_hint`)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return False
    how = rebuild or rebuild_hint(directory)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = {name: (int(info["bytes"]), str(info["sha256"])) for name, info in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(f"{manifest_path} is damaged (not the manifest of sizes and checksums written with "
                             f"{directory}); {how}") from None
    for name, (size, sha256) in files.items():
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing (its directory's {MANIFEST} lists it); {how}")
        actual = path.stat().st_size
        if actual != size:
            raise IntegrityError(f"{path} has {actual} bytes, {MANIFEST} recorded {size} when it was written "
                                 f"(truncated or overwritten since); {how}")
        if file_sha256(path) != sha256:
            raise IntegrityError(f"{path} is corrupted (its sha256 differs from the one {MANIFEST} recorded when "
                                 f"it was written); {how}")
    return True


def usable_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether a training checkpoint directory may be resumed from. Absent: False. Damaged (a file
    differs from its manifest): reported on stderr, deleted, False (the run starts over; its numbers are
    the same, training being seeded). Whole, or written without a manifest: True."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    try:
        verify_files(directory, rebuild="deleted it; training starts over from step 0")
    except IntegrityError as e:
        print(f"xkdbench: checkpoint not resumed: {e}", file=sys.stderr)
        shutil.rmtree(directory, ignore_errors=True)
        return False
    return True


def command_line(run_info: dict) -> str | None:
    """The `xkdbench` command line recorded in a run_info.json (None if it records none)."""
    command, arguments = run_info.get("command"), run_info.get("arguments")
    if command not in RULES or not isinstance(arguments, dict):
        return None
    words = ["xkdbench", command]
    rank = {key: i for i, key in enumerate(ORDER)}  # run_info.json stores them sorted by name
    for key, value in sorted(arguments.items(), key=lambda item: rank.get(item[0], len(ORDER))):
        if key in ("func", "command", "with_samples") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def rebuild_hint(path: str | os.PathLike) -> str:
    """How to rebuild a damaged file or directory: Snakemake forced to redo the job that wrote it (and so
    every job after it), or that job's own command from its run_info.json. A cell's evaluation is part of
    its distill job, so a cell's eval/ files name the distill job.

    Forced, not deleted: Snakemake does not rerun a job whose outputs exist because one of its inputs is
    missing (it takes a missing input for a deleted intermediate file), so deleting a teacher under a
    finished study would leave its report looking up to date."""
    path = Path(path)
    found = []
    for job_dir in (path, *list(path.parents)[:3]):
        info_path = job_dir / RUN_INFO
        if info_path.is_file():
            try:
                command = command_line(json.loads(info_path.read_text(encoding="utf-8")))
            except (ValueError, OSError):
                command = None
            if command:
                found.append((job_dir, command))
    if found:
        job_dir, command = next((f for f in found if f[1].split()[1] == "distill"), found[0])
        rule, output = RULES[command.split()[1]]
        return (f"rebuild it: rerun snakemake with `--forcerun {job_dir / output}` (rule {rule}; it redoes that job "
                f"and every job after it), or run `{command}`")
    if (path / "tokenizer_config.json").is_file() and not (path / "config.json").is_file():
        return (f"rebuild it: rerun snakemake with `--forcerun {path / 'tokenizer_config.json'}` (rule "
                "train_tokenizer; it redoes that job and every job after it)")
    return f"rebuild it: rerun snakemake with `--forcerun` on the output of the job that wrote {path}"
