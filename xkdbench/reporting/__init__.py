"""Aggregate a results tree into the study's tables and figures.

    paths = build_report(config, results_dir, out_dir)   # {output name: [written paths]}

Reads only the files the command line writes (metrics.json, outputs.jsonl, train_summary.json,
train_log.jsonl) and tolerates a partial run: what exists is reported, what is missing is listed in
missing_cells.txt. The `report:` config keys are documented in `xkdbench.reporting.settings`.

Outputs in out_dir (an empty list in the returned dict marks an output skipped, with the reason logged):
  all_cells.csv          tidy: a row per (task, method, fraction, seed, decoding), every metric and cost
  missing_cells.txt      every expected file that is absent
  main_table.{csv,md,tex}   per task at the headline fraction, mean ± 95% t-interval over seeds, best marked
                         with its paired comparison to the runner-up (interval over seeds and inputs)
  win_rates.{csv,md}     win/tie/lose per configured pair, per seed and pooled; the pooled interval covers
                         seeds and inputs (xkdbench.reporting.stats) and decides the verdict
  gkd_grid.{csv,md}      student_data_fraction x divergence of the gkd variants on gkd_grid_task
  cost.{csv,md}          training cost per task and method variant
  claims.{csv,md}        each configured claim of the source papers: effect, 95% CI, verdict, and what the
                         study's size detects (variance components, effect found with 80% power)
  power.{csv,md}         per task and measure: median half-width and detectable effect of the claims
  task_calibration.{csv,md}  per task: teacher, initialisation (mean, seed sd) and SFT on the oracle, against
                         the calibration targets
  figures/{data_efficiency,performance_diversity,gkd_grid,cost}.{png,pdf}
  figures/validation_curves.{png,pdf}   validation NLL against training seconds (report.validation_curves)
  figures/data_efficiency_paired.{png,pdf}   each method minus the reference method, paired by seed
  figures/claims_forest.{png,pdf}   every claim's effect and interval, coloured by verdict
"""
from __future__ import annotations

import logging
from pathlib import Path

from xkdbench.config import ExperimentConfig
from xkdbench.reporting.settings import ReportSettings, report_settings

__all__ = ["build_report", "ReportSettings", "report_settings"]
log = logging.getLogger(__name__)


def build_report(config: ExperimentConfig, results_dir: Path, out_dir: Path) -> dict[str, list[Path]]:
    """Write every table and figure of the study; returns {output name: [paths written]}."""
    # Imported here, not at module level: every command validates its config through
    # reporting.settings, and matplotlib/scipy would add over a second to each cell's start.
    from xkdbench.io import write_text
    from xkdbench.reporting import claims, figures, tables, task_calibration
    from xkdbench.reporting.collect import collect, expected_models
    from xkdbench.reporting.formatting import write_csv
    from xkdbench.reporting.gkd_grid import gkd_grid, write_gkd_grid

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    settings = report_settings(config)
    tidy, missing = collect(config, results_dir)
    expected = len(expected_models(config))
    paths: dict[str, list[Path]] = {"all_cells": [write_csv(out_dir / "all_cells.csv", tidy)]}
    header = (f"# Missing files under the results directory: {len(missing)} "
              f"({expected} models expected: teacher, student_init per seed, every cell)\n")
    write_text(out_dir / "missing_cells.txt", header + "".join(f"{line}\n" for line in missing))
    paths["missing_cells"] = [out_dir / "missing_cells.txt"]
    if missing:
        log.warning("%d files missing; see %s", len(missing), out_dir / "missing_cells.txt")

    main = tables.main_table(tidy, config, settings, tables.PairedScores(config, results_dir))
    paths["main_table"] = tables.write_main_table(main, settings, out_dir)
    if settings.win_rate_pairs:
        table = tables.win_rates(config, settings, results_dir)
        paths["win_rates"] = tables.write_win_rates(table, settings, out_dir)
    else:
        paths["win_rates"] = []
        log.info("win rates skipped: no pairs (set report.win_rate_pairs, or configure an xkd method)")
    paths["cost_table"] = tables.write_cost_table(tables.cost_table(tidy, config), out_dir)
    paths["task_calibration"] = task_calibration.write_task_calibration(
        task_calibration.task_calibration(tidy, config, settings), settings, out_dir)
    claim_rows = claims.claims_table(config, settings, results_dir)  # empty when none are configured
    paths["claims"] = claims.write_claims(claim_rows, settings, out_dir, {m.name: m.method for m in config.methods})
    paths["figure_claims_forest"] = figures.claims_forest(claim_rows, config, out_dir)
    paths["power"] = claims.write_power(claims.power_table(claim_rows), out_dir)

    colors = figures.method_colors(config)
    for name, draw in (("data_efficiency", figures.data_efficiency),
                       ("performance_diversity", figures.performance_diversity), ("cost", figures.cost),
                       ("data_efficiency_paired", figures.paired_data_efficiency)):
        paths[f"figure_{name}"] = draw(tidy, config, settings, colors, out_dir)

    if settings.validation_curves:
        paths["figure_validation_curves"] = figures.validation_curves(config, settings, colors, results_dir, out_dir)
    else:
        paths["figure_validation_curves"] = []
        log.info("validation curves skipped: no variants named (report.validation_curves)")

    grid = gkd_grid(tidy, config, settings)
    if grid is None:
        paths["gkd_grid"] = paths["figure_gkd_grid"] = []
        log.info("GKD grid skipped: no gkd variant, or task %r not configured", settings.gkd_grid_task)
    else:
        paths["gkd_grid"] = write_gkd_grid(grid, settings, out_dir)
        paths["figure_gkd_grid"] = figures.gkd_grid_heatmap(grid, settings, out_dir)
    return paths
