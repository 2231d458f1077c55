# Paths, the grid, and the plan. The resolved config (after any --config overrides) is written once
# to results/<name>/config.yaml and every command reads that file; the package then validates it
# (names, ranges, method settings) before any job starts, and a mistake stops the workflow here.
import json
import re
import subprocess
import sys

import yaml

NAME = config["name"]
RESULTS = f"results/{NAME}"
FIGURES = f"paper_figures/{NAME}"
TASKS = list(config["tasks"])
METHODS = [m["name"] for m in config["methods"]]
CFG = f"{RESULTS}/config.yaml"


def _write_resolved_config():
    text = yaml.safe_dump(dict(config), sort_keys=False)
    path = Path(CFG)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _plan():
    check = subprocess.run([sys.executable, "-m", "xkdbench", "check", "--config", CFG, "--json"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise WorkflowError(f"invalid config: {check.stderr.strip() or check.stdout.strip()}")
    return json.loads(check.stdout)


_write_resolved_config()
_CHECKED = _plan()
PLAN = _CHECKED["methods"]  # per variant: what it needs (teacher outputs, the teacher cache, a learned reward)
CACHE_PLAN = _CHECKED["teacher_cache"]  # per task that has a teacher cache: whether it holds teacher outputs
CELLS = _CHECKED["cells"]  # every (task, method, fraction, seed); a variant may be limited to some
TASK_SEEDS = _CHECKED["seeds"]  # per task: its training seeds (its own, else the study's)
FINGERPRINTS = _CHECKED["fingerprints"]


def settings_hash(stage):
    """A rule parameter that changes when the config values its command reads change, so Snakemake
    reruns the job (and, through newer outputs, everything downstream); see xkdbench.fingerprints."""
    if stage == "cell":
        return lambda wildcards: FINGERPRINTS["cell"][wildcards.task][wildcards.method]
    return lambda wildcards: FINGERPRINTS[stage][wildcards.task]


def teacher_outputs_flag(wildcards, input):
    return f"--teacher-outputs {input.teacher_outputs}" if "teacher_outputs" in input.keys() else ""


def variant_pattern(names):
    """A wildcard pattern matching exactly these method variant names ((?!) matches none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    task="|".join(TASKS),
    # the in-house variants (the distill rule); an external variant's cells are its rule's (external.smk)
    method=variant_pattern([n for n in METHODS if PLAN[n]["method"] != "external"]),
    fraction=r"[0-9.]+",
    seed=r"\d+",


def gpus(stage):
    """GPUs a stage's jobs ask for (config `resources`; 0 on the embedded configs)."""
    return config.get("resources", {}).get(stage, {}).get("gpus", 0)


def threads(stage):
    return config.get("resources", {}).get(stage, {}).get("threads", 1)


def processes(stage):
    """Processes (torchrun ranks) a stage's training job runs as: config resources.<stage>.processes."""
    return config.get("resources", {}).get(stage, {}).get("processes", 1)


def launcher(stage):
    """The command that starts a stage's job: `xkdbench`, or torchrun with one rank per process."""
    n = processes(stage)
    return "xkdbench" if n == 1 else f"torchrun --standalone --nproc_per_node {n} -m xkdbench"


def rank_threads(stage):
    """CPU threads of each process of a job (its `threads` shared among its processes)."""
    return max(1, threads(stage) // processes(stage))


def mem_mb(stage):
    return config.get("resources", {}).get(stage, {}).get("mem_mb", 2000)


def runtime(stage):
    return config.get("resources", {}).get(stage, {}).get("runtime", 60)
