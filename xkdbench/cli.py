"""`xkdbench <subcommand>`: every stage of the benchmark as one shell line.

Each subcommand takes the experiment config, the names that pick its cell (task, method, fraction,
seed) and explicit input and output paths, so a Snakemake rule is one line. Everything a user can get
wrong (config, names, values, missing files) is checked before any work starts; errors name the field
and the allowed values and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xkdbench.config import ConfigError, ExperimentConfig, check_range, load_config, mixed_families, to_dict
from xkdbench.io import provenance, read_jsonl, write_json, write_jsonl
from xkdbench.registry import UnknownNameError

TEACHER_OUTPUTS_DECODING = "teacher outputs"


# -- shared helpers -----------------------------------------------------------------------------
def _existing(path: str | None, what: str) -> Path:
    if path is None or not Path(path).exists():
        raise ConfigError(f"{what}: {path!r} does not exist")
    return Path(path)


def _run_info(out: Path, cfg: ExperimentConfig, args: argparse.Namespace, **extra) -> None:
    info = {"command": args.command, "arguments": {k: v for k, v in vars(args).items() if k != "func"},
            "config": to_dict(cfg), **provenance(), **extra}
    write_json(out / "run_info.json", info)


def _task(cfg: ExperimentConfig, name: str, data_dir: str | None = None):
    from xkdbench.tasks import get_task

    task_cfg = cfg.task(name)
    options = dict(task_cfg.options)
    if data_dir is not None:
        options["data_dir"] = str(_existing(data_dir, "--data"))
    try:
        return get_task(name, source=task_cfg.source, **options)
    except (ValueError, UnknownNameError) as e:
        raise ConfigError(f"config.tasks.{name}.options: {e}") from None


def _runtime(cfg: ExperimentConfig, threads: int | None):
    from xkdbench.core.runtime import resolve_device, set_threads, use_bf16

    set_threads(threads)
    device = resolve_device(cfg.device)
    return device, use_bf16(cfg.precision, device)


def _texts(task, split: str, fraction: float = 1.0):
    examples = task.records(split, fraction) if split == "train" else task.records(split)
    return examples, [task.prompt(ex) for ex in examples], [task.target(ex) for ex in examples]


def _train(args, cfg, *, section: str, method_key: str, settings: dict, student, split: str, fraction: float,
           teacher=None, teacher_outputs: list[str] | None = None, stream: int = 0, teacher_cache=None) -> dict:
    """Shared by train-teacher, init-student and distill: one core, whatever is trained."""
    from xkdbench.core.data import TrainData
    from xkdbench.core.trainer import TrainSetup, train
    from xkdbench.methods import METHODS, method_config

    task_cfg = cfg.task(args.task)
    task = _task(cfg, args.task, args.data)
    device, _ = _runtime(cfg, args.threads)
    _, prompts, targets = _texts(task, split, fraction)
    data = TrainData.from_texts(student, prompts, targets, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                max_target_tokens=task_cfg.max_target_tokens, teacher_outputs=teacher_outputs)
    training = cfg.training(section, args.task)
    validation = None
    if training.validate_every:
        _, val_prompts, val_targets = _texts(task, "validation")
        validation = TrainData.from_texts(student, val_prompts, val_targets, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                          max_target_tokens=task_cfg.max_target_tokens)
    setup = TrainSetup(
        method_cls=METHODS.get(method_key), method_config=method_config(method_key, settings),
        student=student, data=data, training=training, seed=args.seed, validation=validation,
        device=device, precision=cfg.precision, teacher=teacher, sampling=cfg.sampling,
        max_new_tokens=task_cfg.max_target_tokens, stream=stream, teacher_cache=teacher_cache,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _run_info(out, cfg, args, seed=args.seed, task_options=task.options())
    summary = train(setup, out)
    print(f"{args.command}: {args.task} {method_key} {len(data)} examples, {summary['steps']} steps in "
          f"{summary['seconds']:.1f}s, {summary['teacher_forward_sequences']} teacher forward passes, "
          f"{summary['teacher_cache_sequences']} from the teacher cache -> {out / 'model'}")
    return summary


def _cached_teacher_outputs(path: str | None, prompts: list[str]) -> list[str]:
    """The cached teacher output of each training prompt (SeqKD data), in the prompts' order."""
    cached = {r["prompt"]: r["output"] for r in read_jsonl(_existing(path, "--teacher-outputs"))}
    missing = [p for p in prompts if p not in cached]
    if missing:
        raise ConfigError(f"--teacher-outputs: {len(missing)} training inputs have no cached teacher output "
                          f"(first: {missing[0][:80]!r}); regenerate them with `xkdbench teacher-outputs`")
    return [cached[p] for p in prompts]


