"""Mutation scores of the modules this benchmark's conclusions rest on, one command (README "Testing").

For each module group below, a copy of the checkout is made under `--workdir` (default `.mutation/`),
given its own mutmut configuration (the files to mutate and the fast tests that own them), and
`mutmut run` mutates it there: each mutant runs only the tests that called the mutated function in
mutmut's traced run. The working tree is never touched. A second run of this script reuses each
group's finished mutants (mutmut keeps their results), so an interrupted run continues; `--retest` traces
the tests again and tests the earlier survivors again, after tests were added.

Prints per group: mutants, killed (a failing test or a timeout), equivalent (listed with a reason in
`tests/mutation_equivalent.yaml`), out of reach (listed in `tests/mutation_out_of_reach.yaml`: code that
only runs on another device or in another process, which imports the unmutated package; each entry
names the test that covers it there), survived, the score = killed / (mutants - equivalent - out of
reach), and minutes. Then every survivor that is in neither list, which is a missing test. mutmut's own progress goes
to `<workdir>/mutmut.log`.

    python benchmarks/mutation_scores.py                      # every group (hours on 2 cores)
    python benchmarks/mutation_scores.py stats claims metrics # some groups
"""
from __future__ import annotations

import argparse
import functools
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]

# group -> (files to mutate, the fast tests that own them). Markers that start other processes
# (torchrun, the workflow) are left out: those processes import the unmutated package.
GROUPS = {
    "losses": (["xkdbench/losses/*"], ["tests/losses/"]),
    # methods: with the core's tests, which train every method through the core (accumulation invariance,
    # resume, the teacher cache's readers): a method's step-token accounting is checked only there
    "methods": (["xkdbench/methods/*"], ["tests/methods/", "tests/core/"]),
    # core: with MiniLLM's tests (mixture sampling), the sampling settings' tests of the methods and the
    # oracle-labelled preference pairs (the core's oracle plumbing)
    "core": (["xkdbench/core/*"], ["tests/core/", "tests/methods/test_minillm.py",
                                   "tests/methods/test_methods_independent.py",
                                   "tests/methods/test_oracle_labels.py"]),
    "stats": (["xkdbench/reporting/stats.py"], ["tests/reporting/"]),
    "claims": (["xkdbench/reporting/claims.py"], ["tests/reporting/"]),
    "metrics": (["xkdbench/tasks/metrics.py"], ["tests/tasks/", "tests/evaluation/"]),
}
MARKERS = "not slow and not slurm and not faults and not distributed and not gpu"
RESULT = re.compile(r"^\s+(\S+): (.+)$")
KILLED = ("killed", "timeout")  # a mutant that makes a test fail or hang is caught


def checkout_files() -> list[str]:
    """The files of this checkout that git tracks or would track (not the ignored build outputs)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def prepare(group: str, workdir: Path) -> Path:
    """A copy of the checkout for one group, with that group's mutmut configuration."""
    only, tests = GROUPS[group]
    copy = workdir / group
    copy.mkdir(parents=True, exist_ok=True)
    for name in checkout_files():
        if name in ("setup.cfg",) or name.startswith("mutants/"):
            continue
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != (ROOT / name).read_bytes():
            shutil.copy2(ROOT / name, target)
    lines = ["[mutmut]", "source_paths = xkdbench/", "also_copy = benchmarks/",
             "process_isolation = forkserver", "use_git_change_detection = false",
             "only_mutate =", *(f"    {p}" for p in only),
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -m", f"    {MARKERS}", "    -p", "    no:cacheprovider"]
    (copy / "setup.cfg").write_text("\n".join(lines) + "\n")
    return copy


def mutmut_run(copy: Path, names: list[str], children: int, log, check: bool = True) -> None:
    """`mutmut run` in a group's copy (only the named mutants, if any), its progress appended to log."""
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names],
                   cwd=copy, check=check, stdout=log, stderr=subprocess.STDOUT)


