"""The mutation-testing lists (benchmarks/mutation_scores.py): well formed, and an entry whose mutant
changed (mutmut renumbers a changed function's mutants) is not taken for the mutant it once named."""
from __future__ import annotations

from pathlib import Path

import yaml

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
LISTS = ["tests/mutation_equivalent.yaml", "tests/mutation_out_of_reach.yaml"]


def test_every_entry_names_its_mutant_and_a_reason_and_sits_in_one_list():
    entries = [yaml.safe_load((ROOT / path).read_text()) for path in LISTS]
    for listed in entries:
        for name, entry in listed.items():
            assert name.startswith("xkdbench.") and "__mutmut_" in name, name
            assert set(entry) == {"mutant", "why"}, name
            assert entry["mutant"].strip() and entry["why"].strip(), name
    assert not set(entries[0]) & set(entries[1])


def test_no_name_is_listed_twice():
    """YAML keeps the last of two equal keys silently: a second entry under one name would hide the first."""
    for path in LISTS:
        names = [line[:-1] for line in (ROOT / path).read_text().splitlines() if line.startswith("xkdbench.")]
        assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_entries_match_by_function_and_line_not_by_number(monkeypatch, tmp_path):
    """mutmut renumbers a changed function's mutants: an entry excuses the survivor whose mutated line it
    records (under whatever number), and never the mutant that now carries its old number."""
    script = load_script("benchmarks/mutation_scores.py")
    shown = {"mod.x_f__mutmut_1": "x = a - b", "mod.x_f__mutmut_2": "y = None", "mod.x_f__mutmut_3": "z = 1",
             "mod.x_g__mutmut_1": "y = 2"}
    monkeypatch.setattr(script, "signature", lambda copy, name: shown[name])
    listed = {"mod.x_f__mutmut_2": {"mutant": "x = a - b", "why": "."},  # renumbered: now mutant 1
              "mod.x_f__mutmut_3": {"mutant": "y = 2", "why": "."}}  # its line survives in another function only
    status = {"mod.x_f__mutmut_1": "survived", "mod.x_f__mutmut_2": "survived", "mod.x_f__mutmut_3": "killed",
              "mod.x_g__mutmut_1": "survived"}
    assert script.still_listed(tmp_path, status, listed) == (["mod.x_f__mutmut_1"], ["mod.x_f__mutmut_2"])