def _cache_identity(args, cfg: ExperimentConfig, tokenizer, *, with_teacher_outputs: bool) -> dict:
    """What a teacher cache is built from, as its manifest records it (see TeacherCache.open)."""
    from xkdbench.core.teacher_cache import file_sha256, teacher_fingerprint, tokenizer_fingerprint

    task_cfg = cfg.task(args.task)
    train_file = _existing(args.data, "--data") / "train.jsonl"
    if not train_file.is_file():
        raise ConfigError(f"--data: {args.data} has no train.jsonl; prepare it with `xkdbench prepare-data`")
    identity = {"teacher": teacher_fingerprint(_existing(args.teacher, "--teacher")),
                "tokenizer": tokenizer_fingerprint(tokenizer), "data": file_sha256(train_file),
                "max_prompt_tokens": task_cfg.max_prompt_tokens, "max_target_tokens": task_cfg.max_target_tokens}
    if with_teacher_outputs:
        identity["teacher_outputs"] = file_sha256(_existing(args.teacher_outputs, "--teacher-outputs"))
    return identity


# -- subcommands --------------------------------------------------------------------------------
def cmd_tasks(args) -> None:
    from xkdbench.tasks import get_task, task_names

    for name in task_names():
        task = get_task(name)
        print(f"{name:15s} headline metric: {task.headline_metric}")


def cmd_methods(args) -> None:
    from xkdbench.methods import METHODS

    for name in METHODS.names():
        cls = METHODS.get(name)
        paper = f"{cls.paper.title} (arXiv {cls.paper.arxiv})" if cls.paper else ""
        print(f"{name:18s} {paper}")


def cmd_check(args) -> None:
    from xkdbench.methods import METHODS, Method, method_config

    cfg = load_config(args.config)
    for name in cfg.tasks:
        _task(cfg, name)
    cells = cfg.cells()
    if args.json:  # what the workflow needs to know to build the DAG
        import json

        plan = {}
        for entry in cfg.methods:
            cls, settings = METHODS.get(entry.method), method_config(entry.method, entry.settings)
            plan[entry.name] = {"method": entry.method, "needs_teacher": cls.needs_teacher(settings),
                                "uses_teacher_outputs": cls.uses_teacher_outputs(settings),
                                "learns_reward": cls.learned_reward.__func__ is not Method.learned_reward.__func__}
        from xkdbench.core.teacher_cache import cache_plan, variant_uses_cache
        from xkdbench.fingerprints import fingerprints

        for entry in cfg.methods:
            plan[entry.name]["teacher_cache"] = variant_uses_cache(cfg, entry)
        grid = [{"task": t, "method": m, "fraction": f"{f:g}", "seed": s} for t, m, f, s in cells]
        print(json.dumps({"cells": grid, "methods": plan, "teacher_cache": cache_plan(cfg),
                          "fingerprints": fingerprints(cfg)}))
        return
    limited = sum(m.limited for m in cfg.methods)
    note = f" ({limited} of the variants limited to some tasks or fractions)" if limited else ""
    print(f"{args.config}: valid; {len(cfg.tasks)} tasks x {len(cfg.methods)} methods x "
          f"{len(cfg.fractions)} fractions x {len(cfg.seeds)} seeds{note}: {len(cells)} cells")


def cmd_prepare_data(args) -> None:
    cfg = load_config(args.config)
    task = _task(cfg, args.task)
    sizes = task.prepare(args.out)
    print(f"prepare-data: {args.task} ({cfg.task(args.task).source}) -> {args.out}: {sizes}")


