"""The study figures, one function per figure, each written as PNG and PDF into out_dir/figures.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state). Every figure uses
the same colour per method (`method_colors`); the teacher and the initial student are drawn dashed.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.lines
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xkdbench.config import ExperimentConfig
from xkdbench.io import atomic_path
from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.collect import Model, validation_curve
from xkdbench.reporting.gkd_grid import grid_pivot
from xkdbench.reporting.settings import REFERENCES, ReportSettings
from xkdbench.reporting.stats import t_interval

REFERENCE_COLORS = {"teacher": "black", "student_init": "dimgray"}
REFERENCE_LABELS = {"teacher": "teacher", "student_init": "student init (SFT)"}


def method_colors(config: ExperimentConfig) -> dict[str, tuple]:
    """One colour per model name, in config order (the same in every figure of a study); the variants
    of the whole grid come first, so the line figures never repeat a colour before tab20 runs out."""
    names = [m.name for m in sorted(config.methods, key=lambda m: m.limited)]
    cmap = matplotlib.colormaps["tab10" if len(names) <= 9 else "tab20"]
    palette = [cmap(i) for i in range(cmap.N) if cmap.N != 10 or i != 7]  # tab10's grey is the references'
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    return {**{r: matplotlib.colors.to_rgba(c) for r, c in REFERENCE_COLORS.items()}, **colors}


def curve_variants(config: ExperimentConfig, task: str) -> list:
    """The variants drawn as curves on a task: those run at every fraction of the study there. Side
    studies limited to some fractions (the GKD grid) are in the tables and the grid figure instead."""
    return [m for m in config.methods if all(m.runs_on(task, f) for f in config.task_fractions(task))]


def headline_variants(config: ExperimentConfig, task: str, fraction: float) -> list:
    """The variants run on a task at one fraction: every point of a figure drawn at that fraction (the
    performance-diversity figure), side studies included."""
    return [m for m in config.methods if m.runs_on(task, fraction)]


def curve_tasks(config: ExperimentConfig) -> list[str]:
    """The tasks drawn in the data-efficiency figures: those run at more than one fraction (all tasks
    when none is, so a one-fraction study still gets its figure)."""
    return [t for t in config.tasks if len(config.task_fractions(t)) > 1] or list(config.tasks)


def _grid(nrows: int, ncols: int, width: float, heights: list[float], sharey: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols panels, row i `heights[i]` inches high."""
    fig = Figure(figsize=(width * ncols, sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharey="row" if sharey else False,
                             gridspec_kw={"height_ratios": heights})


def _figure(ncols: int, width: float = 5.0, height: float = 4.0) -> tuple[Figure, list]:
    """One row of ncols panels."""
    fig, axes = _grid(1, ncols, width, [height])
    return fig, list(axes[0])


def _suptitle(fig: Figure, text: str, fontsize: str = "large") -> None:
    """The figure's title, wrapped to the figure's width: a one-panel figure is narrower than most titles,
    and constrained layout does not wrap, so an unwrapped title is cut at both edges."""
    chars_per_inch = {"large": 10, "medium": 12}[fontsize]  # ~0.55 em per character in the default font
    fig.suptitle(textwrap.fill(text, width=max(30, int(fig.get_figwidth() * chars_per_inch))), fontsize=fontsize)


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for fmt_ in ("png", "pdf"):
        path = out_dir / "figures" / f"{name}.{fmt_}"
        with atomic_path(path) as tmp:  # no creation date in a PDF: the same figure gives the same bytes
            fig.savefig(tmp, format=fmt_, dpi=150, metadata={"CreationDate": None} if fmt_ == "pdf" else None)
        paths.append(path)
    return paths


def _legend(fig: Figure, axes: list) -> None:
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize="small")


def _mark_empty(ax) -> None:
    if not ax.has_data():
        ax.text(0.5, 0.5, "no results yet", transform=ax.transAxes, ha="center", va="center", color="gray")


