"""The GKD grid (GKD paper, GSM8K figure): headline metric by student_data_fraction x divergence.

Each variant with registry key "gkd" is placed by its resolved settings: missing settings take the GKD
config's own defaults (divergence "jsd", student_data_fraction 0.5) and a JSD without beta the
divergence's default beta 0.5. The off-policy row (student_data_fraction 0: the divergence on gold
outputs) also takes the variants that compute exactly that objective under another name:
`token_divergence` (its divergence) and `supervised_kd` without a gold-NLL term (FKL), so a study need
not train the same objective twice. Labels follow the GKD convention (beta = the teacher's weight):
forward_kl or JSD(0) -> FKL, reverse_kl or JSD(1) -> RKL, otherwise JSD(beta).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from xkdbench.config import ExperimentConfig
from xkdbench.io import write_text
from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.settings import ReportSettings
from xkdbench.reporting.stats import CONFIDENCE, t_interval
from xkdbench.reporting.tables import headline_rows

ROWS = (0.0, 0.5, 1.0)
COLUMNS = ("FKL", "RKL", "JSD(0.1)", "JSD(0.5)", "JSD(0.9)")
JSD_DEFAULT_BETA = 0.5


def divergence_label(divergence: str, beta: float | None = None, alpha: float | None = None) -> str:
    if divergence == "jsd":
        beta = JSD_DEFAULT_BETA if beta is None else beta
        return {0.0: "FKL", 1.0: "RKL"}.get(float(beta), f"JSD({beta:g})")
    label = {"forward_kl": "FKL", "reverse_kl": "RKL"}.get(divergence, divergence)
    return label if alpha is None else f"{label}(alpha={alpha:g})"


def placement(settings: dict, method: str = "gkd") -> tuple[float, str] | None:
    """(student_data_fraction, divergence label) of a variant, defaults filled in; None off the grid."""
    from xkdbench.methods import method_config

    resolved = method_config(method, settings)
    if method == "gkd":
        return float(resolved.student_data_fraction), divergence_label(resolved.divergence, resolved.beta,
                                                                       resolved.alpha)
    if method == "token_divergence":
        return 0.0, divergence_label(resolved.divergence, resolved.beta, resolved.alpha)
    if method == "supervised_kd" and resolved.hard_label_weight == 0:
        return 0.0, "FKL"
    return None


def gkd_grid(tidy: pd.DataFrame, config: ExperimentConfig, settings: ReportSettings) -> pd.DataFrame | None:
    """Long table, a row per gkd variant on the grid task; None when there is nothing to place."""
    placed = [(m, placement(m.settings, m.method)) for m in config.methods
              if m.method in ("gkd", "token_divergence", "supervised_kd")]
    variants = [(m, where) for m, where in placed if where is not None
                and m.runs_on(settings.gkd_grid_task, settings.headline_fraction)]
    if not variants or settings.gkd_grid_task not in config.tasks:
        return None
    rows = headline_rows(tidy, settings.headline_fraction)
    rows = rows[rows["task"] == settings.gkd_grid_task]
    table = []
    for entry, (fraction, label) in variants:
        runs = rows[rows["method"] == entry.name]
        mean, ci, n = t_interval(runs["headline"])
        metric = runs["headline_metric"].iloc[0] if len(runs) else (
            rows["headline_metric"].iloc[0] if len(rows) else "headline")
        table.append({"student_data_fraction": fraction, "divergence": label, "method": entry.name,
                      "headline_metric": metric, "mean": mean, "ci95_half_width": ci, "n_seeds": n,
                      "num_inputs": fmt.count_label(runs["num_inputs"])})
    return pd.DataFrame(table)


def grid_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """Means as the paper's grid: rows student_data_fraction (0, 0.5, 1, then others), columns divergence
    (FKL, RKL, JSD(0.1), JSD(0.5), JSD(0.9), then others); two variants in one cell: the first is shown."""
    rows = list(ROWS) + sorted(set(table["student_data_fraction"]) - set(ROWS))
    columns = list(COLUMNS) + sorted(set(table["divergence"]) - set(COLUMNS))
    first = table.drop_duplicates(["student_data_fraction", "divergence"])
    pivot = first.pivot(index="student_data_fraction", columns="divergence", values="mean")
    return pivot.reindex(index=rows, columns=columns)


def write_gkd_grid(table: pd.DataFrame, settings: ReportSettings, out_dir: Path) -> list[Path]:
    pivot = grid_pivot(table)
    metric = table["headline_metric"].iloc[0]
    cells = table.drop_duplicates(["student_data_fraction", "divergence"]).set_index(["student_data_fraction",
                                                                                      "divergence"])
    body = []
    for fraction in pivot.index:
        row = [f"{fraction:g}"]
        for label in pivot.columns:
            if (fraction, label) in cells.index:
                r = cells.loc[(fraction, label)]
                row.append(fmt.mean_ci(r["mean"], r["ci95_half_width"], r["n_seeds"], metric))
            else:
                row.append("—")
        body.append(row)
    duplicates = table[table.duplicated(["student_data_fraction", "divergence"])]
    notes = "".join(f"Not shown: {r.method} (same cell as an earlier variant).\n" for r in duplicates.itertuples())
    text = (f"# GKD grid: {settings.gkd_grid_task}, {fmt.short_label(metric)}\n\n"
            + fmt.markdown(["student_data_fraction"] + list(pivot.columns), body)
            + f"\nGreedy decoding on {fmt.count_label(table['num_inputs'])} test inputs, data fraction "
            f"{settings.headline_fraction:g}; mean ± {CONFIDENCE:.0%} t-interval half-width over "
            f"{fmt.count_label(table['n_seeds'])} seeds. Rows: share of steps on student samples (0 = "
            "off-policy, 1 = on-policy). JSD(beta): beta is the teacher's weight (0 = FKL, 1 = RKL). "
            "—: no such variant configured.\n" + notes)
    write_text(out_dir / "gkd_grid.md", text)
    return [fmt.write_csv(out_dir / "gkd_grid.csv", table), out_dir / "gkd_grid.md"]
