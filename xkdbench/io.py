"""Atomic file writes and provenance.

Every file a run produces is written under a temporary name in the same directory and renamed into
place, so an interrupted run never leaves a half-written file that looks complete. A directory written
so carries a manifest of its files' sizes and sha256 (`xkdbench.integrity`), checked when it is read. A
write that fails for want of space or permission (disk full, read-only folder) raises `WriteError`
naming the path, and leaves the previous version, if any, in place.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from xkdbench.errors import ConfigError, IntegrityError, WriteError
from xkdbench.integrity import rebuild_hint, record_files

# failures of a write for want of space or permission: reported as WriteError naming the path
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large for the file system", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


def _write_error(path: Path, error: OSError) -> WriteError:
    reason = WRITE_ERRNOS[error.errno]
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free space there (or write the results elsewhere) and rerun"
    else:
        fix = "make the folder writable (or write the results elsewhere) and rerun"
    return WriteError(f"cannot write {path}: {reason} ({errno.errorcode[error.errno]}); nothing was written in its "
                      f"place and its previous version, if any, is unchanged; {fix}", path=str(path), errno=error.errno)


def _is_write_failure(error: OSError, places: tuple[Path, ...]) -> bool:
    if error.errno not in WRITE_ERRNOS:
        return False
    if error.errno in (errno.EACCES, errno.EPERM) and error.filename is not None:  # could be a read elsewhere
        return any(str(error.filename).startswith(str(place)) for place in places)
    return True


def _filesystem_problem(directory: Path) -> OSError | None:
    """Why writing in `directory` fails when the writer's error does not say (safetensors raises
    SafetensorError, torch.save a RuntimeError): its file system is read-only, or full (under 1 MiB free)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return OSError(errno.EROFS, os.strerror(errno.EROFS))
    free = (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail) * stat.f_frsize
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if free < (1 << 20) else None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path` (file or directory).

    A directory gets its manifest of file sizes and checksums (`integrity.record_files`) just before the
    rename. A failure to write for want of space or permission raises WriteError naming `path`; the
    temporary files are removed and `path` keeps its previous content."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as e:
        if _is_write_failure(e, (path.parent,)):
            raise _write_error(path, e) from e
        raise
    target = tmp / path.name
    try:
        yield target
        if target.is_dir() and not target.is_symlink():
            record_files(target)  # last: the manifest covers every file written above
        if path.is_dir() and not path.is_symlink():
            # A directory cannot be replaced in one rename: move the old one aside first.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    except OSError as e:
        if _is_write_failure(e, (path.parent,)):
            raise _write_error(path, e) from e
        raise
    except WriteError as e:  # from a nested atomic write: name the path the caller asked for
        raise _write_error(path, OSError(e.errno, os.strerror(e.errno))) from e
    except ConfigError:
        raise
    except Exception as e:  # a writer that wraps the OS error: ask the file system
        problem = _filesystem_problem(path.parent)
        if problem is not None:
            raise _write_error(path, problem) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _damaged(path: str | os.PathLike, what: str) -> IntegrityError:
    return IntegrityError(f"{path}: {what}; the file is damaged or was cut short; {rebuild_hint(path)}")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; one that does not parse raises IntegrityError naming it and how to rebuild it."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _damaged(path, f"not JSON ({e.msg} at line {e.lineno})") from e


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON record per line; a line that does not parse (a file cut mid-record) raises IntegrityError.
    A cut that leaves the last line parsing can only fall just before its line end: nothing is lost."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _damaged(path, f"line {number} is not JSON ({e.msg})") from e
    return records


def git_revision() -> str:
    """The git revision of the package checkout, or 'unknown' outside a repository."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        rev = out.stdout.strip()
        if out.returncode != 0 or not rev:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    names = ["xkdbench", "torch", "transformers", "datasets", "tokenizers", "sacrebleu", "rouge-score",
             "lm-eval", "pandas", "snakemake"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance() -> dict[str, Any]:
    """What made a result: package versions, git revision, host."""
    return {"versions": package_versions(), "git_revision": git_revision(), "host": platform.node()}