def _seeds(rows: pd.DataFrame) -> str:
    cells = rows[rows["role"] == "distilled"]
    return str(fmt.count_label(cells.groupby(["task", "method", "fraction"])["seed"].nunique()))


def data_efficiency(tidy, config: ExperimentConfig, settings: ReportSettings, colors, out_dir: Path) -> list[Path]:
    """Greedy headline metric vs data fraction (log x), a panel per task, mean and 95% t-band over seeds."""
    greedy = tidy[tidy["decoding"] == "greedy"]
    tasks = curve_tasks(config)
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        rows = greedy[greedy["task"] == task]
        for name in REFERENCES:
            mean = t_interval(rows.loc[rows["method"] == name, "headline"])[0]
            if not math.isnan(mean):
                ax.axhline(mean, color=colors[name], linestyle="--", linewidth=1.2, label=REFERENCE_LABELS[name])
        for entry in curve_variants(config, task):
            runs = rows[rows["method"] == entry.name]
            stats = [(f, *t_interval(g["headline"])) for f, g in runs.groupby("fraction")]
            if not stats:
                continue
            x, mean, ci, _ = map(np.array, zip(*stats, strict=True))
            ax.plot(x, mean, marker="o", color=colors[entry.name], label=entry.name)
            band = ~np.isnan(ci)
            ax.fill_between(x[band], (mean - ci)[band], (mean + ci)[band], color=colors[entry.name], alpha=0.15)
        ax.set_xscale("log")
        fractions = sorted(config.task_fractions(task))
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("share of the distillation data (log scale)")
        metric = rows["headline_metric"].iloc[0] if len(rows) else "headline"
        ax.set_ylabel(f"{fmt.metric_label(metric)}, greedy")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        _mark_empty(ax)
    _suptitle(fig, f"Data efficiency: test score vs training data (mean, 95% t-band over {_seeds(greedy)} seeds)")
    _legend(fig, axes)
    return _save(fig, out_dir, "data_efficiency")


