"""The fault-injection study (faults.yaml) run once uninterrupted, and what its runs are compared by."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.workflow.test_workflow import OFFLINE, SNAKEMAKE, workflow_copy

CONFIG = Path(__file__).with_name("faults.yaml")
NAME = "faults"
# wall-clock columns of the report's tables (xkdbench.reporting: collect.COST_COLUMNS' seconds, eval
# seconds, and the training seconds at the best validation step); everything else must match exactly
TIMING_COLUMNS = {"train_seconds", "eval_seconds", "time_to_best_validation"}
TIMING_HEADERS = {"train seconds", "s to best val."}  # the same columns in cost.md
# figures drawn from numbers alone (the cost and validation-curve figures plot seconds)
COMPARED_FIGURES = ("data_efficiency.png", "performance_diversity.png", "gkd_grid.png")


def study_copy(tmp_path: Path) -> Path:
    """A fresh copy of the workflow with faults.yaml among its configs."""
    work = workflow_copy(tmp_path)
    shutil.copy(CONFIG, work / "workflows" / "config" / CONFIG.name)
    return work


def snakemake_command(*args: str) -> list[str]:
    return SNAKEMAKE + ["--cores", "2", "--configfile", f"workflows/config/{CONFIG.name}", *args]


def run_snakemake(work: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(*args), cwd=work, env=OFFLINE, capture_output=True, text=True,
                          timeout=timeout)


def _masked_csv(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    timing = {i for i, name in enumerate(rows[0]) if name in TIMING_COLUMNS} if rows else set()
    return [["<seconds>" if i in timing else cell for i, cell in enumerate(row)] for row in rows]


def _masked_markdown(text: str) -> list[str]:
    lines, timing = text.splitlines(), set()
    masked = []
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            timing = set()  # a table ends
        elif i + 1 < len(lines) and lines[i + 1].startswith("|---"):  # a header row
            timing = {j for j, c in enumerate(line.split("|")) if c.strip() in TIMING_HEADERS}
        elif timing and not line.startswith("|---"):
            line = "|".join("<seconds>" if j in timing else c for j, c in enumerate(line.split("|")))
        masked.append(line)
    return masked


def tables(work: Path) -> dict[str, object]:
    """Every table of the report (and the figures drawn from numbers alone), its wall-clock columns masked."""
    figures = work / "paper_figures" / NAME
    found: dict[str, object] = {}
    for path in sorted(figures.iterdir()):
        if path.suffix == ".csv":
            found[path.name] = _masked_csv(path.read_text())
        elif path.suffix == ".md":
            found[path.name] = _masked_markdown(path.read_text())
        elif path.is_file():
            found[path.name] = path.read_bytes()
    for name in COMPARED_FIGURES:
        if (figures / "figures" / name).is_file():
            found[f"figures/{name}"] = (figures / "figures" / name).read_bytes()
    return found


def artefacts(work: Path) -> dict[str, object]:
    """What the study computed, beyond the tables: each model's, tokenizer's and teacher cache's file
    checksums (weights included), each evaluation's per-input outputs, the teacher outputs and the data."""
    results = work / "results" / NAME
    found: dict[str, object] = {}
    for manifest in sorted(results.rglob("xkdbench_files.json")):
        if any(part.startswith(".") for part in manifest.relative_to(results).parts):
            continue  # an interrupted write's leftover
        files = json.loads(manifest.read_text())["files"]
        files.pop("manifest.json", None)  # the teacher cache's own manifest records its build seconds and host
        found[manifest.parent.relative_to(results).as_posix()] = files
    for pattern in ("**/eval/outputs.jsonl", "teacher_outputs/*.jsonl", "data/**/*.jsonl"):
        for path in sorted(results.glob(pattern)):
            if not any(part.startswith(".") for part in path.relative_to(results).parts):
                found[path.relative_to(results).as_posix()] = path.read_bytes()
    return found


def synthetic_config_file(path: Path) -> Path:
    """The synthetic report tree's config (tests/reporting/conftest.py) as a YAML file, for the CLI."""
    import yaml

    from tests.reporting import conftest as synthetic

    path.write_text(yaml.safe_dump({"name": "synthetic", "tasks": {t: {} for t in synthetic.TASKS},
                                    "methods": synthetic.METHODS, "fractions": synthetic.FRACTIONS,
                                    "seeds": synthetic.SEEDS,
                                    "evaluation": {"sampling_temperatures": synthetic.TEMPERATURES}}))
    return path


@pytest.fixture(scope="session")
def reference_study(tmp_path_factory):
    """(work directory, seconds) of one uninterrupted run of the fault-injection study. Tests copy it."""
    work = study_copy(tmp_path_factory.mktemp("reference"))
    started = time.perf_counter()
    out = run_snakemake(work)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    return work, time.perf_counter() - started


def leftovers(results: Path) -> list[str]:
    """Temporary files and directories of writes a kill interrupted (`.NAME.tmp-*`, `.NAME.old-*`):
    hidden, never read by any job, safe to delete."""
    return sorted(p.relative_to(results).as_posix() for p in results.rglob(".*")
                  if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".tmp"))


def assert_nothing_half_written(results: Path) -> dict[str, int]:
    """No file under `results` looks complete but is not: every JSON and JSON-lines file parses (line by
    line), every directory with a manifest of sizes and checksums matches it, every model and tokenizer
    loads, the teacher cache's arrays match its manifest, each evaluation's outputs number the inputs its
    metrics count, every finished training run has its verified model, and no checkpoint is left beside a
    finished run. Interrupted writes' hidden temporaries (`leftovers`) are skipped. Returns counts."""
    from xkdbench.integrity import MANIFEST, file_sha256, verify_files
    from xkdbench.models import load_model
    from xkdbench.reporting.collect import check_model_files

    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(results).parts)  # noqa: E731
    counts = {"json": 0, "jsonl lines": 0, "verified directories": 0, "models loaded": 0, "runs": 0}
    for path in sorted(p for p in results.rglob("*") if p.is_file() and not hidden(p)):
        if path.suffix == ".json":
            json.loads(path.read_text())  # raises on a truncated file
            counts["json"] += 1
        elif path.suffix == ".jsonl":
            for number, line in enumerate(path.read_text().splitlines(), 1):
                assert line.strip(), f"{path}:{number}: an empty line"
                json.loads(line)
                counts["jsonl lines"] += 1
    for manifest in sorted(p for p in results.rglob(MANIFEST) if not hidden(p)):
        assert verify_files(manifest.parent), manifest
        counts["verified directories"] += 1
    for config in sorted(p for p in results.rglob("config.json") if not hidden(p)):
        if (config.parent / "model.safetensors").is_file():
            assert (config.parent / MANIFEST).is_file(), f"{config.parent}: a model without its manifest"
            load_model(config.parent)
            counts["models loaded"] += 1
    for cache_manifest in sorted(p for p in results.glob("teacher_cache/*/manifest.json")):
        for name, info in json.loads(cache_manifest.read_text())["files"].items():
            path = cache_manifest.parent / name
            assert path.stat().st_size == info["bytes"] and file_sha256(path) == info["sha256"], path
    for summary in sorted(p for p in results.rglob("train_summary.json") if not hidden(p)):
        run = summary.parent
        if "status" in json.loads(summary.read_text()):  # a diverged cell: its outcome, no model
            continue
        assert verify_files(run / "model"), f"{run}: train_summary.json without a verified model"
        assert not (run / "checkpoint").exists(), f"{run}: a checkpoint left beside the finished run"
        if (run / "eval" / "metrics.json").is_file():
            check_model_files(run)
        counts["runs"] += 1
    return counts