def cmd_train_tokenizer(args) -> None:
    from xkdbench.models import load_tokenizer, save_tokenizer, train_tokenizer

    cfg = load_config(args.config)
    tok_cfg = cfg.models.tokenizer
    if tok_cfg.pretrained:
        tokenizer = load_tokenizer(tok_cfg.pretrained)
    else:
        task = _task(cfg, args.task, args.data)
        tokenizer = train_tokenizer(task.training_texts(), tok_cfg.vocab_size)
    save_tokenizer(tokenizer, args.out)
    print(f"train-tokenizer: {args.task} vocabulary {len(tokenizer)} -> {args.out}")


def _sft_from_scratch(args, *, role: str, section: str, split: str) -> None:
    """Build the config's `role` model (teacher or student) and train it by SFT on `split`."""
    from xkdbench.models import build_model, load_tokenizer

    cfg = load_config(args.config)
    tokenizer = load_tokenizer(_existing(args.tokenizer, "--tokenizer"))
    model = build_model(getattr(cfg.models, role), tokenizer, seed=args.seed)
    _train(args, cfg, section=section, method_key="sft", settings={}, student=model, split=split, fraction=1.0)


def cmd_train_teacher(args) -> None:
    _sft_from_scratch(args, role="teacher", section="teacher_training", split="train")


def cmd_init_student(args) -> None:
    _sft_from_scratch(args, role="student", section="student_init", split="warmup")


def cmd_teacher_outputs(args) -> None:
    from xkdbench.evaluation import decode_all
    from xkdbench.models import load_model

    cfg = load_config(args.config)
    task_cfg = cfg.task(args.task)
    task = _task(cfg, args.task, args.data)
    device, bf16 = _runtime(cfg, args.threads)
    teacher = load_model(_existing(args.teacher, "--teacher"))
    teacher.model.to(device)
    _, prompts, _ = _texts(task, "train")
    import torch

    torch.manual_seed(args.seed)
    sample = cfg.seqkd.decoding == "sample"
    started = time.perf_counter()
    outputs = decode_all(teacher, teacher.encode_prompts(prompts, task_cfg.max_prompt_tokens),
                         batch_size=cfg.evaluation.batch_size, max_new_tokens=task_cfg.max_target_tokens,
                         do_sample=sample, temperature=cfg.seqkd.sampling_temperature)
    write_jsonl(args.out, ({"prompt": p, "output": o[0]} for p, o in zip(prompts, outputs, strict=False)))
    print(f"teacher-outputs: {len(prompts)} {cfg.seqkd.decoding} outputs in {time.perf_counter() - started:.1f}s -> {args.out}")


def cmd_teacher_cache(args) -> None:
    from xkdbench.core.teacher_cache import build_teacher_cache
    from xkdbench.models import load_model

    cfg = load_config(args.config)
    cache_cfg = cfg.teacher_cache
    if not cache_cfg.enabled:
        raise ConfigError("teacher_cache.mode: 'live' builds no cache; allowed here: top_k, exact (set it in the "
                          "config)")
    task_cfg = cfg.task(args.task)
    task = _task(cfg, args.task, args.data)
    device, bf16 = _runtime(cfg, args.threads)
    teacher = load_model(_existing(args.teacher, "--teacher"))
    _, prompts, targets = _texts(task, "train")
    prompt_rows = teacher.encode_prompts(prompts, task_cfg.max_prompt_tokens)
    rows = list(zip(prompt_rows, teacher.encode_targets(targets, task_cfg.max_target_tokens), strict=True))
    with_outputs = args.teacher_outputs is not None
    if with_outputs:
        outputs = _cached_teacher_outputs(args.teacher_outputs, prompts)
        rows += zip(prompt_rows, teacher.encode_targets(outputs, task_cfg.max_target_tokens), strict=True)
    # teacher_outputs: the sha256 of the outputs file, or None (a cache of the gold targets only)
    identity = {"teacher_outputs": None,
                **_cache_identity(args, cfg, teacher.tokenizer, with_teacher_outputs=with_outputs)}
    top_k = cache_cfg.top_k if cache_cfg.mode == "top_k" else None  # None: exact
    manifest = build_teacher_cache(teacher, rows, args.out, top_k=top_k, batch_size=cache_cfg.batch_size,
                                   device=device, use_bf16=bf16, identity=identity)
    megabytes = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
    print(f"teacher-cache: {args.task} {manifest['mode']} (k={manifest['top_k']}), {manifest['rows']} sequences, "
          f"{manifest['positions']} positions, {megabytes:.1f} MB ({manifest['bytes_per_position']:.0f} bytes per "
          f"token) in {manifest['seconds']:.1f}s -> {args.out}")


