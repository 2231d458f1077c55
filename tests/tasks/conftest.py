"""Shared helpers for the task tests: small sizes, the hf fixtures, an offline datasets cache."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf"
SMALL = {"train": 60, "warmup": 10, "validation": 10, "test": 10}
TASKS = ("summarization", "translation", "reasoning")
HF_PATHS = {"summarization": FIXTURES / "xsum", "translation": FIXTURES / "wmt14", "reasoning": FIXTURES / "gsm8k"}


def sha256_of_dir(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(path).iterdir())}


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    """No network and a private datasets cache, so the hf source reads only the local fixtures."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache", raising=False)
    return tmp_path
