"""The mutation-testing lists (benchmarks/mutation_scores.py): well formed, and an entry whose mutant
changed (mutmut renumbers a changed function's mutants) is not taken for the mutant it once named."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LISTS = ["tests/mutation_equivalent.yaml", "tests/mutation_out_of_reach.yaml"]


def load_script():
    spec = importlib.util.spec_from_file_location("mutation_scores", ROOT / "benchmarks" / "mutation_scores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_entry_names_its_mutant_and_a_reason_and_sits_in_one_list():
    entries = [yaml.safe_load((ROOT / path).read_text()) for path in LISTS]
    for listed in entries:
        for name, entry in listed.items():
            assert name.startswith("xkdbench.") and "__mutmut_" in name, name
            assert set(entry) == {"mutant", "why"}, name
            assert entry["mutant"].strip() and entry["why"].strip(), name
    assert not set(entries[0]) & set(entries[1])


def test_a_stale_entry_counts_as_a_survivor(monkeypatch, tmp_path):
    script = load_script()
    shown = {"m_1": "x = a - b", "m_2": "y = None", "m_3": "z = 1"}
    monkeypatch.setattr(script, "signature", lambda copy, name: shown[name])
    listed = {"m_1": {"mutant": "x = a - b", "why": "."}, "m_2": {"mutant": "y = 2", "why": "."}}
    status = {"m_1": "survived", "m_2": "survived", "m_3": "killed"}
    assert script.still_listed(tmp_path, status, listed) == (["m_1"], ["m_2"])