def _teacher_cache_for(args, cfg: ExperimentConfig, entry, student, *, with_teacher_outputs: bool):
    """The verified teacher cache of a distill run, or None where the variant does not read one."""
    from xkdbench.core.teacher_cache import TeacherCache, variant_uses_cache

    uses = variant_uses_cache(cfg, entry)
    if args.teacher_cache is None:
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
    expect = _cache_identity(args, cfg, student.tokenizer, with_teacher_outputs=with_teacher_outputs)
    return TeacherCache.open(_existing(args.teacher_cache, "--teacher-cache"), expect=expect,
                             mode=cfg.teacher_cache.mode, top_k=cfg.teacher_cache.top_k)


def cmd_distill(args) -> None:
    from transformers import AutoConfig

    from xkdbench.methods import METHODS, SAMPLED, method_config
    from xkdbench.models import load_model

    cfg = load_config(args.config)
    entry = cfg.method(args.method)
    check_range("--fraction", args.fraction, 0, 1, low_open=True)
    cls = METHODS.get(entry.method)
    settings = method_config(entry.method, entry.settings)
    student = load_model(_existing(args.student, "--student"))
    teacher_outputs = None
    if cls.uses_teacher_outputs(settings):
        task = _task(cfg, args.task, args.data)
        _, prompts, _ = _texts(task, "train", args.fraction)
        teacher_outputs = _cached_teacher_outputs(args.teacher_outputs, prompts)
    cache = _teacher_cache_for(args, cfg, entry, student, with_teacher_outputs=teacher_outputs is not None)
    teacher = None
    if cls.needs_teacher(settings):
        teacher_dir = _existing(args.teacher, "--teacher")
        # with the cache, a variant that asks only about fixed sequences never runs the teacher: not loaded
        if cache is None or SAMPLED in cls.teacher_sequences(settings):
            teacher = load_model(teacher_dir)
        teacher_family = AutoConfig.from_pretrained(str(teacher_dir)).is_encoder_decoder
        if teacher_family != student.is_encoder_decoder:
            family = {True: "t5 (encoder-decoder)", False: "decoder-only"}
            raise ConfigError(mixed_families("--teacher", family[teacher_family],
                                             family[student.is_encoder_decoder]))
    _train(args, cfg, section="distill", method_key=entry.method, settings=entry.settings, student=student,
           split="train", fraction=args.fraction, teacher=teacher, teacher_outputs=teacher_outputs,
           stream=entry.stream, teacher_cache=cache)
    if args.evaluate:  # in the same process: a cell is one job (one interpreter start, not two)
        sampled = cfg.evaluation.sampled_fractions
        with_samples = sampled is None or any(abs(args.fraction - f) < 1e-9 for f in sampled)
        _evaluate_checkpoint(args, cfg, Path(args.out) / "model", Path(args.out) / "eval", with_samples=with_samples)


def cmd_evaluate(args) -> None:
    cfg = load_config(args.config)
    _evaluate_checkpoint(args, cfg, Path(args.checkpoint), Path(args.out), with_samples=True)


def _evaluate_checkpoint(args, cfg: ExperimentConfig, checkpoint: Path, out: Path, *, with_samples: bool) -> None:
    import dataclasses

    import torch

    from xkdbench.evaluation import evaluate
    from xkdbench.models import load_model

    task_cfg = cfg.task(args.task)
    task = _task(cfg, args.task, args.data)
    device, bf16 = _runtime(cfg, args.threads)
    model = load_model(_existing(str(checkpoint), "--checkpoint"))
    model.model.to(device)
    examples = task.records(cfg.evaluation.split)
    if cfg.evaluation.limit:
        examples = examples[: cfg.evaluation.limit]
    evaluation = cfg.evaluation if with_samples else dataclasses.replace(cfg.evaluation, samples_per_input=0)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else None
    metrics, records = evaluate(model, task, examples, evaluation, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                max_new_tokens=task_cfg.max_target_tokens, seed=args.seed, autocast=autocast)
    # The learned-reward diagnostic ranks held-out samples, so it runs where the samples are drawn
    # (evaluation.sampled_fractions); elsewhere it would sample the teacher for one greedy output each.
    reward_fn = _learned_reward(checkpoint, model) if with_samples else None
    if reward_fn is not None and task.has_oracle:
        metrics["learned_reward"] = _reward_diagnostic(args, cfg, task, examples, model, reward_fn, records, device)
    metrics.update(task=args.task, checkpoint=str(checkpoint), seed=args.seed)
    _run_info(out, cfg, args, seed=args.seed)
    write_jsonl(out / "outputs.jsonl", records)
    write_json(out / "metrics.json", metrics)  # written last: its presence means the evaluation finished
    print(f"evaluate: {args.task} {task.headline_metric}={metrics['headline']:.4g}"
          + (f" oracle={metrics['greedy']['oracle']:.3f}" if "oracle" in metrics["greedy"] else "") + f" -> {out}")


