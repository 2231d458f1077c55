"""Is each task calibrated? The room the methods compete in, measured on the study itself.

Per task, on the greedy oracle of the test split: the teacher, the shared student initialisation (mean
and seed-to-seed standard deviation) and the SFT cell at the headline fraction (the first variant whose
method is `sft`), against the targets a study that can separate methods needs (README, "Calibration"):

- the teacher scores at least TEACHER_MIN: it has something to teach;
- the initialisation's seeds differ by at most INIT_SD_MAX: the seed is not the largest effect;
- SFT gains at least GAIN_MIN over the initialisation: the budget moves a student;
- SFT stays at least ROOM_MIN below the teacher: there is room for distillation to beat SFT.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from xkdbench.config import ExperimentConfig
from xkdbench.io import write_text
from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.settings import ReportSettings

TEACHER_MIN, INIT_SD_MAX, GAIN_MIN, ROOM_MIN = 0.9, 0.03, 0.10, 0.15
COLUMNS = ["task", "teacher", "init_mean", "init_sd", "init_seeds", "sft", "sft_sd", "sft_seeds", "gain", "room",
           "teacher_ok", "init_ok", "gain_ok", "room_ok"]


def task_calibration(tidy: pd.DataFrame, config: ExperimentConfig, settings: ReportSettings) -> pd.DataFrame:
    """A row per task with an oracle; NaN where a model is missing (its check is then False)."""
    greedy = tidy[tidy["decoding"] == "greedy"]
    sft = next((m.name for m in config.methods if m.method == "sft"), None)
    rows = []
    for task in config.tasks:
        here = greedy[greedy["task"] == task]
        if "oracle" not in here or here["oracle"].isna().all():
            continue  # real datasets have no oracle to calibrate on
        teacher = here.loc[here["role"] == "teacher", "oracle"].mean()
        init = here.loc[here["role"] == "student_init", "oracle"].dropna()
        cells = here[(here["method"] == sft) & (here["fraction"] == settings.headline_fraction)]["oracle"].dropna()
        init_sd = init.std(ddof=1) if len(init) > 1 else math.nan
        gain, room = cells.mean() - init.mean(), teacher - cells.mean()
        rows.append({"task": task, "teacher": teacher, "init_mean": init.mean(), "init_sd": init_sd,
                     "init_seeds": len(init), "sft": cells.mean(), "sft_sd": cells.std(ddof=1) if len(cells) > 1
                     else math.nan, "sft_seeds": len(cells), "gain": gain, "room": room,
                     "teacher_ok": bool(teacher >= TEACHER_MIN), "init_ok": bool(init_sd <= INIT_SD_MAX),
                     "gain_ok": bool(gain >= GAIN_MIN), "room_ok": bool(room >= ROOM_MIN)})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_task_calibration(table: pd.DataFrame, settings: ReportSettings, out_dir: Path) -> list[Path]:
    def mark(value: float, ok: bool) -> str:
        return "n/a" if math.isnan(value) else f"{value:.3f} {'✓' if ok else '✗'}"

    header = ["task", f"teacher (≥ {TEACHER_MIN})", "init mean", f"init sd (≤ {INIT_SD_MAX})",
              "SFT", f"SFT − init (≥ {GAIN_MIN:.2f})", f"teacher − SFT (≥ {ROOM_MIN})"]
    body = [[r.task, mark(r.teacher, r.teacher_ok), f"{r.init_mean:.3f}", mark(r.init_sd, r.init_ok),
             f"{r.sft:.3f} ± {r.sft_sd:.3f}" if not math.isnan(r.sft_sd) else f"{r.sft:.3f}",
             mark(r.gain, r.gain_ok), mark(r.room, r.room_ok)] for r in table.itertuples()]
    md = ["# Task calibration: the room the methods compete in\n",
          fmt.markdown(header, body) if body else "No task with an oracle.\n",
          f"Greedy oracle on the test split. Init: the shared student initialisation, mean and standard deviation "
          f"over {fmt.count_label(table['init_seeds']) if len(table) else 0} seeds; SFT: the sft cell at data "
          f"fraction {settings.headline_fraction:g}, mean ± sd over seeds. A task is calibrated when all four "
          "checks hold: the teacher has something to teach, the seed is not the largest effect, the budget moves "
          "a student, and there is room above SFT for distillation.\n"]
    write_text(out_dir / "task_calibration.md", "\n".join(md))
    return [fmt.write_csv(out_dir / "task_calibration.csv", table), out_dir / "task_calibration.md"]
