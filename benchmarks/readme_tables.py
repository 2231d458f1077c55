"""Print README's "Results" tables from a finished report: one column per task instead of one table each.

    python benchmarks/readme_tables.py paper_figures/default

prints (Markdown) the main table at fraction 1 (each task's headline metric and, where it differs, its
oracle) and the claims table (one row per claim and measure, one column per task). It reads the report's
own files (main_table.csv, claims.csv), so README shows exactly the committed numbers, rounded as the
report rounds them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.tables import reconstructed


def main_table(report: Path) -> str:
    table = pd.read_csv(report / "main_table.csv")
    columns = []  # (task, metric): each task's headline, and its oracle where that is another number
    for task in dict.fromkeys(table.task):
        metrics = list(dict.fromkeys(table[table.task == task].metric))
        columns.append((task, metrics[0]))
        if "oracle" in metrics[1:] and not same_numbers(table, task, metrics[0], "oracle"):
            columns.append((task, "oracle"))
    rows = []
    for model in dict.fromkeys(table.model):
        cells = []
        for task, metric in columns:
            row = table[(table.task == task) & (table.model == model) & (table.metric == metric)]
            if row.empty:
                cells.append("—")
                continue
            row = row.iloc[0]
            text = fmt.number(row["mean"], metric)
            if not pd.isna(row["ci95_half_width"]):
                text += f" ± {fmt.number(row['ci95_half_width'], metric)}"
            cells.append(f"**{text}**" if bool(row["best"]) else text)
        key = table[table.model == model].method_key.iloc[0]
        rows.append([f"{model}{' †' if reconstructed(key) else ''}", *cells])
    return fmt.markdown(["method", *(f"{task} {fmt.short_label(metric)}" for task, metric in columns)], rows).rstrip()


def same_numbers(table: pd.DataFrame, task: str, a: str, b: str) -> bool:
    """Whether two metrics of a task are the same numbers (reasoning's accuracy is its oracle)."""
    rows = table[table.task == task]
    x, y = (rows[rows.metric == m].set_index("model")["mean"] for m in (a, b))
    return x.index.equals(y.index) and bool((x - y).abs().max() < 1e-12)


def claims_table(report: Path) -> str:
    claims = pd.read_csv(report / "claims.csv")
    tasks = list(dict.fromkeys(claims.task))
    lines = []
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
        lines.append([f"{claim}: {a} vs {b}{at}", by, *cells])
    return fmt.markdown(["claim", "by", *tasks], lines).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a report's directory, e.g. paper_figures/default")
    report = parser.parse_args().report
    print(main_table(report))
    print()
    print(claims_table(report))


if __name__ == "__main__":
    main()