def _learned_reward(checkpoint: Path, model):
    """The reward a method learned, if the checkpoint's method has one (see Method.learned_reward)."""
    import json

    from xkdbench.methods import METHODS, method_config
    from xkdbench.models.seq2seq import METHOD_FILE

    if not (checkpoint / METHOD_FILE).exists():
        return None
    saved = json.loads((checkpoint / METHOD_FILE).read_text())
    cls = METHODS.get(saved["method"])
    return cls.learned_reward(checkpoint, method_config(saved["method"], saved["settings"]), model)


def _reward_diagnostic(args, cfg, task, examples, model, reward_fn, records, device) -> dict:
    """Spearman(learned reward, oracle) on the student's samples and, given --teacher, the teacher's."""
    from xkdbench.evaluation import decode_all
    from xkdbench.evaluation.learned_reward import reward_oracle_correlation
    from xkdbench.models import load_model

    task_cfg = cfg.task(args.task)
    # the inputs of the diversity study (evaluation.sampled_inputs), whose samples the student already has
    examples, records = examples[:cfg.evaluation.sampled_inputs], records[:cfg.evaluation.sampled_inputs]
    outputs = {"student": [[r["greedy"], *r.get("samples", {}).get("1", [])] for r in records]}
    if args.teacher:
        teacher = load_model(_existing(args.teacher, "--teacher"))
        teacher.model.to(device)
        prompts = [teacher.encode_prompt(task.prompt(ex), task_cfg.max_prompt_tokens) for ex in examples]
        outputs["teacher"] = decode_all(teacher, prompts, batch_size=cfg.evaluation.batch_size,
                                        max_new_tokens=task_cfg.max_target_tokens, do_sample=True,
                                        num_samples=max(2, cfg.evaluation.samples_per_input))
    return reward_oracle_correlation(model, reward_fn, task, examples, outputs,
                                     max_prompt_tokens=task_cfg.max_prompt_tokens,
                                     max_target_tokens=task_cfg.max_target_tokens)


def cmd_lm_eval(args) -> None:
    from xkdbench.evaluation.lm_eval_export import export_task, run_lm_eval
    from xkdbench.models import load_model

    cfg = load_config(args.config)
    task_cfg = cfg.task(args.task)
    task = _task(cfg, args.task, args.data)
    device, _ = _runtime(cfg, args.threads)
    model = load_model(_existing(args.checkpoint, "--checkpoint"))
    examples = task.records(cfg.evaluation.split)[: cfg.evaluation.limit]
    out = Path(args.out)
    name = export_task(task, model, examples, out / "lm_eval_task", max_new_tokens=task_cfg.max_target_tokens)
    scores = run_lm_eval(args.checkpoint, out / "lm_eval_task", name, family=model.family,
                         batch_size=cfg.evaluation.batch_size, device=str(device))
    write_jsonl(out / "lm_eval_outputs.jsonl", ({"index": i, "output": r} for i, r in enumerate(scores.pop("responses"))))
    write_json(out / "lm_eval_metrics.json", {"task": args.task, "checkpoint": str(args.checkpoint), **scores})
    print(f"lm-eval: {args.task} " + " ".join(f"{k}={v:.4g}" for k, v in scores.items()) + f" -> {out}")


