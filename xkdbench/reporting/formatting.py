"""Number formatting and plain Markdown / LaTeX (booktabs) table writers, shared by tables and figures."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from xkdbench.io import atomic_path

# Metric -> (label with unit, decimals). Fractions in [0, 1] get 3 decimals, 0-100 scores 2.
METRICS = {
    "rouge1": ("ROUGE-1 (0-100)", 2), "rouge2": ("ROUGE-2 (0-100)", 2), "rougeL": ("ROUGE-L (0-100)", 2),
    "bleu": ("BLEU (0-100)", 2), "chrf": ("chrF (0-100)", 2),
    "accuracy_strict": ("strict accuracy (fraction)", 3), "accuracy_flexible": ("flexible accuracy (fraction)", 3),
    "valid_steps": ("valid reasoning steps (fraction)", 3), "oracle": ("oracle score (0-1)", 3),
    "self_bleu": ("Self-BLEU (0-100, lower = more diverse)", 2),
    "distinct_1": ("distinct-1 (fraction)", 3), "distinct_2": ("distinct-2 (fraction)", 3),
}
SHORT = {"rouge2": "ROUGE-2", "bleu": "BLEU", "accuracy_strict": "Accuracy (strict)", "oracle": "Oracle",
         "chrf": "chrF", "rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "accuracy_flexible": "Accuracy (flexible)"}
# What greedy_score is per task (the per-example metric of outputs.jsonl).
PER_EXAMPLE = {"summarization": "sentence ROUGE-2 F", "translation": "sentence chrF",
               "reasoning": "answer correct (0/1)"}


def metric_label(metric: str) -> str:
    return METRICS.get(metric, (metric, 3))[0]


def short_label(metric: str) -> str:
    return SHORT.get(metric, metric)


def number(value: float, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{METRICS.get(metric, (metric, 3))[1]}f}"


def mean_ci(mean: float, ci: float, n: int, metric: str, plus_minus: str = "±") -> str:
    """'12.34 ± 0.56'; 'n/a' without data; '12.34 (n=1, no CI)' for a single run."""
    if n == 0 or math.isnan(mean):
        return "n/a"
    if n == 1 or math.isnan(ci):
        return f"{number(mean, metric)} (n=1, no CI)"
    return f"{number(mean, metric)} {plus_minus} {number(ci, metric)}"


def count_label(values) -> int | str:
    """The single count among `values`, or 'low-high' when they differ (e.g. test inputs per model)."""
    values = sorted({int(v) for v in pd.Series(values).dropna()})
    if not values:
        return 0
    return values[0] if len(values) == 1 else f"{values[0]}-{values[-1]}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$")):
        text = text.replace(a, b)
    return text


def latex_table(header: list[str], blocks: list[list[list[str]]], caption: str, label: str) -> str:
    """A booktabs table; `blocks` of rows are separated by \\midrule; cells are LaTeX already."""
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
             r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for i, block in enumerate(b for b in blocks if b):
        if i:
            lines.append(r"\midrule")
        lines += [" & ".join(row) + r" \\" for row in block]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path