def run_group(copy: Path, children: int, sample: int | None, retest: bool, listed: dict,
              log) -> dict[str, str]:
    """Test a group's mutants (all, or a seeded sample of them) and return {mutant name: status}.

    mutmut keeps earlier verdicts; with `retest`, the mutants that were not killed, and that no list
    entry describes (`still_listed`), are tested again against today's tests (after tests were added)."""
    if retest:  # the map of which tests reach which function is from the first traced run: tests added
        # since then would never run against the mutants, so mutmut traces the tests again
        (copy / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    # (re)generate the mutants of files changed since the last run (their verdicts start over) and trace
    # the tests if needed, without testing any mutant yet
    mutmut_run(copy, ["xkdbench.no_such_mutant"], children, log, check=False)
    everything = results(copy)
    chosen = sorted(everything) if sample is None else \
        sorted(random.Random(0).sample(sorted(everything), min(sample, len(everything))))
    unchecked = {n: s for n, s in everything.items() if n in set(chosen) and s != "not checked"}
    excused = set(still_listed(copy, unchecked, listed)[0])
    survivors = [n for n, s in unchecked.items() if s not in KILLED and n not in excused]
    if retest and survivors:
        # first: a changed configuration makes mutmut drop every verdict, and the pass below redoes them
        mutmut_run(copy, survivors, children, log)
    untested = [n for n, s in results(copy).items() if n in set(chosen) and s == "not checked"]
    if untested:
        mutmut_run(copy, [] if sample is None else untested, children, log)
    return {n: s for n, s in results(copy).items() if n in set(chosen)}


@functools.cache  # a survivor is looked up once per list, and `mutmut show` takes about a second
def signature(copy: Path, name: str) -> str:
    """A mutant's mutated line(s) as `mutmut show` prints them, stripped and joined by ' | ' (the removed
    lines, after 'deleted: ', for a mutant that only removes): what an entry's `mutant` field holds."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=copy, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    added = [line[1:].strip() for line in out if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:].strip() for line in out if line.startswith("-") and not line.startswith("---")]
    return " | ".join(added) if added else "deleted: " + " | ".join(removed)


def still_listed(copy: Path, status: dict[str, str], listed: dict) -> tuple[list[str], list[str]]:
    """The surviving mutants a list entry describes, and the entries that describe none of them.

    A survivor is listed when an entry for the same function records its mutated line. The match is by
    line, not by mutmut's number: a changed function renumbers its mutants, so a number may come to name
    another mutant (then it must not be excused) and a listed mutant may get another number."""
    lines = {(function_of(name), entry["mutant"]) for name, entry in listed.items()}
    current = [name for name, state in status.items()
               if state not in KILLED and (function_of(name), signature(copy, name)) in lines]
    stale = [name for name in listed if name in status and status[name] not in KILLED and name not in current]
    return current, stale


def function_of(mutant: str) -> str:
    """The mutated function's name in a mutant's name (<module>.x_<function>__mutmut_<n>)."""
    return mutant.rsplit("__mutmut_", 1)[0]


def results(copy: Path) -> dict[str, str]:
    """mutant name -> status, as `mutmut results --all true` prints them."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=copy,
                         check=True, capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for line in out.splitlines() if (m := RESULT.match(line))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"some of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".mutation")
    parser.add_argument("--retest", action="store_true",
                        help="test the survivors of an earlier run again (after adding tests)")
    parser.add_argument("--sample", type=int, default=None,
                        help="test a seeded random sample of this many mutants per group: an estimate of the score "
                             "with its 95%% interval, for groups too large to mutate whole in one sitting")
    args = parser.parse_args()
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; allowed: {', '.join(GROUPS)}")
    args.groups = args.groups or list(GROUPS)
    equivalent = yaml.safe_load((ROOT / "tests/mutation_equivalent.yaml").read_text()) or {}
    out_of_reach = yaml.safe_load((ROOT / "tests/mutation_out_of_reach.yaml").read_text()) or {}

    rows, missing = [], []
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = open(args.workdir / "mutmut.log", "a")  # mutmut's progress (it redraws one line)
    for group in args.groups:
        started = time.time()
        copy = prepare(group, args.workdir)
        status = run_group(copy, args.children, args.sample, args.retest, {**equivalent, **out_of_reach}, log)
        minutes = (time.time() - started) / 60
        killed = sum(s in KILLED for s in status.values())
        equiv, stale = still_listed(copy, status, equivalent)
        reach, stale_reach = still_listed(copy, status, out_of_reach)
        survivors = [(n, s) for n, s in status.items()
                     if s not in KILLED and n not in equiv and n not in reach]
        survivors = [(n, f"{s} (its list entry's `mutant` line no longer matches: re-check it)"
                      if n in stale + stale_reach else s) for n, s in survivors]
        missing += survivors
        scored = len(status) - len(equiv) - len(reach)
        score = f"{100 * killed / scored:5.1f}%" if scored else "  -  "
        if args.sample and scored:  # a sample's score is an estimate: its exact 95% binomial interval
            ci = stats.binomtest(killed, scored).proportion_ci(0.95)
            score += f" [{100 * ci.low:.0f}, {100 * ci.high:.0f}]"
        rows.append((group, len(status), killed, len(equiv), len(reach), len(survivors), score, minutes))

    print(f"{'group':<9} {'mutants':>7} {'killed':>6} {'equiv':>5} {'reach':>5} {'survived':>8} {'score':>6} "
          f"{'minutes':>7}")
    for group, total, killed, equiv, reach, survived, score, minutes in rows:
        print(f"{group:<9} {total:>7} {killed:>6} {equiv:>5} {reach:>5} {survived:>8} {score:>6} {minutes:>7.1f}")
    if missing:
        print("\nsurvivors in neither tests/mutation_equivalent.yaml nor tests/mutation_out_of_reach.yaml:")
        for name, state in missing:
            print(f"  {name}: {state}")


if __name__ == "__main__":
    main()
