"""What each workflow stage reads from the study config, as a short hash per job.

The workflow passes a job's fingerprint as a rule parameter. Snakemake reruns a job whose parameters
changed (its default `params` rerun trigger), and a rerun job's newer outputs rerun everything
downstream (the `mtime` trigger). So editing the config recomputes exactly the stages that read the
edited settings: a new distillation budget reruns the cells and the report but no teacher, a new
teacher size reruns the teacher and every cell of its task. Settings a stage does not read (the
report section, other tasks, other method variants) leave its jobs alone.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from xkdbench.config import ExperimentConfig


def _task_limits(cfg: ExperimentConfig, task: str) -> dict:
    t = cfg.tasks[task]
    return {"max_prompt_tokens": t.max_prompt_tokens, "max_target_tokens": t.max_target_tokens}


def _cache_settings(cfg: ExperimentConfig) -> dict:
    """The teacher cache's settings that change its contents (k means nothing in exact mode)."""
    cache = cfg.teacher_cache
    return {"mode": cache.mode, **({"top_k": cache.top_k} if cache.mode == "top_k" else {})}


def stage_settings(cfg: ExperimentConfig, stage: str, task: str, method: str | None = None) -> dict:
    """The config values the command of `stage` reads for `task` (and method variant `method`)."""
    asdict = dataclasses.asdict
    t = cfg.tasks[task]
    if stage == "data":
        return {"source": t.source, "options": t.options}
    if stage == "tokenizer":
        return asdict(cfg.models.tokenizer)
    numerics = {"precision": cfg.precision, **_task_limits(cfg, task)}
    if stage == "teacher":
        return {"model": asdict(cfg.models.teacher), "training": asdict(cfg.training("teacher_training", task)),
                **numerics}
    if stage == "teacher_outputs":
        return {"seqkd": asdict(cfg.seqkd), **numerics}
    if stage == "teacher_cache":
        return {"teacher_cache": _cache_settings(cfg), "batch_size": cfg.teacher_cache.batch_size, **numerics}
    if stage == "student_init":
        return {"model": asdict(cfg.models.student), "training": asdict(cfg.training("student_init", task)),
                **numerics}
    if stage == "evaluate":
        return {"evaluation": asdict(cfg.evaluation), **numerics}
    if stage == "cell":
        from xkdbench.core.teacher_cache import variant_uses_cache

        entry = cfg.method(method)
        settings = {"method": entry.method, "settings": entry.settings, "stream": entry.stream,
                    "training": asdict(cfg.training("distill", task)), "sampling": asdict(cfg.sampling),
                    "evaluation": asdict(cfg.evaluation), **numerics}
        if variant_uses_cache(cfg, entry):  # top-k changes the loss; other cells never read the cache
            settings["teacher_cache"] = _cache_settings(cfg)
        if entry.external:  # its rule, and its settings with the rule's declared defaults
            from xkdbench.external import resolve_settings

            settings.update(rule=entry.rule, settings=resolve_settings(entry))
        return settings
    raise ValueError(f"unknown stage {stage!r}")


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(cfg: ExperimentConfig) -> dict:
    """{stage: {task: hash}}, for "cell" {task: {method variant: hash}}, and one hash for "report"."""
    stages = ("data", "tokenizer", "teacher", "teacher_outputs", "teacher_cache", "student_init", "evaluate")
    out = {stage: {task: fingerprint(stage_settings(cfg, stage, task)) for task in cfg.tasks} for stage in stages}
    out["cell"] = {task: {m.name: fingerprint(stage_settings(cfg, "cell", task, m.name)) for m in cfg.methods}
                   for task in cfg.tasks}
    study = dataclasses.asdict(cfg)
    for entry in study["methods"]:  # an in-house entry names no rule: its hash stays what it was before rules
        if entry.get("rule") is None:
            entry.pop("rule", None)
    for task in study["tasks"].values():  # likewise a task without its own seeds
        if task.get("seeds") is None:
            task.pop("seeds", None)
    out["report"] = fingerprint(study)  # the report reads the whole study
    return out
