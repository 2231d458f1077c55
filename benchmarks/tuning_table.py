"""Print the tuning sweep's table and choice (xkdbench.reporting.tuning) as markdown.

    python benchmarks/tuning_table.py [paper_figures/tuning/all_cells.csv]
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from xkdbench.reporting.tuning import markdown, tuning_table


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "paper_figures/tuning/all_cells.csv")
    print(markdown(tuning_table(pd.read_csv(path))))


if __name__ == "__main__":
    main()
