"""Where a workflow run's time went, from Snakemake's own logs (`.snakemake/log/*.snakemake.log`).

Prints, per rule (and per task and method variant for the cells), the number of finished jobs and
their summed and mean wall-clock seconds (start to finish as Snakemake logged them, so each includes
the process start and any wait for the shared cores), plus the span of the logs and how many jobs ran
at once over it: the minutes with a core left idle are where a stage ran alone (or Snakemake waited).
An interrupted run continued by the same command has several logs; give them all:

    python benchmarks/workflow_times.py .snakemake/log/*.snakemake.log
"""
from __future__ import annotations

import argparse
import datetime
import re
from collections import defaultdict
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def finished_jobs(log: Path) -> tuple[list[dict], datetime.datetime | None, datetime.datetime | None]:
    """Jobs that finished in this log (rule, wildcards, seconds), and the first and last timestamp."""
    jobs, started, now, first, rule, current = [], {}, None, None, None, None
    for line in log.read_text(errors="replace").splitlines():
        if m := STAMP.match(line):
            now = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or now
        elif m := RULE.match(line):
            rule = m.group(1)
        elif m := JOBID.match(line):
            current = m.group(1)
            started[current] = {"rule": rule, "start": now, "wildcards": {}}
        elif (m := WILDCARDS.match(line)) and current in started:
            started[current]["wildcards"] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
        elif (m := FINISHED.match(line)) and m.group(1) in started:
            job = started.pop(m.group(1))
            jobs.append({**job, "end": now, "seconds": (now - job["start"]).total_seconds()})
    return jobs, first, now


def concurrency(jobs: list[dict]) -> dict[int, float]:
    """{number of jobs running: seconds} over the span from the first job's start to the last job's end."""
    events = sorted([(job["start"], 1) for job in jobs] + [(job["end"], -1) for job in jobs], key=lambda e: (e[0], e[1]))
    seconds: dict[int, float] = defaultdict(float)
    running, previous = 0, None
    for when, change in events:
        if previous is not None and when > previous:  # a job ending as another starts: no step between
            seconds[running] += (when - previous).total_seconds()
        running, previous = running + change, when
    return dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="Snakemake log files of one study, in any order")
    parser.add_argument("--cores", type=int, default=2, help="cores the run had (for the ideal wall-clock)")
    args = parser.parse_args()
    jobs, spans = [], []
    for log in sorted(args.logs):
        found, first, last = finished_jobs(log)
        jobs += found
        if first:
            spans.append((first, last, len(found), log.name))
    by_rule, by_cell = defaultdict(list), defaultdict(list)
    for job in jobs:
        by_rule[job["rule"]].append(job["seconds"])
        if job["rule"] == "distill":
            by_cell[(job["wildcards"]["task"], job["wildcards"]["method"])].append(job["seconds"])
    total = sum(job["seconds"] for job in jobs)
    print("log                                      start     end       jobs  minutes")
    for first, last, n, name in spans:
        print(f"{name:40s} {first:%H:%M:%S}  {last:%H:%M:%S}  {n:5d}  {(last - first).total_seconds() / 60:7.1f}")
    print(f"\n{'rule':24s} {'jobs':>5s} {'job-minutes':>12s} {'mean s':>8s}")
    for rule, seconds in sorted(by_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:24s} {len(seconds):5d} {sum(seconds) / 60:12.1f} {sum(seconds) / len(seconds):8.1f}")
    print(f"{'all':24s} {len(jobs):5d} {total / 60:12.1f}   (/{args.cores} cores = {total / 60 / args.cores:.1f} min)")
    busy = concurrency(jobs)
    span = sum(busy.values())
    print("\njobs running at once: " + ", ".join(f"{n}: {busy[n] / 60:.1f} min" for n in sorted(busy))
          + f" (of {span / 60:.1f} min from the first start to the last finish)")
    print(f"{'cells: task':16s} {'method':20s} {'jobs':>5s} {'mean s':>8s}")
    for (task, method), seconds in sorted(by_cell.items(), key=lambda kv: (kv[0][0], -sum(kv[1]))):
        print(f"{task:16s} {method:20s} {len(seconds):5d} {sum(seconds) / len(seconds):8.1f}")


if __name__ == "__main__":
    main()
