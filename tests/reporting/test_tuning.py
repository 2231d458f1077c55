"""The tuning sweep's choice: best mean validation oracle per variant, every task weighed equally."""
from __future__ import annotations

import pandas as pd

from xkdbench.reporting.tuning import markdown, tuning_table


def cells(rows):
    return pd.DataFrame([{"role": "distilled", "decoding": "greedy", "method": m, "task": t, "headline": 10 * o,
                          "oracle": o} for m, t, o in rows]
                        + [{"role": "teacher", "decoding": "greedy", "method": "teacher", "task": "a", "headline": 0,
                            "oracle": 1.0},
                           {"role": "distilled", "decoding": "sample@1", "method": "x-p", "task": "a", "headline": 0,
                            "oracle": 1.0}])


def test_the_best_mean_oracle_over_tasks_is_chosen_per_variant():
    # x-p wins task a by a little and loses task b by a lot; y's settings keep their config order
    table = tuning_table(cells([("y-2", "a", 0.4), ("y-2", "b", 0.4), ("y-1", "a", 0.5), ("y-1", "b", 0.2),
                                ("x-p", "a", 0.6), ("x-p", "b", 0.1), ("x-q", "a", 0.5), ("x-q", "b", 0.4)]))
    assert list(zip(table["variant"], table["setting"], table["chosen"], strict=True)) == [
        ("y", "1", False), ("y", "2", True), ("x", "p", False), ("x", "q", True)]
    row = table[(table["variant"] == "x") & (table["setting"] == "p")].iloc[0]
    assert row["mean oracle"] == 0.35 and row["a oracle"] == 0.6 and row["b score"] == 1.0
    text = markdown(table)
    assert "| x | **q** (chosen) |" in text and "| x | p |" in text
