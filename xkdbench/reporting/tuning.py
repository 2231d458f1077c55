"""The tuning sweep's choice: each method's settings scored on the validation split, the best one chosen.

The sweep (`workflows/config/tuning.yaml`) names its variants `<variant>-<setting>` and evaluates them on
the validation split. `tuning_table` gives a row per (variant, setting) with each task's headline metric
and oracle and the mean oracle over the tasks, and marks the setting with the best mean oracle: the
oracle is on the same 0-1 scale on every task, so the choice weighs the tasks equally.
"""
from __future__ import annotations

import pandas as pd


def tuning_table(tidy: pd.DataFrame) -> pd.DataFrame:
    cells = tidy[(tidy["role"] == "distilled") & (tidy["decoding"] == "greedy")].copy()
    cells[["variant", "setting"]] = cells["method"].str.rsplit("-", n=1, expand=True)
    per_task = cells.pivot_table(index=["variant", "setting"], columns="task", values=["headline", "oracle"])
    per_task.columns = [f"{task} {'oracle' if value == 'oracle' else 'score'}" for value, task in per_task.columns]
    table = per_task.reset_index()
    table["mean oracle"] = cells.groupby(["variant", "setting"])["oracle"].mean().to_numpy()
    best = table.groupby("variant")["mean oracle"].transform("max")
    table["chosen"] = table["mean oracle"] == best
    order = list(dict.fromkeys(cells["variant"]))  # config order
    return table.sort_values("variant", key=lambda s: s.map(order.index), kind="stable")


def markdown(table: pd.DataFrame) -> str:
    columns = [c for c in table.columns if c not in ("variant", "setting", "chosen")]
    lines = ["| variant | setting | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for values in table.to_dict("records"):
        setting = f"**{values['setting']}** (chosen)" if values["chosen"] else values["setting"]
        cells = [f"{values[c]:.3f}" if "oracle" in c else f"{values[c]:.2f}" for c in columns]
        lines.append(f"| {values['variant']} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
