"""Every stage of the benchmark as a Python function: the command line, `torchrun` and a notebook call these.

    from xkdbench import stages
    stages.distill("workflows/config/smoke.yaml", task="reasoning", method="gkd_jsd0.9_on", fraction=1.0, seed=0,
                   data="results/smoke/data/reasoning", teacher="results/smoke/teacher/reasoning/model",
                   student="results/smoke/student_init/reasoning/seed0/model", out="/tmp/cell", evaluate=True)

A stage takes the experiment config (an `ExperimentConfig` or the path of its YAML), the names that pick
its cell and explicit input and output paths, checks everything a user can get wrong before any work
starts, and returns what it produced. Errors are `ConfigError`s naming the argument by its
command-line flag (`--teacher: ... does not exist`), so the same message serves both callers.
`xkdbench.cli` only parses arguments into these calls and prints their one-line summaries.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from xkdbench.config import ConfigError, ExperimentConfig, check_range, load_config, mixed_families, to_dict
from xkdbench.errors import NonFiniteLossError
from xkdbench.io import provenance, read_jsonl, write_json, write_jsonl, write_text
from xkdbench.registry import UnknownNameError

PathLike = str | Path
DIVERGED = "diverged"  # the status of a cell whose loss turned non-finite (see distill)


# -- shared helpers -----------------------------------------------------------------------------
def _config(config: ExperimentConfig | PathLike) -> tuple[ExperimentConfig, str | None]:
    if isinstance(config, ExperimentConfig):
        return config, None
    return load_config(config), str(config)


def _existing(path: PathLike | None, what: str) -> Path:
    if path is None or not Path(path).exists():
        raise ConfigError(f"{what}: {str(path) if path is not None else None!r} does not exist")
    return Path(path)


def _run_info(out: Path, stage: str, cfg: ExperimentConfig, arguments: dict[str, Any], **extra) -> None:
    """What produced `out`: the stage, its arguments, the resolved config and the software versions."""
    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()}
    info = {"command": stage, "arguments": plain, "config": to_dict(cfg), **provenance(), **extra}
    write_json(out / "run_info.json", info)


def load_task(cfg: ExperimentConfig, name: str, data: PathLike | None = None):
    """The config's task `name`, reading its prepared splits from `data` when given."""
    from xkdbench.tasks import get_task

    task_cfg = cfg.task(name)
    options = dict(task_cfg.options)
    if data is not None:
        options["data_dir"] = str(_existing(data, "--data"))
    try:
        return get_task(name, source=task_cfg.source, **options)
    except (ValueError, UnknownNameError) as e:
        raise ConfigError(f"config.tasks.{name}.options: {e}") from None


def runtime(cfg: ExperimentConfig, threads: int | None):
    """(device, bf16 autocast on?) for this process; under torchrun, the rank's own device."""
    from xkdbench.core.distributed import local_device
    from xkdbench.core.runtime import resolve_device, set_threads, use_bf16

    set_threads(threads)
    device = local_device(resolve_device(cfg.device))
    return device, use_bf16(cfg.precision, device)


def split_texts(task, split: str, fraction: float = 1.0):
    """(examples, prompts, targets) of a split; the train split is cut to `fraction` of the pool."""
    examples = task.records(split, fraction) if split == "train" else task.records(split)
    return examples, [task.prompt(ex) for ex in examples], [task.target(ex) for ex in examples]


