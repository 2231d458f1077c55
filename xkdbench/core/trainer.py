"""The one training loop every method runs through (teacher SFT and student init included).

Read top to bottom: set up, resume if a checkpoint exists, then per optimiser step
  1. the method builds its micro-batches (gold, cached teacher outputs, or fresh samples),
  2. the per-token loss of each micro-batch is masked and divided by the token count of the WHOLE
     step (global token normalisation: accumulation never changes the loss),
  3. clip, step, schedule, log, checkpoint.
The final student is saved as a Hugging Face directory; method modules are saved beside it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xkdbench.config import SamplingConfig, TrainingConfig
from xkdbench.core import distributed
from xkdbench.core.context import Oracle, TrainContext
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.core.runtime import rng_state, seed_everything, set_rng_state, use_bf16
from xkdbench.core.teacher_cache import TeacherCache
from xkdbench.errors import ConfigError, NonFiniteLossError
from xkdbench.integrity import usable_checkpoint
from xkdbench.io import atomic_path, write_json, write_jsonl
from xkdbench.methods.base import Method
from xkdbench.methods.common import token_nll
from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import Seq2SeqLM, eval_mode
from xkdbench.progress import Progress

CHECKPOINT = "checkpoint"
FINAL = "model"
LOG = "train_log.jsonl"
SUMMARY = "train_summary.json"


@dataclass
class TrainSetup:
    method_cls: type[Method]
    method_config: Any
    student: Seq2SeqLM
    data: TrainData
    training: TrainingConfig
    seed: int
    device: torch.device
    precision: str = "auto"
    teacher: Seq2SeqLM | None = None
    sampling: SamplingConfig | None = None
    max_new_tokens: int = 64  # length limit of on-policy samples (the task's max_target_tokens)
    validation: TrainData | None = None  # gold validation pairs, for training.validate_every
    stream: int = 0  # the variant's random-stream offset (config `stream`; the A/A control differs in it)
    teacher_cache: TeacherCache | None = None  # the teacher's answers on the fixed training sequences
    oracle: Oracle | None = None  # the task's oracle on the training examples, for methods that need it
    label: str = "train"  # names the run in its progress lines (xkdbench.progress)


def lr_factor(step: int, cfg: TrainingConfig) -> float:
    """Linear warm-up, then constant, linear or cosine decay to zero at cfg.steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return max(0.0, 1.0 - progress) if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def backward_step(method: Method, micro: list[Batch]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Accumulate the gradient of one optimiser step over its micro-batches.

    Each micro-batch's masked token sum is divided by the target-token count of the WHOLE step (on all
    ranks of a distributed run), so the gradient is the token mean over the step however it is split.
    Returns that count and the detached token sums of each loss term on this rank (for logging, without
    a host sync here).
    """
    step_tokens = distributed.sum_over_ranks(sum(b.target_mask.sum() for b in micro)).clamp(min=1)
    term_totals: dict[str, torch.Tensor] = {}
    for batch in micro:
        terms = method.loss(batch)  # name -> (B, T)
        mask = batch.target_mask.to(torch.float32)
        masked = {name: (t.float() * mask).sum() for name, t in terms.items()}
        (sum(masked.values()) / step_tokens).backward()
        for name, value in masked.items():
            term_totals[name] = term_totals.get(name, 0) + value.detach()
    return step_tokens, term_totals


def check_finite(step: int, names: list[str], totals: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Stop at the first step whose loss terms or gradient norm are not finite, naming the culprit.

    One host sync per step: the price of never applying (or checkpointing) a NaN update."""
    values = torch.cat([totals.float(), grad_norm.float().reshape(1).to(totals.device)])
    if bool(torch.isfinite(values).all()):
        return
    for name, value in zip([*names, "gradient norm"], values.tolist(), strict=True):
        if not math.isfinite(value):
            what = f"loss term {name!r}" if name != "gradient norm" else "the gradient norm (every loss term finite)"
            raise NonFiniteLossError(f"step {step}: {what} is {value}; the update was not applied and the cell "
                                     "stopped (lower training.lr or loss settings, or check the inputs)")


def _global_counts(ctx: TrainContext, device: torch.device) -> dict[str, int]:
    """The run's cost counters summed over the ranks (a collective: every rank calls it together)."""
    names = ("generated_tokens", "teacher_forward_sequences", "teacher_cache_sequences")
    counts = distributed.sum_over_ranks(torch.stack([getattr(ctx, n).to(device) for n in names]))
    return dict(zip(names, (int(c) for c in counts.tolist()), strict=True))


