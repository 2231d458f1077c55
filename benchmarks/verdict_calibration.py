"""Print the false-verdict rate and the power of the report's claim intervals, by simulation.

    python benchmarks/verdict_calibration.py [--studies 2000]

Scenarios (standard deviations of a paired per-example difference, in units of the score):
training-run effect, method x input interaction, residual noise; 200 test inputs as in the default
study. "crossed" is the report's interval (xkdbench.reporting.stats); "naive" treats every
(seed, input) pair as independent, as the earlier paired bootstrap did.
"""
from __future__ import annotations

import argparse
import time

from xkdbench.reporting.calibration import Scenario, verdict_rates

SCENARIOS = {
    "no seed effect": Scenario(0.0, 0.10, 0.20),
    "small seed effect": Scenario(0.02, 0.05, 0.20),
    "moderate seed effect": Scenario(0.05, 0.10, 0.20),
    "seed effect dominates": Scenario(0.20, 0.05, 0.10),
}
EFFECT = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2000, help="simulated studies per row (default 2000)")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"| scenario (seed, input, noise sd) | seeds | false verdicts, crossed | false verdicts, naive "
          f"| power at effect {EFFECT}, crossed |")
    print("|---|---:|---:|---:|---:|")
    for name, sc in SCENARIOS.items():
        for seeds in (3, 5):
            null = verdict_rates(sc, seeds, studies=args.studies, seed=1)
            power = verdict_rates(sc, seeds, effect=EFFECT, studies=args.studies, seed=2)
            print(f"| {name} ({sc.seed_sd}, {sc.input_sd}, {sc.noise_sd}) | {seeds} | {null['crossed']:.1%} "
                  f"| {null['naive']:.1%} | {power['crossed']:.1%} |")
    print(f"\n{args.studies} simulated studies per cell, {SCENARIOS['no seed effect'].n_inputs} inputs each, "
          f"nominal rate 5%; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
