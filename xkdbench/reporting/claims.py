"""Claims of the source papers, checked against the study (EXPERIMENTS: "Claims").

Each configured claim (`report.claims`) reads "A scores higher than B" on a task at a data fraction.
Its measured effect is the mean paired difference A - B of the per-example measure over every
(seed, test input) pair, with the 95% paired bootstrap interval of the win-rate tables. The verdict
follows from that interval alone: above 0 is "reproduced", below 0 "not reproduced (B better)",
containing 0 "inconclusive". The per-seed signs are listed beside it, because seeds are few and the
bootstrap over inputs does not see the variation between training runs.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from xkdbench.config import ExperimentConfig
from xkdbench.io import write_text
from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.settings import ReportSettings
from xkdbench.reporting.tables import PairedScores, compare

VERDICTS = {"A better": "reproduced", "B better": "not reproduced (B better)", "inconclusive": "inconclusive"}
COLUMNS = ["claim", "task", "method_a", "method_b", "fraction", "measure", "n_seeds", "n_inputs", "seeds_a_better",
           "mean_difference", "ci95_low", "ci95_high", "verdict"]


def claims_table(config: ExperimentConfig, settings: ReportSettings, results_dir: Path) -> pd.DataFrame:
    """A row per (claim, task) with both models evaluated; a claim with no such task has no row."""
    scores, rows = PairedScores(config, results_dir), []
    for claim in settings.claims:
        for task in claim.tasks:
            per_seed = scores.per_seed(task, claim.a, claim.b, claim.fraction, claim.measure)
            if not per_seed:
                continue
            pooled = per_seed.pop("pooled")
            result = compare(pooled.iloc[:, 0], pooled.iloc[:, 1], settings)
            better = sum(pair.iloc[:, 0].mean() > pair.iloc[:, 1].mean() for pair in per_seed.values())
            rows.append({"claim": claim.text, "task": task, "method_a": claim.a, "method_b": claim.b,
                         "fraction": claim.fraction, "measure": claim.measure, "n_seeds": len(per_seed),
                         "n_inputs": result["n_inputs"], "seeds_a_better": better,
                         "mean_difference": result["mean_difference"], "ci95_low": result["ci95_low"],
                         "ci95_high": result["ci95_high"], "verdict": VERDICTS[result["verdict"]]})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_claims(table: pd.DataFrame, settings: ReportSettings, out_dir: Path) -> list[Path]:
    header = ["claim", "task", "A vs B", "fraction", "by", "seeds A > B", "pairs", "mean A - B [95% CI]", "verdict"]
    body = [[r.claim, r.task, f"{r.method_a} vs {r.method_b}", f"{r.fraction:g}",
             "oracle" if r.measure == "greedy_oracle" else "score", f"{r.seeds_a_better} of {r.n_seeds}",
             r.n_inputs, f"{r.mean_difference:+.4f} [{r.ci95_low:+.4f}, {r.ci95_high:+.4f}]", f"**{r.verdict}**"]
            for r in table.itertuples()]
    md = ["# Claims of the source papers, checked\n",
          fmt.markdown(header, body) if body else "No configured claim had both models evaluated.\n",
          f"Greedy decoding. A claim reads \"A scores higher than B\". Mean A - B over every (seed, test input) "
          f"pair ({fmt.count_label(table['n_seeds']) if len(table) else 0} seeds; pairs = seeds x inputs) with its "
          f"95% paired bootstrap interval (scipy.stats.bootstrap, BCa, {settings.bootstrap_resamples} resamples). "
          "Verdict: reproduced when the interval lies above 0, not reproduced when it lies below 0, inconclusive "
          "when it contains 0. Seeds A > B: seeds whose mean A exceeds mean B; the interval is over inputs and does "
          "not include the variation between training seeds. By score: "
          + "; ".join(f"{task}: {label}" for task, label in fmt.PER_EXAMPLE.items())
          + "; by oracle: the oracle score (0-1).\n"]
    write_text(out_dir / "claims.md", "\n".join(md))
    return [fmt.write_csv(out_dir / "claims.csv", table), out_dir / "claims.md"]