def read_log(path: Path, *, up_to_step: int | None = None) -> list[dict]:
    """The training log's records (up to a step); a line cut short by an interruption is dropped."""
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if up_to_step is None or record["step"] <= up_to_step:
                records.append(record)
    return records


@torch.no_grad()
def validation_nll(model: Seq2SeqLM, data: TrainData, *, batch_size: int, device: torch.device) -> float:
    """Mean gold-token NLL of `model` on `data` (the same measure for every method)."""
    total, count = torch.zeros(()), torch.zeros(())
    with eval_mode(model.model):
        for start in range(0, len(data), batch_size):
            batch = model.collate(data.prompts[start:start + batch_size], data.targets[start:start + batch_size]).to(device)
            nll = token_nll(model.target_logits(batch), batch.target_ids)  # (B, T)
            total += (nll * batch.target_mask).sum().cpu()
            count += batch.target_mask.sum().cpu()
    return float(total / count.clamp(min=1))


def train(setup: TrainSetup, out_dir: str | Path, *, stop_after: int | None = None) -> dict:
    """Train and save to out_dir/model; resumes from out_dir/checkpoint when present.

    stop_after: end (with a checkpoint) after this many optimiser steps; used to test resume.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = setup.training
    ranks, main = distributed.world_size(), distributed.is_main_process()
    if cfg.batch_size % ranks:
        raise ConfigError(f"training.batch_size: {cfg.batch_size} does not split over {ranks} processes; allowed: a "
                          f"multiple of {ranks} (each process takes an equal share of every micro-batch)")
    if setup.method_cls.needs_oracle(setup.method_config) and setup.oracle is None:
        raise ConfigError(f"{setup.method_cls.__name__} with these settings scores its training texts with the task's "
                          "oracle, and this run has none (embedded tasks have one; TrainSetup.oracle)")
    seed_everything(setup.seed)
    student, teacher = setup.student, setup.teacher
    student.model.to(setup.device)
    if teacher is not None:
        teacher.model.to(setup.device).eval().requires_grad_(False)
    if setup.teacher_cache is not None:  # every fixed sequence must hit, or the run silently goes live
        setup.teacher_cache.check_covers(setup.data.prompts, setup.data.targets, "gold targets")
        if setup.data.teacher_outputs is not None:
            setup.teacher_cache.check_covers(setup.data.prompts, setup.data.teacher_outputs, "teacher outputs")
    ctx = TrainContext(student, teacher, setup.sampling or SamplingConfig(), max_new_tokens=setup.max_new_tokens,
                       device=setup.device, use_bf16=use_bf16(setup.precision, setup.device), seed=setup.seed,
                       total_steps=cfg.steps, validate_every=cfg.validate_every if setup.validation is not None else 0,
                       stream=setup.stream, teacher_cache=setup.teacher_cache, oracle=setup.oracle)
    with ctx.random_stream("modules"):  # a method's modules draw their initialisation from their own stream
        method = setup.method_cls(setup.method_config, ctx)
    modules = {"student": student.model, **method.trainable_modules()}
    for module in modules.values():  # eval mode = dropout off; gradients flow the same
        module.to(setup.device).train(not cfg.disable_dropout)
    distributed.broadcast_parameters(list(modules.values()))
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    loader = StepLoader(setup.data, student, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, seed=setup.seed)

    # counted on the device, so a step never waits for the host (read only when logging)
    start_step, elapsed, tokens = 0, 0.0, torch.zeros((), dtype=torch.long, device=setup.device)
    log_path = out_dir / LOG
    distributed.barrier()  # the checkpoint is read by every rank: none may still be writing it
    if usable_checkpoint(out_dir / CHECKPOINT):  # a damaged one is reported and deleted: the run starts over
        state = torch.load(out_dir / CHECKPOINT / "trainer_state.pt", weights_only=False)
        saved_student = type(student.model).from_pretrained(out_dir / CHECKPOINT / FINAL)
        student.model.load_state_dict(saved_student.state_dict())
        for name, module in modules.items():
            if name != "student":
                module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        ctx.rng.setstate(state["ctx_rng"])
        ctx.sampling_calls = state["sampling_calls"]
        if main:  # the saved counters are sums over the ranks: counted once
            ctx.teacher_forward_sequences += state["teacher_forward_sequences"]
            ctx.teacher_cache_sequences += state.get("teacher_cache_sequences", 0)
            ctx.generated_tokens += state["generated_tokens"]
        tokens += state["tokens"].to(setup.device)
        rank_states = state.get("rng_ranks", [state["rng"]])
        if len(rank_states) != ranks:
            raise ConfigError(f"{out_dir / CHECKPOINT}: written by {len(rank_states)} process(es); resume it with "
                              f"the same number, or delete it to start over with {ranks}")
        set_rng_state(rank_states[distributed.rank()])
        start_step, elapsed = state["step"], state["elapsed"]
        if main:  # drop log lines written after the checkpoint: they will be written again
            write_jsonl(log_path, read_log(log_path, up_to_step=start_step))
    elif log_path.exists() and main:
        log_path.unlink()

    def save_checkpoint(step: int) -> None:
        counts = _global_counts(ctx, setup.device)  # collectives first, on every rank
        rank_states = distributed.gather_objects(rng_state())
        if not main:
            distributed.barrier()
            return
        with atomic_path(out_dir / CHECKPOINT) as tmp:
            tmp.mkdir()
            student.model.save_pretrained(tmp / FINAL)  # a Hugging Face directory, loadable as is
            torch.save({
                "step": step, "elapsed": elapsed + time.perf_counter() - t0,
                "modules": {n: m.state_dict() for n, m in modules.items() if n != "student"},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "method": method.state_dict(), "ctx_rng": ctx.rng.getstate(),
                "sampling_calls": ctx.sampling_calls, "rng": rank_states[0],
                **({"rng_ranks": rank_states} if ranks > 1 else {}),
                "tokens": tokens.clone(),
                **{name: torch.tensor(value) for name, value in counts.items()},
            }, tmp / "trainer_state.pt")
        distributed.barrier()

    t0 = time.perf_counter()
    end_step = cfg.steps if stop_after is None else min(cfg.steps, start_step + stop_after)
    progress = Progress(setup.label, cfg.steps, start=start_step, enabled=main)
    with open(log_path if main else os.devnull, "a", encoding="utf-8") as log:  # rank 0 writes the log
        for step in range(start_step, end_step):
            micro = [method.sequences(examples.to(setup.device), step) for examples in loader.step_examples(step)]
            optimizer.zero_grad(set_to_none=True)
            step_tokens, term_totals = backward_step(method, micro)
            distributed.sum_gradients(params)
            names = list(term_totals)
            totals = distributed.sum_over_ranks(torch.stack([term_totals[n].float() for n in names]))
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            check_finite(step + 1, names, totals, grad_norm)
            optimizer.step()
            scheduler.step()
            tokens += step_tokens
            done = step + 1
            validate_now = bool(cfg.validate_every and setup.validation is not None and done % cfg.validate_every == 0)
            if done % cfg.log_every == 0 or done == cfg.steps or validate_now:
                record = {"step": done, "loss": float(sum(totals.unbind()) / step_tokens)}
                record.update({name: float(v / step_tokens) for name, v in zip(names, totals, strict=True)})
                record.update({"lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                               "tokens": int(tokens), **_global_counts(ctx, setup.device),
                               "seconds": round(elapsed + time.perf_counter() - t0, 3)})
                if validate_now:
                    record["validation_nll"] = validation_nll(student, setup.validation, batch_size=4 * cfg.batch_size,
                                                              device=setup.device)
                    method.on_validation(done, record["validation_nll"])
                log.write(json.dumps(record) + "\n")
                log.flush()
            if progress.enabled and (progress.due() or done == end_step):  # the loss's host sync: only to print
                progress.update(done, loss=float(sum(totals.unbind()) / step_tokens))
            if done < cfg.steps and (done % cfg.checkpoint_every == 0 or done == end_step):
                save_checkpoint(done)

    if end_step < cfg.steps:
        return {"stopped_at": end_step}
    seconds = elapsed + time.perf_counter() - t0
    summary = {
        "steps": cfg.steps, "seconds": round(seconds, 3), "tokens": int(tokens), **_global_counts(ctx, setup.device),
        "examples": len(setup.data), "student_parameters": student.num_parameters(),
        **({"processes": ranks} if ranks > 1 else {}),
    }
    if main:
        extra = {name: m for name, m in modules.items() if name != "student"}
        student.save(out_dir / FINAL, extra_modules=extra,
                     method={"method": setup.method_cls.key, "settings": dataclasses.asdict(setup.method_config)})
        write_json(out_dir / SUMMARY, summary)
        shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)  # the final model supersedes it
    distributed.barrier()
    return summary
