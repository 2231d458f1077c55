"""Config fingerprints: an edit changes the hash of exactly the stages that read the edited value."""
from __future__ import annotations

import copy

from xkdbench.config import ExperimentConfig, from_dict
from xkdbench.fingerprints import fingerprints

BASE = {"tasks": {"reasoning": {}, "translation": {}},
        "methods": [{"name": "sft", "method": "sft"}, {"name": "gkd_on", "method": "gkd", "student_data_fraction": 1.0}],
        "fractions": [0.5, 1.0], "seeds": [0, 1]}


def changed(**edit) -> set[str]:
    """The (stage, task[, method]) keys whose fingerprint differs after applying `edit` to BASE."""
    data = copy.deepcopy(BASE)
    for path, value in edit.items():
        node = data
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {}) if not key.isdigit() else node[int(key)]
        node[int(leaf) if leaf.isdigit() else leaf] = value
    before, after = (fingerprints(from_dict(ExperimentConfig, d)) for d in (BASE, data))

    def flat(prints):
        out = {}
        for stage, value in prints.items():
            if isinstance(value, str):
                out[stage] = value
                continue
            for task, inner in value.items():
                items = inner.items() if isinstance(inner, dict) else [(None, inner)]
                for method, h in items:
                    out["/".join(k for k in (stage, task, method) if k)] = h
        return out

    a, b = flat(before), flat(after)
    assert a.keys() == b.keys()
    return {k for k in a if a[k] != b[k]}


def test_same_config_same_fingerprints():
    assert changed() == set()


def test_distillation_budget_reruns_cells_only():
    assert changed(distill__steps=7) == {"cell/reasoning/sft", "cell/reasoning/gkd_on", "cell/translation/sft",
                                         "cell/translation/gkd_on", "report"}


def test_one_variant_or_one_task_override_touches_only_its_cells():
    assert changed(methods__1__beta=0.9) == {"cell/reasoning/gkd_on", "cell/translation/gkd_on", "report"}
    assert changed(tasks__translation__distill={"steps": 3}) == {"cell/translation/sft", "cell/translation/gkd_on",
                                                                 "report"}


def test_upstream_stages_have_their_own_hash():
    assert changed(models__teacher={"d_model": 32, "n_heads": 4}) == {"teacher/reasoning", "teacher/translation",
                                                                       "report"}
    assert changed(tasks__reasoning__options={"difficulty": 1}) == {"data/reasoning", "report"}
    # evaluation settings reach the evaluated stages (the reference models and every cell), nothing upstream
    assert changed(evaluation__samples_per_input=2) == {"evaluate/reasoning", "evaluate/translation",
                                                        "cell/reasoning/sft", "cell/reasoning/gkd_on",
                                                        "cell/translation/sft", "cell/translation/gkd_on", "report"}


def test_report_only_settings_rerun_only_the_report():
    assert changed(report={"gkd_grid_task": "translation"}) == {"report"}


def test_teacher_cache_settings_rerun_the_caches_and_only_the_cells_that_read_them():
    methods = [{"name": "sft", "method": "sft"}, {"name": "kd", "method": "supervised_kd"},
               {"name": "gkd_on", "method": "gkd", "student_data_fraction": 1.0}]

    def prints(**cache):
        return fingerprints(from_dict(ExperimentConfig, {**BASE, "methods": methods, "teacher_cache": cache}))

    live, top64, top32 = prints(), prints(mode="top_k", top_k=64), prints(mode="top_k", top_k=32)
    exact, exact_other_k = prints(mode="exact"), prints(mode="exact", top_k=32)
    for a, b in ((live, top64), (top64, top32), (top64, exact)):
        for task in BASE["tasks"]:
            assert a["teacher_cache"][task] != b["teacher_cache"][task]
            assert a["cell"][task]["kd"] != b["cell"][task]["kd"]  # its loss reads the cache
            # neither reads the cache: sft has no teacher, gkd_on asks it about its samples only
            assert a["cell"][task]["sft"] == b["cell"][task]["sft"]
            assert a["cell"][task]["gkd_on"] == b["cell"][task]["gkd_on"]
            assert a["teacher"][task] == b["teacher"][task]
    exact.pop("report"), exact_other_k.pop("report")  # the report reads the whole study
    assert exact == exact_other_k  # k means nothing in exact mode