def performance_diversity(tidy, config: ExperimentConfig, settings: ReportSettings, colors, out_dir: Path) -> list[Path]:
    """Quality of samples vs their Self-BLEU across sampling temperatures, a curve per method and task."""
    samples = tidy[tidy["decoding"] != "greedy"]
    samples = samples[(samples["role"] != "distilled") | (samples["fraction"] == settings.headline_fraction)]
    fig, axes = _figure(len(config.tasks))
    for ax, task in zip(axes, config.tasks, strict=True):
        rows = samples[samples["task"] == task]
        has_oracle = "oracle" in rows and rows["oracle"].notna().any()
        quality = "oracle" if has_oracle else "headline"  # the samples' headline metric otherwise
        metric = "oracle" if has_oracle else (rows["headline_metric"].iloc[0] if len(rows) else "headline")
        annotated = False
        for name in [*REFERENCES, *(m.name for m in headline_variants(config, task, settings.headline_fraction))]:
            runs = rows[rows["method"] == name]
            if runs.empty or "self_bleu" not in runs:
                continue
            curve = runs.groupby("temperature")[["self_bleu", quality]].mean().dropna()
            reference = name in REFERENCES
            ax.plot(curve["self_bleu"], curve[quality], marker="o", markersize=4, color=colors[name],
                    linestyle="--" if reference else "-", label=REFERENCE_LABELS.get(name, name))
            if not reference and not annotated:  # temperatures once per panel, on the first method's curve
                for t, point in curve.iterrows():
                    ax.annotate(f"T={t:g}", (point["self_bleu"], point[quality]), textcoords="offset points",
                                xytext=(4, -10), fontsize="x-small", color=colors[name],
                                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
                annotated = True
        ax.set_xlabel(fmt.metric_label("self_bleu"))
        ax.set_ylabel(f"{fmt.metric_label(metric)}, mean over samples")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        _mark_empty(ax)
    _suptitle(fig, f"Performance vs diversity of samples across sampling temperatures "
                    f"(data fraction {settings.headline_fraction:g}, mean over seeds)")
    _legend(fig, axes)
    return _save(fig, out_dir, "performance_diversity")


def gkd_grid_heatmap(table: pd.DataFrame, settings: ReportSettings, out_dir: Path) -> list[Path]:
    """Heatmap of the GKD grid: mean headline by student_data_fraction x divergence, cells annotated."""
    pivot = grid_pivot(table)
    metric = table["headline_metric"].iloc[0]
    fig, (ax,) = _figure(1, width=1.3 * len(pivot.columns) + 2.5, height=1.0 * len(pivot.index) + 2.0)
    values = np.ma.masked_invalid(pivot.to_numpy(dtype=float))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    low, high = (values.min(), values.max()) if values.count() else (0, 1)
    for (i, j), value in np.ndenumerate(pivot.to_numpy(dtype=float)):
        dark = not math.isnan(value) and (high == low or (value - low) / (high - low) < 0.6)
        ax.text(j, i, "—" if math.isnan(value) else fmt.number(value, metric), ha="center", va="center",
                color="white" if dark else "black", fontsize="small")
    ax.set_xticks(range(len(pivot.columns)), pivot.columns)
    ax.set_yticks(range(len(pivot.index)), [f"{f:g}" for f in pivot.index])
    ax.set_xlabel("divergence (JSD(beta): beta = teacher weight)")
    ax.set_ylabel("student_data_fraction (1 = on-policy)")
    fig.colorbar(image, ax=ax, label=f"{fmt.metric_label(metric)}, greedy")
    ax.set_title(f"GKD grid on {settings.gkd_grid_task}: mean over {fmt.count_label(table['n_seeds'])} seeds "
                 f"(— = not run)", fontsize="medium")
    return _save(fig, out_dir, "gkd_grid")


def cost(tidy, config: ExperimentConfig, settings: ReportSettings, colors, out_dir: Path) -> list[Path]:
    """Per method: wall-clock seconds, generated tokens and teacher forward passes per cell (3 panels)."""
    cells = tidy[(tidy["decoding"] == "greedy") & (tidy["role"] == "distilled")]
    names = [m.name for m in config.methods if (cells["method"] == m.name).any()]
    panels = [("train_seconds", "wall-clock training seconds per cell"),
              ("generated_tokens", "generated tokens per cell"),
              ("teacher_forward_sequences", "teacher forward passes (sequences) per cell")]
    fig, axes = _figure(3, width=4.5, height=0.45 * max(len(names), 3) + 1.5)
    for ax, (column, label) in zip(axes, panels, strict=True):
        means = [cells.loc[cells["method"] == n, column].mean() for n in names]
        ax.barh(range(len(names)), np.nan_to_num(means), color=[colors[n] for n in names])
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    _suptitle(fig, f"Training cost per method (mean over {fmt.count_label(cells.groupby('method').size())} "
                    "cells each: tasks x fractions x seeds)")
    return _save(fig, out_dir, "cost")


def validation_curves(config: ExperimentConfig, settings: ReportSettings, colors, results_dir: Path,
                      out_dir: Path) -> list[Path]:
    """Per task: validation NLL against wall-clock training seconds of the `validation_curves` variants at
    the headline fraction, one line per seed (from each cell's train_log.jsonl), the lowest point marked:
    how fast each method gets to its best, and how good that best is."""
    tasks = list(config.tasks)
    fig, axes = _figure(len(tasks))
    fraction = settings.headline_fraction
    for ax, task in zip(axes, tasks, strict=True):
        drawn = False
        for name in settings.validation_curves:
            entry = next(m for m in config.methods if m.name == name)
            if not entry.runs_on(task, fraction):
                continue
            for i, seed in enumerate(config.task_seeds(task)):
                cell = Model(task, name, entry.method, "distilled", fraction, seed)
                points = validation_curve(cell.directory(results_dir) / "train_log.jsonl")
                if not points:
                    continue
                seconds, nll = zip(*points, strict=True)
                ax.plot(seconds, nll, color=colors[name], lw=1.2, alpha=0.8, label=name if i == 0 else None)
                best = int(np.argmin(nll))
                ax.plot(seconds[best], nll[best], "o", color=colors[name], ms=4)
                drawn = True
        ax.set_title(task)
        ax.set_xlabel("training seconds (wall clock)")
        ax.set_ylabel("validation NLL (gold outputs)")
        ax.grid(alpha=0.3)
        if not drawn:
            _mark_empty(ax)
    _legend(fig, axes)
    _suptitle(fig, f"Validation NLL during training at data fraction {fraction:g} (one line per seed; dot: lowest, "
                    "whose time is the cost table's time to best)", fontsize="medium")
    return _save(fig, out_dir, "validation_curves")



def paired_differences(tidy, config: ExperimentConfig, task: str, reference: str, measure: str) -> pd.DataFrame:
    """Per curve variant and data fraction: the mean over seeds of (variant − reference) on `measure`
    (greedy, a cell's mean over the test inputs), paired by seed, with its 95% t half-width and the
    number of seeds where both ran. Columns: method, fraction, mean, half_width, n_seeds."""
    greedy = tidy[(tidy["decoding"] == "greedy") & (tidy["role"] == "distilled") & (tidy["task"] == task)]
    base = greedy[greedy["method"] == reference].set_index(["fraction", "seed"])[measure]
    rows = []
    for entry in curve_variants(config, task):
        if entry.name == reference:
            continue
        runs = greedy[greedy["method"] == entry.name].set_index(["fraction", "seed"])[measure]
        for fraction, diffs in (runs - base).dropna().groupby(level="fraction"):  # seeds where both ran
            mean, half, n = t_interval(diffs)
            rows.append({"method": entry.name, "fraction": fraction, "mean": mean, "half_width": half, "n_seeds": n})
    return pd.DataFrame(rows, columns=["method", "fraction", "mean", "half_width", "n_seeds"])


def paired_data_efficiency(tidy, config: ExperimentConfig, settings: ReportSettings, colors,
                           out_dir: Path) -> list[Path]:
    """Each method minus the reference method (settings.reference_method) at every data fraction, paired
    by seed (same student initialisation, same data), mean and 95% t-band of the per-seed differences: the
    seed's own effect cancels, so the bands show the methods' differences, not the seeds' spread. A row
    for the headline metric, one for the oracle where the tasks have it."""
    greedy = tidy[(tidy["decoding"] == "greedy") & (tidy["role"] == "distilled")]
    reference = settings.reference_method
    measures = ["headline"] + (["oracle"] if "oracle" in greedy and greedy["oracle"].notna().any() else [])
    tasks = curve_tasks(config)
    fig, axes = _grid(len(measures), len(tasks), 5.0, [3.8] * len(measures))
    for row, measure in enumerate(measures):
        for ax, task in zip(axes[row], tasks, strict=True):
            ax.axhline(0, color=colors.get(reference, "black"), linestyle="--", linewidth=1.2,
                       label=f"{reference} (reference)")
            table = paired_differences(tidy, config, task, reference, measure)
            for name, curve in table.groupby("method", sort=False):
                x, mean, ci = (curve[c].to_numpy(dtype=float) for c in ("fraction", "mean", "half_width"))
                ax.plot(x, mean, marker="o", color=colors[name], label=name)
                band = ~np.isnan(ci)
                ax.fill_between(x[band], (mean - ci)[band], (mean + ci)[band], color=colors[name], alpha=0.12)
            ax.set_xscale("log")
            fractions = sorted(config.task_fractions(task))
            ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
            ax.minorticks_off()
            rows = greedy[greedy["task"] == task]
            metric = "oracle" if measure == "oracle" else (rows["headline_metric"].iloc[0] if len(rows) else "headline")
            ax.set_ylabel(f"{fmt.metric_label(metric)}: method − {reference}")
            if row == len(measures) - 1:
                ax.set_xlabel("share of the distillation data (log scale)")
            ax.set_title(task)
            ax.grid(alpha=0.3)
            _mark_empty(ax)
    _suptitle(fig, f"Data efficiency against {reference}: the difference per seed (same initialisation and data), "
                    f"mean and 95% t-band over {_seeds(greedy)} seeds")
    _legend(fig, list(axes.flat))
    return _save(fig, out_dir, "data_efficiency_paired")


VERDICT_COLORS = {"reproduced": "tab:green", "not reproduced (B better)": "tab:red", "inconclusive": "tab:gray"}


def claims_forest(table: pd.DataFrame, config: ExperimentConfig, out_dir: Path) -> list[Path]:
    """A forest plot of every claim: its effect A − B and 95% interval, a column per task and a row per
    measure (each panel on its own scale), coloured by verdict; a failed A/A control in black."""
    from xkdbench.reporting.claims import CONTROL_FAILED, MEASURE_LABELS

    if table.empty:
        fig, (ax,) = _figure(1, height=2.0)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no claim had both models evaluated (report.claims)", ha="center", va="center", color="gray")
        return _save(fig, out_dir, "claims_forest")
    tasks = [t for t in config.tasks if (table["task"] == t).any()]
    measures = [m for m in MEASURE_LABELS if (table["measure"] == m).any()]
    # one line per claim entry (text, A, B), in config order, the same lines in every panel of a row
    lines = {m: list(dict.fromkeys(zip(*(table.loc[table["measure"] == m, c] for c in ("claim", "method_a", "method_b")),
                                       strict=True)))
             for m in measures}
    heights = [len(lines[m]) * 0.28 + 1.0 for m in measures]
    fig, axes = _grid(len(measures), len(tasks), 3.8, [h + 0.3 for h in heights], sharey=True)
    for row, measure in enumerate(measures):
        keys = lines[measure]
        for col, (ax, task) in enumerate(zip(axes[row], tasks, strict=True)):
            here = table[(table["measure"] == measure) & (table["task"] == task)]
            for r in here.itertuples():
                y = keys.index((r.claim, r.method_a, r.method_b))
                color = "black" if r.verdict == CONTROL_FAILED else VERDICT_COLORS.get(r.verdict, "tab:gray")
                low, high = r.ci95_low, r.ci95_high
                if not (math.isnan(low) or math.isnan(high)):
                    ax.plot([low, high], [y, y], color=color, linewidth=2.2, solid_capstyle="butt")
                ax.plot(r.mean_difference, y, "o", color=color, markersize=4.5)
            ax.axvline(0, color="black", linewidth=0.8)
            if col == 0:  # the row's panels share this axis: its labels show on the first one only
                ax.set_yticks(range(len(keys)), [f"{text}: {a} vs {b}" for text, a, b in keys])
                ax.set_ylim(len(keys) - 0.5, -0.5)
            ax.tick_params(axis="y", labelsize="x-small", length=0, labelleft=col == 0)
            ax.grid(axis="x", alpha=0.3)
            unit = fmt.PER_EXAMPLE.get(task, "score") if measure == "greedy_score" else MEASURE_LABELS[measure]
            ax.set_xlabel("A − B" + ("\n(< 0: A faster)" if measure == "time_to_target" else ""), fontsize="small")
            # wrapped: a long unit ("answer correct (0/1)") would run into the next panel's title
            ax.set_title("\n".join([task, *textwrap.wrap(f"by {unit}", 16)]), fontsize="small")
            _mark_empty(ax)
    handles = [matplotlib.lines.Line2D([], [], color=c, marker="o", linewidth=2.2, label=v)
               for v, c in {**VERDICT_COLORS, CONTROL_FAILED: "black"}.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small")
    _suptitle(fig, "Claims of the source papers: effect A − B with its 95% interval over training runs and test "
                   "inputs, coloured by verdict", fontsize="medium")
    return _save(fig, out_dir, "claims_forest")