def cmd_report(args) -> None:
    from xkdbench.reporting import build_report

    cfg = load_config(args.config)
    paths = build_report(cfg, _existing(args.results, "--results"), Path(args.out))
    written = sum(len(v) for v in paths.values())
    print(f"report: {written} files -> {args.out}")


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xkdbench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, func, help: str, *options: str):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        specs = {
            "config": (["--config"], dict(required=True, help="experiment YAML (e.g. workflows/config/smoke.yaml)")),
            "task": (["--task"], dict(required=True, help="task name (see `xkdbench tasks`)")),
            "data": (["--data"], dict(required=True, help="prepared data directory (from prepare-data)")),
            "tokenizer": (["--tokenizer"], dict(required=True, help="tokenizer directory (from train-tokenizer)")),
            "teacher": (["--teacher"], dict(required=True, help="teacher checkpoint directory")),
            "teacher_optional": (["--teacher"], dict(default=None, help="teacher checkpoint, for the learned-reward "
                                                   "diagnostic on teacher samples (methods that learn a reward)")),
            "student": (["--student"], dict(required=True, help="initial student checkpoint directory")),
            "method": (["--method"], dict(required=True, help="method variant name from the config's methods")),
            "fraction": (["--fraction"], dict(type=float, default=1.0, help="share of the distillation pool (0, 1]")),
            "teacher_outputs": (["--teacher-outputs"], dict(default=None, help="cached teacher outputs (JSONL)")),
            "teacher_cache": (["--teacher-cache"], dict(default=None, help="the task's teacher cache directory "
                                                        "(from teacher-cache; when the config's teacher_cache is on)")),
            "checkpoint": (["--checkpoint"], dict(required=True, help="model directory to evaluate")),
            "seed": (["--seed"], dict(type=int, default=0, help="random seed (default 0)")),
            "out": (["--out"], dict(required=True, help="output path")),
            "threads": (["--threads"], dict(type=int, default=None, help="CPU threads for torch")),
            "results": (["--results"], dict(required=True, help="the study's results directory")),
            "evaluate": (["--evaluate"], dict(action="store_true", help="then evaluate the distilled student "
                                              "into OUT/eval (sampling only at evaluation.sampled_fractions)")),
            "json": (["--json"], dict(action="store_true", help="print the plan as JSON")),
        }
        for option in options:
            flags, kwargs = specs[option]
            p.add_argument(*flags, **kwargs)

    add("tasks", cmd_tasks, "list the tasks")
    add("methods", cmd_methods, "list the methods")
    add("check", cmd_check, "validate an experiment config and print the grid size (--json: the plan)",
        "config", "json")
    add("prepare-data", cmd_prepare_data, "materialise a task's splits as local JSONL", "config", "task", "out")
    add("train-tokenizer", cmd_train_tokenizer, "train (or copy a pretrained) tokenizer for a task",
        "config", "task", "data", "out")
    add("train-teacher", cmd_train_teacher, "train the teacher by SFT on the full train split",
        "config", "task", "data", "tokenizer", "seed", "out", "threads")
    add("teacher-outputs", cmd_teacher_outputs, "decode the train split with the teacher once (SeqKD data)",
        "config", "task", "data", "teacher", "seed", "out", "threads")
    add("teacher-cache", cmd_teacher_cache, "the teacher's token distributions on every fixed training sequence, "
        "once per task (config teacher_cache)", "config", "task", "data", "teacher", "teacher_outputs", "out", "threads")
    add("init-student", cmd_init_student, "initialise a student by SFT on the warmup split",
        "config", "task", "data", "tokenizer", "seed", "out", "threads")
    add("distill", cmd_distill, "distil one cell (task x method x fraction x seed)",
        "config", "task", "method", "fraction", "seed", "data", "teacher", "student", "teacher_outputs",
        "teacher_cache", "out", "threads", "evaluate")
    add("evaluate", cmd_evaluate, "evaluate a checkpoint: greedy + sampled outputs, metrics.json",
        "config", "task", "data", "checkpoint", "teacher_optional", "seed", "out", "threads")
    add("lm-eval", cmd_lm_eval, "export the task for lm-eval and score a checkpoint with lm_eval.simple_evaluate",
        "config", "task", "data", "checkpoint", "out", "threads")
    add("report", cmd_report, "aggregate a study's results into tables and figures", "config", "results", "out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        args.func(args)
    except (ConfigError, UnknownNameError, FileNotFoundError) as e:
        print(f"xkdbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
