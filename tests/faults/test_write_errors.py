"""A full disk or a read-only results folder: a clear error naming the path, never a half-written table.

Every writer goes through `xkdbench.io.atomic_path` (temporary file beside the target, renamed into place
when complete), so a failed write leaves the target as it was; the error is a `WriteError` naming the
target (the CLI exits with status 2 and prints it).

Two ways to make a write fail. The default tests make the writer raise the OS error itself (monkeypatch):
they run anywhere, in milliseconds. Tests marked `faults` mount a real file system: a tmpfs of a few
kilobytes (a full disk) or a read-only bind mount. That needs root (mount); running as root, `chmod`
alone stops nothing, so a read-only mount is the only honest read-only folder. They skip where mounting
is not permitted.
"""
from __future__ import annotations

import errno
import filecmp
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_model
from xkdbench import io as xio
from xkdbench.errors import WriteError
from xkdbench.io import write_json, write_text


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if ".tmp" in p.name or ".old-" in p.name]


def test_a_full_disk_mid_write_leaves_the_previous_file_and_names_the_path(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"headline": 1.0})
    before = target.read_bytes()

    def half_then_full(self, text, encoding=None):  # as a write that runs out of space does
        with open(self, "w", encoding=encoding) as f:
            f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(WriteError, match=rf"cannot write {target}: no space left on the device \(ENOSPC\)") as e:
        write_json(target, {"headline": 2.0, "more": list(range(100))})
    assert e.value.errno == errno.ENOSPC and e.value.path == str(target)
    assert target.read_bytes() == before
    assert temporaries(tmp_path) == []


def test_a_read_only_folder_names_the_path(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(xio.tempfile, "mkdtemp", read_only)
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path / 'table.md'}: the file system is read-only"):
        write_text(tmp_path / "table.md", "| a |\n")
    assert not (tmp_path / "table.md").exists()


def test_a_writer_that_hides_the_os_error_is_diagnosed_from_the_file_system(tmp_path, tokenizer, monkeypatch):
    """safetensors raises SafetensorError and torch.save a RuntimeError on a full disk: the file system
    is asked why. A model directory saved earlier stays whole."""
    model = tiny_model(tokenizer, "llama")
    model.save(tmp_path / "model")
    before = (tmp_path / "model" / "model.safetensors").read_bytes()

    def failing(*args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error")

    monkeypatch.setattr(model.model, "save_pretrained", failing)
    monkeypatch.setattr(xio, "_filesystem_problem", lambda directory: OSError(errno.ENOSPC, "full"))
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path / 'model'}: no space left"):
        model.save(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before
    assert temporaries(tmp_path) == []


def test_other_errors_are_not_disguised(tmp_path, monkeypatch):
    monkeypatch.setattr(xio, "_filesystem_problem", lambda directory: None)
    with pytest.raises(ValueError, match="not a write problem"):
        with xio.atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("partial")
            raise ValueError("not a write problem")
    assert not (tmp_path / "x.txt").exists() and temporaries(tmp_path) == []
    with pytest.raises(PermissionError):  # a read elsewhere, refused: not reported as this write's failure
        with xio.atomic_path(tmp_path / "y.txt"):
            raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/else/input.json")


def test_a_report_that_cannot_write_leaves_every_table_whole(tmp_path, monkeypatch):
    """The third table of a report fails to write: the error names it, the two before it are complete,
    it keeps its previous content, and nothing half-written is left."""
    from tests.reporting.conftest import make_config, write_results
    from xkdbench.reporting import build_report

    write_results(tmp_path / "results")
    config = make_config()
    out = tmp_path / "out"
    build_report(config, tmp_path / "results", out)
    previous = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    writes = []
    real = pd.DataFrame.to_csv

    def to_csv(self, path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 2:  # all_cells.csv, then main_table.csv fails half-way
            real(self.head(1), path, *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    (out / "all_cells.csv").write_text("stale\n")
    with pytest.raises(WriteError, match=rf"cannot write {out / 'main_table.csv'}: no space left"):
        build_report(config, tmp_path / "results", out)
    assert (out / "all_cells.csv").read_bytes() == previous["all_cells.csv"]  # rewritten whole before the failure
    assert (out / "main_table.csv").read_bytes() == previous["main_table.csv"]  # unchanged
    assert temporaries(out) == []


# -- real file systems (root) ---------------------------------------------------------------------------------
@contextmanager
def mounted(target: Path, *options: str, source: str = "tmpfs", kind: str | None = "tmpfs"):
    target.mkdir(parents=True, exist_ok=True)
    command = ["mount", *(["-t", kind] if kind else []), *options, source, str(target)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(command)}: {done.stderr.strip()}); needs root")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@contextmanager
def read_only(directory: Path):
    """`directory` made read-only in place: a bind mount of itself, remounted read-only."""
    with mounted(directory, "--bind", source=str(directory), kind=None):
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield directory


def _report_inputs(tmp_path):
    from tests.reporting.conftest import make_config, write_results

    write_results(tmp_path / "results")
    return make_config(), tmp_path / "results"


@pytest.mark.faults
def test_a_report_into_a_read_only_folder_exits_2_naming_the_file(tmp_path, capsys):
    from tests.faults.conftest import synthetic_config_file
    from xkdbench.cli import main
    from xkdbench.reporting import build_report

    config, results = _report_inputs(tmp_path)
    out = tmp_path / "out"
    build_report(config, results, out)
    kept = tmp_path / "kept"
    subprocess.run(["cp", "-a", str(out), str(kept)], check=True)
    path = synthetic_config_file(tmp_path / "config.yaml")
    with read_only(out):
        code = main(["report", "--config", str(path), "--results", str(results), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"xkdbench report: error: cannot write {out / 'all_cells.csv'}: the file system is read-only (EROFS)" in err
    comparison = filecmp.dircmp(out, kept)
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only


@pytest.mark.faults
def test_a_report_onto_a_full_disk_stops_at_the_first_file_that_does_not_fit(tmp_path):
    """A tmpfs of 64 KiB holds the tables but not the figures: the report stops naming the figure it could
    not write, and every table it did write is whole (equal to the same table written elsewhere)."""
    from xkdbench.reporting import build_report

    config, results = _report_inputs(tmp_path)
    build_report(config, results, tmp_path / "whole")
    with mounted(tmp_path / "disk", "-o", "size=64k") as disk:
        with pytest.raises(WriteError, match=rf"cannot write {disk / 'figures'}/\w+\.(png|pdf): no space left") as e:
            build_report(config, results, disk)
        written = [p for p in disk.rglob("*") if p.is_file()]
        assert written and temporaries(disk) == []
        for path in written:
            assert path.read_bytes() == (tmp_path / "whole" / path.relative_to(disk)).read_bytes(), path
        assert not Path(e.value.path).exists()


@pytest.mark.faults
def test_a_model_saved_onto_a_full_disk_is_refused_and_the_previous_one_kept(tmp_path, tokenizer):
    """safetensors reports a full disk as SafetensorError; the file system says what happened."""
    from xkdbench.models import load_model

    with mounted(tmp_path / "disk", "-o", "size=160k") as disk:
        small = tiny_model(tokenizer, "llama", width=16)
        small.save(disk / "model")
        before = (disk / "model" / "model.safetensors").read_bytes()
        with pytest.raises(WriteError, match=rf"cannot write {disk / 'model'}: no space left on the device"):
            tiny_model(tokenizer, "llama", width=64).save(disk / "model")
        assert (disk / "model" / "model.safetensors").read_bytes() == before
        assert temporaries(disk) == []
        load_model(disk / "model")  # still whole: its manifest verifies