def _train(stage: str, cfg: ExperimentConfig, arguments: dict, *, task_name: str, data: PathLike, out: PathLike,
           seed: int, threads: int | None, section: str, method_key: str, settings: dict, student, split: str,
           fraction: float, teacher=None, teacher_outputs: list[str] | None = None, stream: int = 0,
           teacher_cache=None) -> dict:
    """Shared by train-teacher, init-student and distill: one core, whatever is trained."""
    from xkdbench.core.data import TrainData
    from xkdbench.core.distributed import is_main_process
    from xkdbench.core.trainer import TrainSetup, train
    from xkdbench.methods import METHODS, method_config

    task_cfg = cfg.task(task_name)
    task = load_task(cfg, task_name, data)
    device, _ = runtime(cfg, threads)
    examples, prompts, targets = split_texts(task, split, fraction)
    method_cls, method_settings = METHODS.get(method_key), method_config(method_key, settings)
    oracle = None
    if method_cls.needs_oracle(method_settings):  # embedded tasks only: the config check refused the rest

        def oracle(indices: list[int], texts: list[str]) -> list[float]:
            return [task.oracle_score(examples[i], text) for i, text in zip(indices, texts, strict=True)]
    data_ = TrainData.from_texts(student, prompts, targets, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                 max_target_tokens=task_cfg.max_target_tokens, teacher_outputs=teacher_outputs)
    training = cfg.training(section, task_name)
    validation = None
    if training.validate_every:
        _, val_prompts, val_targets = split_texts(task, "validation")
        validation = TrainData.from_texts(student, val_prompts, val_targets, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                          max_target_tokens=task_cfg.max_target_tokens)
    setup = TrainSetup(
        method_cls=method_cls, method_config=method_settings, oracle=oracle,
        student=student, data=data_, training=training, seed=seed, validation=validation,
        device=device, precision=cfg.precision, teacher=teacher, sampling=cfg.sampling,
        max_new_tokens=task_cfg.max_target_tokens, stream=stream, teacher_cache=teacher_cache,
        label=f"{stage} {task_name}" + (f" {arguments['method']} f{fraction:g} seed{seed}" if "method" in arguments
                                        else f" seed{seed}"),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        _run_info(out, stage, cfg, arguments, seed=seed, task_options=task.options())
    summary = train(setup, out)
    return {**summary, "task": task_name, "method": method_key, "model": str(out / "model")}


def _sft_from_scratch(stage: str, config, *, role: str, section: str, split: str, task: str, data: PathLike,
                      tokenizer: PathLike, out: PathLike, seed: int, threads: int | None) -> dict:
    """Build the config's `role` model (teacher or student) and train it by SFT on `split`."""
    from xkdbench.models import build_model, load_tokenizer

    cfg, config_path = _config(config)
    tok = load_tokenizer(_existing(tokenizer, "--tokenizer"))
    model = build_model(getattr(cfg.models, role), tok, seed=seed)
    arguments = {"config": config_path, "task": task, "data": data, "tokenizer": tokenizer, "seed": seed,
                 "out": out, "threads": threads}
    return _train(stage, cfg, arguments, task_name=task, data=data, out=out, seed=seed, threads=threads,
                  section=section, method_key="sft", settings={}, student=model, split=split, fraction=1.0)


def samples_at(cfg: ExperimentConfig, fraction: float) -> bool:
    """Whether a cell of this data fraction is evaluated with samples (evaluation.sampled_fractions)."""
    sampled = cfg.evaluation.sampled_fractions
    return sampled is None or any(abs(fraction - f) < 1e-9 for f in sampled)


def cached_teacher_outputs(path: PathLike | None, prompts: list[str]) -> list[str]:
    """The cached teacher output of each training prompt (SeqKD data), in the prompts' order."""
    cached = {r["prompt"]: r["output"] for r in read_jsonl(_existing(path, "--teacher-outputs"))}
    missing = [p for p in prompts if p not in cached]
    if missing:
        raise ConfigError(f"--teacher-outputs: {len(missing)} training inputs have no cached teacher output "
                          f"(first: {missing[0][:80]!r}); regenerate them with `xkdbench teacher-outputs`")
    return [cached[p] for p in prompts]


def _cache_identity(cfg: ExperimentConfig, task: str, data: PathLike, teacher: PathLike, tokenizer, *,
                    teacher_outputs: PathLike | None) -> dict:
    """What a teacher cache is built from, as its manifest records it (see TeacherCache.open)."""
    from xkdbench.core.teacher_cache import file_sha256, teacher_fingerprint, tokenizer_fingerprint

    task_cfg = cfg.task(task)
    train_file = _existing(data, "--data") / "train.jsonl"
    if not train_file.is_file():
        raise ConfigError(f"--data: {data} has no train.jsonl; prepare it with `xkdbench prepare-data`")
    identity = {"teacher": teacher_fingerprint(_existing(teacher, "--teacher")),
                "tokenizer": tokenizer_fingerprint(tokenizer), "data": file_sha256(train_file),
                "max_prompt_tokens": task_cfg.max_prompt_tokens, "max_target_tokens": task_cfg.max_target_tokens}
    if teacher_outputs is not None:
        identity["teacher_outputs"] = file_sha256(_existing(teacher_outputs, "--teacher-outputs"))
    return identity


# -- the stages ---------------------------------------------------------------------------------
def check(config) -> dict:
    """Validate a config (tasks included) and return the plan the workflow builds its DAG from."""
    from xkdbench.core.teacher_cache import cache_plan, variant_uses_cache
    from xkdbench.fingerprints import fingerprints
    from xkdbench.methods import METHODS, Method, method_config

    cfg, _ = _config(config)
    for name in cfg.tasks:
        load_task(cfg, name)
    plan = {}
    for entry in cfg.methods:
        if entry.external:  # trained by its own Snakemake rule (xkdbench.external)
            from xkdbench.external import uses_teacher_outputs

            plan[entry.name] = {"method": entry.method, "rule": entry.rule, "needs_teacher": True,
                                "uses_teacher_outputs": uses_teacher_outputs(entry), "learns_reward": False,
                                "teacher_cache": False}
            continue
        cls, settings = METHODS.get(entry.method), method_config(entry.method, entry.settings)
        plan[entry.name] = {"method": entry.method, "needs_teacher": cls.needs_teacher(settings),
                            "uses_teacher_outputs": cls.uses_teacher_outputs(settings),
                            "learns_reward": cls.learned_reward.__func__ is not Method.learned_reward.__func__,
                            "teacher_cache": variant_uses_cache(cfg, entry)}
    grid = [{"task": t, "method": m, "fraction": f"{f:g}", "seed": s} for t, m, f, s in cfg.cells()]
    return {"cells": grid, "seeds": {t: cfg.task_seeds(t) for t in cfg.tasks}, "methods": plan,
            "teacher_cache": cache_plan(cfg), "fingerprints": fingerprints(cfg)}


def prepare_data(config, *, task: str, out: PathLike) -> dict:
    """Materialise a task's splits as local JSONL; returns the split sizes."""
    cfg, _ = _config(config)
    return load_task(cfg, task).prepare(out)


def train_tokenizer(config, *, task: str, data: PathLike, out: PathLike):
    """Train (or copy the config's pretrained) tokenizer for a task and save it to `out`."""
    from xkdbench.models import load_tokenizer, save_tokenizer
    from xkdbench.models import train_tokenizer as train_bpe

    cfg, _ = _config(config)
    tok_cfg = cfg.models.tokenizer
    if tok_cfg.pretrained:
        tokenizer = load_tokenizer(tok_cfg.pretrained)
    else:
        tokenizer = train_bpe(load_task(cfg, task, data).training_texts(), tok_cfg.vocab_size)
    save_tokenizer(tokenizer, out)
    return tokenizer


def train_teacher(config, *, task: str, data: PathLike, tokenizer: PathLike, out: PathLike, seed: int = 0,
                  threads: int | None = None) -> dict:
    """Train the teacher by SFT on the full train split; returns the training summary."""
    return _sft_from_scratch("train-teacher", config, role="teacher", section="teacher_training", split="train",
                             task=task, data=data, tokenizer=tokenizer, out=out, seed=seed, threads=threads)


def init_student(config, *, task: str, data: PathLike, tokenizer: PathLike, out: PathLike, seed: int = 0,
                 threads: int | None = None) -> dict:
    """Initialise a student by SFT on the warm-up split (the shared start of every cell of this seed)."""
    return _sft_from_scratch("init-student", config, role="student", section="student_init", split="warmup",
                             task=task, data=data, tokenizer=tokenizer, out=out, seed=seed, threads=threads)


def teacher_outputs(config, *, task: str, data: PathLike, teacher: PathLike, out: PathLike, seed: int = 0,
                    threads: int | None = None) -> dict:
    """Decode the train split with the teacher once (SeqKD's data) into `out` (JSONL)."""
    import torch

    from xkdbench.evaluation import decode_all
    from xkdbench.models import load_model

    cfg, _ = _config(config)
    task_cfg = cfg.task(task)
    task_ = load_task(cfg, task, data)
    device, _ = runtime(cfg, threads)
    model = load_model(_existing(teacher, "--teacher"))
    model.model.to(device)
    _, prompts, _ = split_texts(task_, "train")
    torch.manual_seed(seed)
    started = time.perf_counter()
    outputs = decode_all(model, model.encode_prompts(prompts, task_cfg.max_prompt_tokens),
                         batch_size=cfg.evaluation.batch_size, max_new_tokens=task_cfg.max_target_tokens,
                         do_sample=cfg.seqkd.decoding == "sample", temperature=cfg.seqkd.sampling_temperature,
                         progress=f"teacher-outputs {task}")
    write_jsonl(out, ({"prompt": p, "output": o[0]} for p, o in zip(prompts, outputs, strict=False)))
    return {"outputs": len(prompts), "decoding": cfg.seqkd.decoding, "seconds": time.perf_counter() - started}


def teacher_cache(config, *, task: str, data: PathLike, teacher: PathLike, out: PathLike,
                  teacher_outputs: PathLike | None = None, threads: int | None = None) -> dict:
    """The teacher's token distributions on every fixed training sequence, once per task; returns the manifest."""
    from xkdbench.core.teacher_cache import build_teacher_cache
    from xkdbench.models import load_model

    cfg, _ = _config(config)
    cache_cfg = cfg.teacher_cache
    if not cache_cfg.enabled:
        raise ConfigError("teacher_cache.mode: 'live' builds no cache; allowed here: top_k, exact (set it in the "
                          "config)")
    task_cfg = cfg.task(task)
    task_ = load_task(cfg, task, data)
    device, bf16 = runtime(cfg, threads)
    model = load_model(_existing(teacher, "--teacher"))
    _, prompts, targets = split_texts(task_, "train")
    prompt_rows = model.encode_prompts(prompts, task_cfg.max_prompt_tokens)
    rows = list(zip(prompt_rows, model.encode_targets(targets, task_cfg.max_target_tokens), strict=True))
    if teacher_outputs is not None:
        outputs = cached_teacher_outputs(teacher_outputs, prompts)
        rows += zip(prompt_rows, model.encode_targets(outputs, task_cfg.max_target_tokens), strict=True)
    # teacher_outputs: the sha256 of the outputs file, or None (a cache of the gold targets only)
    identity = {"teacher_outputs": None, **_cache_identity(cfg, task, data, teacher, model.tokenizer,
                                                           teacher_outputs=teacher_outputs)}
    top_k = cache_cfg.top_k if cache_cfg.mode == "top_k" else None  # None: exact
    return build_teacher_cache(model, rows, out, top_k=top_k, batch_size=cache_cfg.batch_size, device=device,
                               use_bf16=bf16, identity=identity)


def _open_teacher_cache(cfg: ExperimentConfig, entry, path: PathLike | None, *, task: str, data: PathLike,
                        teacher: PathLike, student, teacher_outputs: PathLike | None):
    """The verified teacher cache of a distill run, or None where the variant does not read one."""
    from xkdbench.core.teacher_cache import TeacherCache, variant_uses_cache

    uses = variant_uses_cache(cfg, entry)
    if path is None:
        if uses:
            raise ConfigError(f"--teacher-cache: required: the config's teacher_cache.mode is "
                              f"{cfg.teacher_cache.mode!r} and {entry.name} asks the teacher about fixed training "
                              "sequences; build it with `xkdbench teacher-cache`, or set teacher_cache.mode: live")
        return None
    if not cfg.teacher_cache.enabled:
        raise ConfigError("--teacher-cache: given, but the config's teacher_cache.mode is 'live'; drop the option or "
                          "set teacher_cache.mode to top_k or exact")
    if not uses:
        return None  # the variant never asks the teacher about a fixed sequence
    expect = _cache_identity(cfg, task, data, teacher, student.tokenizer, teacher_outputs=teacher_outputs)
    return TeacherCache.open(_existing(path, "--teacher-cache"), expect=expect,
                             mode=cfg.teacher_cache.mode, top_k=cfg.teacher_cache.top_k)


def distill(config, *, task: str, method: str, data: PathLike, teacher: PathLike, student: PathLike,
            out: PathLike, fraction: float = 1.0, seed: int = 0, teacher_outputs: PathLike | None = None,
            teacher_cache: PathLike | None = None, threads: int | None = None, evaluate: bool = False,
            record_divergence: bool = False) -> dict:
    """Distil one cell (task x method variant x fraction x seed) into out/model; returns the training
    summary. evaluate=True then evaluates the student into out/eval in the same process (sampling only
    at evaluation.sampled_fractions). Under torchrun every rank trains its shard and rank 0 writes.

    A loss or gradient that turns non-finite stops training (NonFiniteLossError, naming the step and the
    loss term). record_divergence=True (the workflow's setting) records that as the cell's outcome instead:
    train_summary.json and eval/metrics.json then hold {"status": "diverged", "error": ...} and no
    numbers, and the report lists the cell as diverged, not as a score. The same inputs diverge again
    on a rerun (training is deterministic), so the outcome is a result of the method and its settings."""
    from transformers import AutoConfig

    from xkdbench.core.distributed import barrier, is_main_process
    from xkdbench.methods import METHODS, SAMPLED, method_config
    from xkdbench.models import load_model

    cfg, config_path = _config(config)
    entry = cfg.method(method)
    if entry.external:
        raise ConfigError(f"--method: {method!r} is an external method, trained by the Snakemake rule "
                          f"{entry.rule!r}; run the workflow, or `cell-inputs` and that rule (README, \"Adding a method\")")
    check_range("--fraction", fraction, 0, 1, low_open=True)
    cls = METHODS.get(entry.method)
    settings = method_config(entry.method, entry.settings)
    student_model = load_model(_existing(student, "--student"))
    outputs = None
    if cls.uses_teacher_outputs(settings):
        _, prompts, _ = split_texts(load_task(cfg, task, data), "train", fraction)
        outputs = cached_teacher_outputs(teacher_outputs, prompts)
    cache = _open_teacher_cache(cfg, entry, teacher_cache, task=task, data=data, teacher=teacher,
                                student=student_model, teacher_outputs=teacher_outputs if outputs else None)
    teacher_model = None
    if cls.needs_teacher(settings):
        teacher_dir = _existing(teacher, "--teacher")
        # with the cache, a variant that asks only about fixed sequences never runs the teacher: not loaded
        if cache is None or SAMPLED in cls.teacher_sequences(settings):
            teacher_model = load_model(teacher_dir)
        teacher_family = AutoConfig.from_pretrained(str(teacher_dir)).is_encoder_decoder
        if teacher_family != student_model.is_encoder_decoder:
            family = {True: "t5 (encoder-decoder)", False: "decoder-only"}
            raise ConfigError(mixed_families("--teacher", family[teacher_family],
                                             family[student_model.is_encoder_decoder]))
    arguments = {"config": config_path, "task": task, "method": method, "fraction": fraction, "seed": seed,
                 "data": data, "teacher": teacher, "student": student, "teacher_outputs": teacher_outputs,
                 "teacher_cache": teacher_cache, "out": out, "threads": threads, "evaluate": evaluate}
    try:
        summary = _train("distill", cfg, arguments, task_name=task, data=data, out=out, seed=seed, threads=threads,
                         section="distill", method_key=entry.method, settings=entry.settings, student=student_model,
                         split="train", fraction=fraction, teacher=teacher_model, teacher_outputs=outputs,
                         stream=entry.stream, teacher_cache=cache)
    except NonFiniteLossError as error:  # every rank sees the same summed loss, so all of them stop here
        if not record_divergence:
            raise
        outcome = {"status": DIVERGED, "error": str(error), "task": task, "method": method, "fraction": fraction,
                   "seed": seed}
        if is_main_process():
            if evaluate:  # written first: train_summary.json is the rule's first output
                write_json(Path(out) / "eval" / "metrics.json", outcome)
            write_json(Path(out) / "train_summary.json", outcome)
        barrier()
        return outcome
    summary["method"] = method
    if evaluate and is_main_process():  # in the same process: a cell is one job (one interpreter start)
        with_samples = samples_at(cfg, fraction)
        summary["eval"] = evaluate_checkpoint(cfg, task=task, data=data, checkpoint=Path(out) / "model",
                                              out=Path(out) / "eval", seed=seed, teacher=teacher, threads=threads,
                                              with_samples=with_samples)
    barrier()
    return summary


def evaluate_checkpoint(config, *, task: str, data: PathLike, checkpoint: PathLike, out: PathLike, seed: int = 0,
                        teacher: PathLike | None = None, threads: int | None = None,
                        with_samples: bool = True) -> dict:
    """Evaluate a model directory: greedy (+ sampled) outputs into out/outputs.jsonl, metrics.json last.

    teacher: for the learned-reward diagnostic on teacher samples (methods that learn a reward)."""
    import torch

    from xkdbench.evaluation import evaluate
    from xkdbench.models import load_model

    cfg, config_path = _config(config)
    task_cfg = cfg.task(task)
    task_ = load_task(cfg, task, data)
    device, bf16 = runtime(cfg, threads)
    checkpoint = _existing(checkpoint, "--checkpoint")
    model = load_model(checkpoint)
    model.model.to(device)
    examples = task_.records(cfg.evaluation.split)
    if cfg.evaluation.limit:
        examples = examples[: cfg.evaluation.limit]
    evaluation = cfg.evaluation if with_samples else dataclasses.replace(cfg.evaluation, samples_per_input=0)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else None
    metrics, records = evaluate(model, task_, examples, evaluation, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                max_new_tokens=task_cfg.max_target_tokens, seed=seed, autocast=autocast)
    # The learned-reward diagnostic ranks held-out samples, so it runs where the samples are drawn
    # (evaluation.sampled_fractions); elsewhere it would sample the teacher for one greedy output each.
    reward_fn = learned_reward_of(checkpoint, model) if with_samples else None
    if reward_fn is not None and task_.has_oracle:
        metrics["learned_reward"] = _reward_diagnostic(cfg, task, task_, examples, model, reward_fn, records, device,
                                                       teacher=teacher)
    metrics.update(task=task, checkpoint=str(checkpoint), seed=seed)
    out = Path(out)
    arguments = {"config": config_path, "task": task, "data": data, "checkpoint": checkpoint, "teacher": teacher,
                 "seed": seed, "out": out, "threads": threads, "with_samples": with_samples}
    _run_info(out, "evaluate", cfg, arguments, seed=seed)
    write_jsonl(out / "outputs.jsonl", records)
    write_json(out / "metrics.json", metrics)  # written last: its presence means the evaluation finished
    return metrics


def learned_reward_of(checkpoint: Path, model):
    """The reward a method learned, if the checkpoint's method has one (see Method.learned_reward)."""
    from xkdbench.methods import METHODS, method_config
    from xkdbench.models.seq2seq import METHOD_FILE

    if not (checkpoint / METHOD_FILE).exists():
        return None
    saved = json.loads((checkpoint / METHOD_FILE).read_text())
    cls = METHODS.get(saved["method"])
    return cls.learned_reward(checkpoint, method_config(saved["method"], saved["settings"]), model)


def _reward_diagnostic(cfg, task_name, task, examples, model, reward_fn, records, device, *, teacher) -> dict:
    """Spearman(learned reward, oracle) on the student's samples and, given a teacher, the teacher's."""
    from xkdbench.evaluation import decode_all
    from xkdbench.evaluation.learned_reward import reward_oracle_correlation
    from xkdbench.models import load_model

    task_cfg = cfg.task(task_name)
    # the inputs of the diversity study (evaluation.sampled_inputs), whose samples the student already has
    examples, records = examples[:cfg.evaluation.sampled_inputs], records[:cfg.evaluation.sampled_inputs]
    outputs = {"student": [[r["greedy"], *r.get("samples", {}).get("1", [])] for r in records]}
    if teacher:
        teacher_model = load_model(_existing(teacher, "--teacher"))
        teacher_model.model.to(device)
        prompts = [teacher_model.encode_prompt(task.prompt(ex), task_cfg.max_prompt_tokens) for ex in examples]
        outputs["teacher"] = decode_all(teacher_model, prompts, batch_size=cfg.evaluation.batch_size,
                                        max_new_tokens=task_cfg.max_target_tokens, do_sample=True,
                                        num_samples=max(2, cfg.evaluation.samples_per_input))
    return reward_oracle_correlation(model, reward_fn, task, examples, outputs,
                                     max_prompt_tokens=task_cfg.max_prompt_tokens,
                                     max_target_tokens=task_cfg.max_target_tokens)


def _external_cell(cfg: ExperimentConfig, method: str, fraction: float, why: str):
    """The config entry of an external variant's cell, refusing a variant the suite trains and a bad fraction."""
    entry = cfg.method(method)
    if not entry.external:
        raise ConfigError(f"--method: {method!r} is trained by the suite (method {entry.method!r}); {why}")
    check_range("--fraction", fraction, 0, 1, low_open=True)
    return entry


def cell_inputs(config, *, task: str, method: str, data: PathLike, tokenizer: PathLike, teacher: PathLike,
                student: PathLike, out: PathLike, fraction: float = 1.0, seed: int = 0,
                teacher_outputs: PathLike | None = None) -> dict:
    """What the rule of an external variant trains one cell from (the rule contract, xkdbench.external):
    out/train.jsonl, the cell's training examples (the same an in-house cell of this fraction trains on:
    prompt, target, and teacher_output when the rule declares it), out/order.json, the suite's example
    indices of every optimiser step, and out/cell.json (written last), the paths, the entry's settings with
    the declared defaults, the distillation budget, sampling and token limits. Returns cell.json's content."""
    from transformers import AutoConfig

    from xkdbench.core.data import StepLoader
    from xkdbench.external import resolve_settings, uses_teacher_outputs

    cfg, config_path = _config(config)
    entry = _external_cell(cfg, method, fraction, "cell-inputs writes the inputs of an external method's rule")
    task_cfg = cfg.task(task)
    paths = {"data": data, "tokenizer": tokenizer, "teacher": teacher, "student": student}
    paths = {name: str(_existing(path, f"--{name}")) for name, path in paths.items()}
    _, prompts, targets = split_texts(load_task(cfg, task, data), "train", fraction)
    rows = [{"prompt": p, "target": t} for p, t in zip(prompts, targets, strict=True)]
    if uses_teacher_outputs(entry):
        for row, output in zip(rows, cached_teacher_outputs(teacher_outputs, prompts), strict=True):
            row["teacher_output"] = output
        paths["teacher_outputs"] = str(teacher_outputs)
    training = cfg.training("distill", task)
    loader = StepLoader(rows, None, batch_size=training.batch_size, grad_accum=training.grad_accum, seed=seed)
    out = Path(out)
    paths.update(examples=str(out / "train.jsonl"), order=str(out / "order.json"), config=config_path)
    write_jsonl(out / "train.jsonl", rows)
    write_text(out / "order.json", json.dumps([loader.step_indices(step) for step in range(training.steps)]) + "\n")
    family = "t5" if AutoConfig.from_pretrained(paths["student"]).is_encoder_decoder else "llama"
    cell = {"rule": entry.rule, "task": task, "method": method, "fraction": fraction, "seed": seed,
            "stream": entry.stream, "settings": resolve_settings(entry), "paths": paths, "examples": len(rows),
            "family": family, "training": dataclasses.asdict(training), "sampling": dataclasses.asdict(cfg.sampling),
            "max_prompt_tokens": task_cfg.max_prompt_tokens, "max_target_tokens": task_cfg.max_target_tokens,
            "device": cfg.device, "precision": cfg.precision}
    write_json(out / "cell.json", cell)
    return cell


def evaluate_external(config, *, task: str, method: str, data: PathLike, checkpoint: PathLike, out: PathLike,
                      fraction: float = 1.0, seed: int = 0, threads: int | None = None) -> dict:
    """Evaluate the model an external variant's rule wrote for one cell exactly as a distill job evaluates
    its student (sampled outputs only at evaluation.sampled_fractions), after checking the rule's outputs
    against the contract (xkdbench.external.check_outputs): `checkpoint` loads as a model of the student's
    family and vocabulary, and the train_summary.json beside it has the budget's steps and the seconds."""
    from xkdbench.external import check_outputs

    cfg, _ = _config(config)
    entry = _external_cell(cfg, method, fraction, "its distill job evaluates it; --method is for the cells of an "
                                                  "external method")
    checkpoint = Path(checkpoint)
    check_outputs(checkpoint, entry, cfg.training("distill", task).steps)
    with_samples = samples_at(cfg, fraction)
    return evaluate_checkpoint(cfg, task=task, data=data, checkpoint=checkpoint, out=out, seed=seed, threads=threads,
                               with_samples=with_samples)


def lm_eval(config, *, task: str, data: PathLike, checkpoint: PathLike, out: PathLike,
            threads: int | None = None) -> dict:
    """Export the task for lm-eval and score a checkpoint with `lm_eval.simple_evaluate`."""
    from xkdbench.evaluation.lm_eval_export import export_task, run_lm_eval
    from xkdbench.models import load_model

    cfg, _ = _config(config)
    task_cfg = cfg.task(task)
    task_ = load_task(cfg, task, data)
    device, _ = runtime(cfg, threads)
    model = load_model(_existing(checkpoint, "--checkpoint"))
    examples = task_.records(cfg.evaluation.split)[: cfg.evaluation.limit]
    out = Path(out)
    name = export_task(task_, model, examples, out / "lm_eval_task", max_new_tokens=task_cfg.max_target_tokens)
    scores = run_lm_eval(str(checkpoint), out / "lm_eval_task", name, family=model.family,
                         batch_size=cfg.evaluation.batch_size, device=str(device))
    write_jsonl(out / "lm_eval_outputs.jsonl", ({"index": i, "output": r} for i, r in enumerate(scores.pop("responses"))))
    write_json(out / "lm_eval_metrics.json", {"task": task, "checkpoint": str(checkpoint), **scores})
    return scores


def report(config, *, results: PathLike, out: PathLike) -> dict:
    """Aggregate a study's results into tables and figures; returns the written paths by kind."""
    from xkdbench.reporting import build_report

    cfg, _ = _config(config)
    return build_report(cfg, _existing(results, "--results"), Path(out))
