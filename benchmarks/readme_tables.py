"""Print README's "Results" tables from a finished report: one column per task instead of one table each.

    python benchmarks/readme_tables.py paper_figures/default

prints (Markdown) the main table at fraction 1 (each task's headline metric and, where it differs, its
oracle) and the claims table (one row per claim and measure, one column per task). It reads the report's
own files (main_table.csv, claims.csv), so README shows exactly the committed numbers, rounded as the
report rounds them.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

VERDICT_WORDS = {"reproduced": "**reproduced**", "inconclusive": "inconclusive"}


def number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def digits_for(metric: str) -> int:
    # the report's own rule: scores on a 0-100 scale get 2 decimals, 0-1 scores get 3
    return 2 if metric in {"bleu", "chrf", "rouge1", "rouge2", "rougeL"} else 3


def main_table(report: Path) -> str:
    table = pd.read_csv(report / "main_table.csv")
    tasks = list(dict.fromkeys(table.task))
    columns = []   # (task, metric)
    for task in tasks:
        metrics = list(dict.fromkeys(table[table.task == task].metric))
        headline = metrics[0]
        same = task_oracle_equals_headline(table, task, headline)
        columns.append((task, headline))
        if "oracle" in metrics and headline != "oracle" and not same:
            columns.append((task, "oracle"))
    models = list(dict.fromkeys(table.model))
    names = {"bleu": "BLEU", "accuracy_strict": "accuracy", "rouge2": "ROUGE-2", "oracle": "oracle"}
    header = "| method | " + " | ".join(f"{task} {names.get(metric, metric)}" for task, metric in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for model in models:
        cells = []
        for task, metric in columns:
            row = table[(table.task == task) & (table.model == model) & (table.metric == metric)]
            if row.empty:
                cells.append("—")
                continue
            row = row.iloc[0]
            text = number(row["mean"], digits_for(metric))
            if not math.isnan(row["ci95_half_width"]):
                text += f" ± {number(row['ci95_half_width'], digits_for(metric))}"
            cells.append(f"**{text}**" if bool(row["best"]) else text)
        key = table[table.model == model].method_key.iloc[0]
        lines.append(f"| {model}{' †' if reconstructed(key) else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_oracle_equals_headline(table: pd.DataFrame, task: str, headline: str) -> bool:
    rows = table[table.task == task]
    a = rows[rows.metric == headline].set_index("model")["mean"]
    b = rows[rows.metric == "oracle"].set_index("model")["mean"]
    return len(b) > 0 and a.index.equals(b.index) and bool((a - b).abs().max() < 1e-12)


def reconstructed(method_key: str) -> bool:
    from xkdbench.methods import METHODS
    if method_key not in METHODS:  # the teacher and the student initialisation
        return False
    paper = METHODS.get(method_key).paper
    return bool(paper is not None and paper.reconstructed)


def claims_table(report: Path) -> str:
    claims = pd.read_csv(report / "claims.csv")
    tasks = list(dict.fromkeys(claims.task))
    lines = ["| claim | by | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    keys = list(dict.fromkeys(zip(claims.claim, claims.method_a, claims.method_b, claims.fraction,
                                  claims.measure, strict=True)))
    for claim, a, b, fraction, measure in keys:
        rows = claims[(claims.claim == claim) & (claims.method_a == a) & (claims.method_b == b)
                      & (claims.fraction == fraction) & (claims.measure == measure)]
        by = {"greedy_score": "score", "greedy_oracle": "oracle"}.get(measure, "time (s)")
        at = "" if fraction == 1.0 else f" at {fraction:g}"
        cells = []
        for task in tasks:
            row = rows[rows.task == task]
            if row.empty:
                cells.append("—")
                continue
            row = row.iloc[0]
            # two decimals for seconds and 0-100 scores (their residual sd is above 1), three for 0-1 ones
            d = 3 if measure == "greedy_oracle" or (measure == "greedy_score" and row.sd_residual <= 1) else 2
            text = (f"{row.verdict}: {row.mean_difference:+.{d}f} "
                    f"[{row.ci95_low:+.{d}f}, {row.ci95_high:+.{d}f}]")
            cells.append(f"**{text}**" if row.verdict == "reproduced" else text)
        lines.append(f"| {claim}: {a} vs {b}{at} | {by} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a report's directory, e.g. paper_figures/default")
    report = parser.parse_args().report
    print(main_table(report))
    print()
    print(claims_table(report))


if __name__ == "__main__":
    main()
