"""This suite's GKD against TRL's GKDTrainer, side by side in one process.

    pip install -e ".[bench]"     # TRL, pinned (pyproject.toml, extra `bench`)
    python benchmarks/vs_trl.py --steps 30 --warmup 3 --settings on,off --threads 1
    python benchmarks/vs_trl.py --settings off --teacher-cache top_k   # off-policy as the study runs it

Both trainers run in the same process, one after the other, per setting: on-policy (lambda 1, every step
trains on the student's own samples) and off-policy (lambda 0, every step on the gold targets). Printed
per setting: steps per second of each over the `--steps` steps after `--warmup` untimed ones (from the
start of step warmup + 1 to the start of the step after the last timed one, so neither the trainers' set-up
nor the suite's final save is timed), the wall and CPU seconds per step and the ratio suite / TRL of both,
the seconds per step spent sampling, the first and last loss of each, and on-policy the mean sampled
length of each. With one thread the CPU time is the work done, which other jobs on a loaded machine
stretch far less than the wall time; --rounds N runs each trainer N times (alternating which goes
first) and prints median timings. Exit status 1 if a check fails:
  - each trainer's loss falls (last step below the first);
  - on-policy, the mean sampled lengths agree within --length-tolerance (relative);
  - off-policy, the first step's losses agree (same weights, same batch) within --first-loss-tolerance
    (with the live teacher or the exact teacher cache; a top-k cache changes the loss by design).

What is the same on both sides
  - the models: the config's student and teacher (default: llama d_model 64 / 2 layers / 2 heads / d_ff 256
    and d_model 128 / 4 / 4 / 512), built once with fixed seeds, saved to a temporary directory and
    loaded from there by each run, so every run starts from the same weights. The teacher is left at its
    initialisation unless --teacher-steps gives it that many SFT steps (the suite's loop) first: the
    benchmark measures the training loops, not a distillation result, but a trained teacher gives the
    losses a realistic size and the student a reason to stop before max_new_tokens;
  - the data: the first --examples training pairs of the config's task (embedded translation), tokenised
    once by the suite (prompt tokens + BOS separator, target tokens + EOS, at most max_prompt_tokens /
    max_target_tokens), and served in the same order: TRL's dataset holds the suite loader's examples
    step by step and is read sequentially (train_sampling_strategy="sequential"), so step k of both
    trainers sees the same 16 examples;
  - batch 16, no gradient accumulation, AdamW (beta 0.9/0.999, eps 1e-8, no weight decay) at the config's
    distillation learning rate held constant (no warm-up, no decay: the suite's schedules and the
    Trainer's differ in their first step), gradient clipping at norm 1, fp32, dropout off, one thread;
  - the divergence: JSD(beta) at the loss temperature 1, per target token, averaged over the step's target
    tokens;
  - sampling: at most max_new_tokens (the task's max_target_tokens, 50) new tokens, temperature 1 (the
    config's sampling temperature), top-k off, top-p 1, KV cache on, everything after the first EOS
    masked (the EOS itself carries loss). The suite samples with its lean KV-cached decoder
    (xkdbench/models/lean_decode.py, the same decoding rules as `generate`) where it supports the model,
    TRL with Hugging Face `generate`; --suite-decoder hf makes the suite use `generate` too, which
    leaves the training loops themselves to compare (the "sampler" column says which one ran).

The beta mapping. TRL 1.16's GKDTrainer.generalized_jsd_loss mixes m = beta p + (1 - beta) q (teacher p,
student q) and weighs beta KL(p || m) + (1 - beta) KL(q || m); beta 0 is forward KL(p || q), beta 1 reverse
KL(q || p). That is this suite's JSD(beta) (`xkdbench/losses/jsd.py`), so the mapping is the identity:
TRL beta = suite beta = 0.9. (TRL <= 0.15 mixed with 1 - beta; no beta maps onto that form except 0.5.)
`trl_beta` refuses a TRL older than 0.16, and the test `tests/losses/test_vs_trl.py` checks that both
losses agree on the same logits and on the same batch.

TRL defaults overridden here, because they would make the comparison unfair or unlike the suite:
  gradient_checkpointing (TRL default on: recomputes activations and samples without the KV cache),
  bf16 (on by default, autocast also on the CPU), optim (adamw_torch_fused by default with torch >= 2.8;
  the suite's torch.optim.AdamW is the unfused one), learning_rate (2e-5), temperature (0.9), max_new_tokens
  (128), lr_scheduler_type (linear decay), the random sampler, logging every 10 steps, saving, reporting to
  trackers and the progress bar. Dropout: TRL's disable_dropout (default on) zeroes the dropout
  probabilities, the suite trains in eval mode; the llama models here have no dropout either way.

The teacher cache (--teacher-cache exact or top_k, off by default). The suite's off-policy cells in a study read
the teacher's distributions on the fixed training sequences from the task's teacher cache (README, "Teacher
cache"), built once per task and shared by every off-policy variant and seed, so they do no teacher forward
pass. With this option the benchmark builds that cache for its examples before the runs (untimed; its build
seconds are printed, the cost a study pays once per task) and the suite's run reads it, as the study's
cells do. TRL has no such cache: its off-policy step runs the teacher. On-policy steps train on fresh samples,
which no cache holds, so the option changes only the off-policy setting.

What still differs, by design of each trainer:
  - padding: the suite left-pads prompts and right-pads targets (prompt and target kept apart, position
    ids counted over real tokens); TRL's own collator (DataCollatorForChatML, fed pre-tokenised rows with a
    completion mask instead of chat "messages": the tokenizer trained here has no chat template) left-pads
    the whole prompt + target sequence and passes no position ids. The token sequences are the same; the
    positions are shifted by the padding, which rotary embeddings do not see (only relative positions
    enter attention), so the logits agree up to rounding. TRL's gold batches are at most as wide as the
    suite's prompt + target width (the longest sequence rather than the longest prompt plus the longest
    target);
  - which positions the loss covers: TRL computes the JSD at every position of the sequence (prompt and
    padding included) and masks afterwards; the suite computes it on the target positions only. Both
    models' forward passes cover all positions;
  - the on-policy normalisation: the Trainer counts the gold target tokens of the batch
    (`num_items_in_batch`) before TRL replaces the batch with the student's samples, and TRL divides the
    sampled tokens' summed JSD by that count. Its loss (and gradient) is scaled by sampled tokens / gold
    tokens, over 2x here, where the untrained student rarely stops before 50 tokens (the factor is
    printed). The losses shown for TRL are corrected to the mean over the sampled tokens; its training is
    left as is (clipping at norm 1 and Adam make the step nearly independent of that scale);
  - sampling mode: TRL samples in train mode (dropout off), the suite in eval mode; the random streams
    differ, so the samples differ (their lengths are compared, not the tokens);
  - the coin: TRL draws `random.random() <= lmbda` per step, the suite `rng.random() < fraction`; at
    lambda 0 and 1 both are deterministic.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xkdbench.config import SamplingConfig, TrainingConfig, load_config
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.core.runtime import set_threads
from xkdbench.core.teacher_cache import TeacherCache, build_teacher_cache
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.gkd import GKD, GKDConfig
from xkdbench.models import build_model, load_model, train_tokenizer
from xkdbench.tasks import get_task

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKDTrainer lives in trl.experimental since TRL 1.0
try:
    import trl
    from packaging.version import Version
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl.experimental.gkd import GKDConfig as TRLGKDConfig
    from trl.experimental.gkd import GKDTrainer
    from trl.experimental.utils import DataCollatorForChatML
except ImportError as error:  # pragma: no cover - the benchmark's own dependency
    raise SystemExit(f"benchmarks/vs_trl.py needs TRL: pip install -e '.[bench]' ({error})") from None

SETTINGS = {"on": 1.0, "off": 0.0}  # setting -> lambda (the student data fraction)


def trl_beta(beta: float) -> float:
    """TRL's GKDConfig.beta for this suite's JSD(beta): the same number from TRL 0.16 on (module docstring)."""
    if Version(trl.__version__) < Version("0.16"):
        raise RuntimeError(f"TRL {trl.__version__} mixes the JSD with 1 - beta (before PR #3043); use TRL >= 0.16")
    return beta


def trl_rows(data: TrainData, indices: list[int]) -> list[dict]:
    """The suite's tokenised examples as rows for TRL's DataCollatorForChatML, in the order given.

    input_ids are the prompt (with its separator) followed by the target (with its EOS); the completion
    mask marks the target, so the collator takes the prompt boundary from it and never re-tokenises
    (its `prompt` text is then unused, but the collator reads the key)."""
    rows = []
    for i in indices:
        prompt, target = data.prompts[i], data.targets[i]
        rows.append({"prompt": "", "input_ids": prompt + target, "completion_mask": [0] * len(prompt) + [1] * len(target)})
    return rows


def trl_collator(tokenizer) -> DataCollatorForChatML:
    """TRL's default GKD collator (the one GKDTrainer builds when given none)."""
    return DataCollatorForChatML(tokenizer=tokenizer)


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): with one thread the CPU time is the work done, which other
    jobs on a loaded machine stretch far less than the wall time."""
    return time.perf_counter(), time.process_time()


WALL, CPU = 0, 1


@dataclass
class Record:
    """What one run measured: step start times, per-step loss and sampling cost."""

    marks: list[tuple[float, float]] = field(default_factory=list)  # clock() at the start of each step
    loss_sums: list[torch.Tensor] = field(default_factory=list)  # summed per-token JSD of each step
    loss_tokens: list[torch.Tensor] = field(default_factory=list)  # tokens it was summed over
    reported: list[torch.Tensor] = field(default_factory=list)  # the loss the trainer itself trained on
    sampling: dict[int, tuple[float, float]] = field(default_factory=dict)  # step -> (wall, CPU) s sampling
    sampled_tokens: list[torch.Tensor] = field(default_factory=list)
    sampled_rows: int = 0
    threads: int = 0
    decoder: str = "hf"  # what sampled: Hugging Face generate, or the suite's lean decoder

    def mark(self) -> None:
        if not self.marks:
            self.threads = torch.get_num_threads()
        self.marks.append(clock())

    def losses(self) -> list[float]:
        return [float(s / n.clamp(min=1)) for s, n in zip(self.loss_sums, self.loss_tokens, strict=True)]

    def seconds_per_step(self, warmup: int, steps: int, kind: int = WALL) -> float:
        return (self.marks[warmup + steps][kind] - self.marks[warmup][kind]) / steps

    def sampling_per_step(self, warmup: int, steps: int, kind: int = WALL) -> float:
        """Seconds per timed step spent sampling."""
        return sum(self.sampling[s][kind] for s in range(warmup, warmup + steps) if s in self.sampling) / steps

    def mean_sampled_length(self) -> float | None:
        if not self.sampled_rows:
            return None
        return float(sum(self.sampled_tokens)) / self.sampled_rows


# -- the suite -----------------------------------------------------------------------------------
def suite_decoder(model) -> str:
    """How the suite's `Seq2SeqLM.generate` samples from `model`: "lean" (xkdbench.models.lean_decode) or "hf"."""
    try:
        from xkdbench.models import lean_decode
    except ImportError:
        return "hf"
    return "lean" if getattr(model, "decoder", "hf") == "lean" and lean_decode.supports(model.model) else "hf"


def recording_gkd(record: Record) -> type[GKD]:
    """The suite's GKD, recording step starts, the loss and the sampling time into `record`."""

    class RecordingGKD(GKD):
        def sequences(self, examples, step):
            record.mark()  # after the loader collated the step's batch
            started = clock()
            batch = super().sequences(examples, step)
            if self.on_policy(step):
                record.sampling[step] = tuple(b - a for a, b in zip(started, clock(), strict=True))
                record.sampled_tokens.append(batch.target_mask.sum())
                record.sampled_rows += batch.size
            return batch

        def loss(self, batch):
            terms = super().loss(batch)
            mask = batch.target_mask.to(torch.float32)
            record.loss_sums.append(sum((t.detach().float() * mask).sum() for t in terms.values()))
            record.loss_tokens.append(mask.sum())
            record.reported.append(record.loss_sums[-1] / record.loss_tokens[-1].clamp(min=1))
            return terms

    return RecordingGKD


def run_suite(fixture: Fixture, fraction: float, total_steps: int, args) -> Record:
    record = Record()
    student, teacher = load_model(fixture.student_dir), load_model(fixture.teacher_dir)
    if args.suite_decoder != "default":
        student.decoder = args.suite_decoder
    record.decoder = suite_decoder(student)
    training = dataclasses.replace(
        fixture.training, steps=total_steps, grad_accum=1, schedule="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, log_every=total_steps, checkpoint_every=10**9, validate_every=0, disable_dropout=True,
    )
    setup = TrainSetup(
        method_cls=recording_gkd(record),
        method_config=GKDConfig(divergence="jsd", beta=args.beta, student_data_fraction=fraction),
        student=student, data=fixture.data, training=training, seed=args.seed, device=torch.device("cpu"),
        precision="fp32", teacher=teacher, sampling=fixture.sampling, max_new_tokens=fixture.max_new_tokens,
        teacher_cache=fixture.teacher_cache,
    )
    with tempfile.TemporaryDirectory() as out:  # the final model is saved after the timed steps
        train(setup, out)
    return record


# -- TRL -----------------------------------------------------------------------------------------
class RecordingGKDTrainer(GKDTrainer):
    """TRL's GKDTrainer, recording the loss (and the token counts to correct it) and the sampling time."""

    record: Record

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        valid = (inputs["labels"][:, 1:] != -100).sum()  # the tokens TRL summed over
        divisor = num_items_in_batch if num_items_in_batch is not None else valid
        self.record.reported.append(loss.detach())
        self.record.loss_sums.append(loss.detach().float() * divisor)
        self.record.loss_tokens.append(valid)
        return out

    def generate_on_policy_outputs(self, model, inputs, generation_config):
        started = clock()
        ids, mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
        self.record.sampling[self.state.global_step] = tuple(b - a for a, b in zip(started, clock(), strict=True))
        self.record.sampled_tokens.append((labels != -100).sum())
        self.record.sampled_rows += labels.shape[0]
        return ids, mask, labels


class StepMarks(TrainerCallback):
    def __init__(self, record: Record):
        self.record = record

    def on_step_begin(self, args, state, control, **kwargs):  # after the dataloader collated the batch
        self.record.mark()


def trl_config(out_dir: str, fraction: float, total_steps: int, fixture: Fixture, args) -> TRLGKDConfig:
    training = fixture.training
    # transformers 5 renamed gradient_checkpointing (TRL's default: on) to activation_checkpointing
    names = {f.name for f in dataclasses.fields(TRLGKDConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return TRLGKDConfig(
        output_dir=out_dir, max_steps=total_steps, per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=1, learning_rate=training.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        optim="adamw_torch", bf16=False, fp16=False, use_cpu=True, **{checkpointing: False},
        lmbda=fraction, beta=trl_beta(args.beta), temperature=fixture.sampling.sampling_temperature,
        max_new_tokens=fixture.max_new_tokens, disable_dropout=True, seq_kd=False,
        seed=args.seed, train_sampling_strategy="sequential", dataloader_num_workers=0,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
    )


def run_trl(fixture: Fixture, fraction: float, total_steps: int, args) -> Record:
    from datasets import Dataset

    record = Record()
    student = AutoModelForCausalLM.from_pretrained(fixture.student_dir, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(fixture.teacher_dir, dtype=torch.float32)
    batch = fixture.training.batch_size
    loader = StepLoader(fixture.data, None, batch_size=batch, grad_accum=1, seed=args.seed)
    order = loader._indices(0, total_steps * batch)  # the suite's examples, step by step
    dataset = Dataset.from_list(trl_rows(fixture.data, order))
    with tempfile.TemporaryDirectory() as out:
        trainer = RecordingGKDTrainer(
            model=student, teacher_model=teacher, args=trl_config(out, fraction, total_steps, fixture, args),
            train_dataset=dataset, processing_class=fixture.tokenizer, data_collator=trl_collator(fixture.tokenizer),
            callbacks=[StepMarks(record)],
        )
        trainer.record = record
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training summary
        check_trl_setup(trainer)
        trainer.train()
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        if type(optimizer) is not torch.optim.AdamW or optimizer.defaults.get("fused"):
            raise RuntimeError(f"TRL trained with {type(optimizer).__name__} {optimizer.defaults}, not the unfused AdamW")
    return record


def checkpointing_on(model) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5, 4
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def check_trl_setup(trainer: GKDTrainer) -> None:
    """The overridden defaults took effect (they are easy to lose in a TRL or transformers upgrade)."""
    args, generation = trainer.args, trainer.generation_config
    problems = [what for what, bad in (
        ("gradient checkpointing is on", args.gradient_checkpointing or checkpointing_on(trainer.model)),
        ("bf16/fp16 autocast is on", args.bf16 or args.fp16),
        ("sampling without the KV cache", not generation.use_cache),
        ("sampling temperature", generation.temperature != args.temperature),
        ("sampling with top-k", generation.top_k not in (0, None)),
        ("no EOS for sampling", generation.eos_token_id is None),
        ("dtype is not fp32", next(trainer.model.parameters()).dtype != torch.float32),
    ) if bad]
    if problems:
        raise RuntimeError("TRL's setup differs from the suite's: " + "; ".join(problems))


# -- the shared fixture --------------------------------------------------------------------------
@dataclass
class Fixture:
    student_dir: Path
    teacher_dir: Path
    tokenizer: object
    data: TrainData
    training: TrainingConfig
    sampling: SamplingConfig
    max_new_tokens: int
    teacher_cache: TeacherCache | None = None


def add_teacher_cache(fixture: Fixture, directory: Path, mode: str, top_k: int) -> Fixture:
    """Build the teacher's cache on the fixture's examples (as the workflow's teacher_cache rule does for a
    task: eval mode, fp32 here, batches of 64) and open it, verified, for the suite's runs."""
    identity = {"teacher": "vs_trl fixture", "tokenizer": "vs_trl fixture", "data": "vs_trl fixture",
                "max_prompt_tokens": None, "max_target_tokens": None, "teacher_outputs": None}
    rows = list(zip(fixture.data.prompts, fixture.data.targets, strict=True))
    manifest = build_teacher_cache(load_model(fixture.teacher_dir), rows, directory, top_k=top_k if mode == "top_k" else None,
                                   batch_size=64, device=torch.device("cpu"), use_bf16=False, identity=identity)
    print(f"teacher cache ({mode}{f' k={top_k}' if mode == 'top_k' else ''}): {manifest['rows']} rows, "
          f"{manifest['positions']} positions, {manifest['bytes_per_position']:.0f} bytes per position, "
          f"built in {manifest['seconds']:.1f}s (once per task in a study; not timed below)")
    cache = TeacherCache.open(directory, expect={k: v for k, v in identity.items() if k != "teacher_outputs"},
                              mode=mode, top_k=top_k, where="--teacher-cache")
    return dataclasses.replace(fixture, teacher_cache=cache)


def build_fixture(args, directory: Path) -> Fixture:
    """Tokenizer, data and initial weights, built once; both trainers load the weights from `directory`."""
    cfg = load_config(args.config)
    task_cfg = cfg.task(args.task)
    task = get_task(args.task, source=task_cfg.source, **task_cfg.options)
    tokenizer = train_tokenizer(task.training_texts(), cfg.models.tokenizer.vocab_size)
    examples = task.records("train")[:args.examples]
    student = build_model(cfg.models.student, tokenizer, seed=args.seed)
    teacher = build_model(cfg.models.teacher, tokenizer, seed=args.seed + 1)
    data = TrainData.from_texts(student, [task.prompt(e) for e in examples], [task.target(e) for e in examples],
                                max_prompt_tokens=task_cfg.max_prompt_tokens, max_target_tokens=task_cfg.max_target_tokens)
    if args.teacher_steps:  # a few SFT steps make the teacher's distribution (and its stopping) non-trivial
        sft = dataclasses.replace(cfg.training("teacher_training", args.task), steps=args.teacher_steps,
                                  warmup_steps=min(args.teacher_steps, cfg.teacher_training.warmup_steps),
                                  log_every=args.teacher_steps, checkpoint_every=10**9, validate_every=0)
        setup = TrainSetup(METHODS.get("sft"), method_config("sft", {}), teacher, data, sft, args.seed,
                           torch.device("cpu"), precision="fp32")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train(setup, out)
        print(f"teacher: {args.teacher_steps} SFT steps in {time.perf_counter() - started:.0f}s")
    student.save(directory / "student")
    teacher.save(directory / "teacher")
    training = cfg.training("distill", args.task)
    return Fixture(directory / "student", directory / "teacher", tokenizer, data, training, cfg.sampling,
                   task_cfg.max_target_tokens)


# -- report --------------------------------------------------------------------------------------
def check(ok: bool, what: str, failures: list[str]) -> str:
    if not ok:
        failures.append(what)
    return "PASS" if ok else "FAIL"


def report(setting: str, runs: dict[str, list[Record]], args, failures: list[str]) -> None:
    """Print one setting's table and checks; timings are medians over the rounds, losses from round 1."""
    w, n = args.warmup, args.steps
    rounds = len(runs["suite"])
    print(f"\n== {setting}-policy (lambda {SETTINGS[setting]:g}) =="
          + (f", timings: median of {rounds} rounds" if rounds > 1 else ""))
    print(f"{'':6s} {'steps/s':>8s} {'s/step':>7s} {'CPU s/step':>10s} {'sampling s/step':>15s} "
          f"{'(CPU)':>6s} {'first loss':>11s} {'last loss':>10s} {'threads':>7s} sampler")
    seconds, losses = {}, {}
    for name, records in runs.items():
        wall = statistics.median(r.seconds_per_step(w, n, WALL) for r in records)
        cpu = statistics.median(r.seconds_per_step(w, n, CPU) for r in records)
        sampling = [statistics.median(r.sampling_per_step(w, n, kind) for r in records) for kind in (WALL, CPU)]
        seconds[name], losses[name] = (wall, cpu), records[0].losses()
        print(f"{name:6s} {1 / wall:8.2f} {wall:7.3f} {cpu:10.3f} {sampling[WALL]:15.3f} {sampling[CPU]:6.3f} "
              f"{losses[name][0]:11.5f} {losses[name][-1]:10.5f} {records[0].threads:7d} "
              f"{records[0].decoder if name == 'suite' else 'hf'}")
    print(f"ratio suite/TRL (steps per second): {seconds['TRL'][WALL] / seconds['suite'][WALL]:.2f} wall, "
          f"{seconds['TRL'][CPU] / seconds['suite'][CPU]:.2f} CPU time")
    for name, curve in losses.items():
        print(f"  {name} loss falls ({curve[0]:.5f} -> {curve[-1]:.5f}): "
              f"{check(curve[-1] < curve[0], f'{setting}: {name} loss does not fall', failures)}")
    suite, ref = runs["suite"][0], runs["TRL"][0]
    if setting == "on":
        raw = [float(x) for x in ref.reported]
        scale = statistics.mean(r / c for r, c in zip(raw, losses["TRL"], strict=True) if c > 0)
        print(f"  TRL's own on-policy loss (divided by the gold token count) is {scale:.2f}x the token mean "
              f"shown (first {raw[0]:.5f}, last {raw[-1]:.5f})")
        a, b = suite.mean_sampled_length(), ref.mean_sampled_length()
        close = abs(a - b) <= args.length_tolerance * max(a, b)
        print(f"  mean sampled length (tokens, EOS included): suite {a:.1f}, TRL {b:.1f}: "
              f"{check(close, f'{setting}: sampled lengths differ', failures)}")
    elif args.teacher_cache == "top_k":  # the suite trains on the truncated teacher: its loss differs by design
        a, b = losses["suite"][0], losses["TRL"][0]
        print(f"  first-step loss on the same batch and weights: suite {a:.6f} (top-{args.top_k} teacher), TRL {b:.6f} "
              f"(full teacher), {100 * (a - b) / b:+.1f}%: not compared (run --teacher-cache exact to compare)")
    else:
        a, b = losses["suite"][0], losses["TRL"][0]
        close = abs(a - b) <= args.first_loss_tolerance * max(abs(a), abs(b))
        print(f"  first-step loss on the same batch and weights: suite {a:.6f}, TRL {b:.6f}: "
              f"{check(close, f'{setting}: first-step losses differ', failures)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="workflows/config/default.yaml")
    parser.add_argument("--task", default="translation")
    parser.add_argument("--examples", type=int, default=400, help="training pairs used (the task's first N)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--settings", default="on,off", help="comma-separated: on (lambda 1), off (lambda 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--suite-decoder", choices=["default", "lean", "hf"], default="default",
                        help="the suite's sampler: its default, its lean decoder, or Hugging Face generate (as TRL)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each trainer per setting, alternating which goes first; timings are their medians")
    parser.add_argument("--teacher-cache", choices=["live", "exact", "top_k"], default="live",
                        help="the suite's off-policy steps: the live teacher, or the teacher cache (built once, untimed)")
    parser.add_argument("--top-k", type=int, default=64, help="tokens per position kept by --teacher-cache top_k")
    parser.add_argument("--beta", type=float, default=0.9, help="JSD beta in this suite's convention")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-steps", type=int, default=100,
                        help="SFT steps for the teacher on the same examples before both runs (0: left at its initialisation)")
    parser.add_argument("--length-tolerance", type=float, default=0.2,
                        help="relative difference allowed between the mean sampled lengths")
    parser.add_argument("--first-loss-tolerance", type=float, default=1e-4,
                        help="relative difference allowed between the first off-policy losses")
    args = parser.parse_args()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        parser.error(f"--settings: allowed values are {', '.join(SETTINGS)}; got {args.settings!r}")
    if args.warmup < 0 or args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1, --warmup >= 0")
    set_threads(args.threads)
    hf_logging.set_verbosity_error()  # TRL's migration advice, deprecation notices
    hf_logging.disable_progress_bar()  # weight loading and saving bars
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renamed checkpointing flags
    total_steps = args.warmup + args.steps + 1  # the last step's start ends the timed window
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fixture = build_fixture(args, Path(tmp))
        if args.teacher_cache != "live":
            fixture = add_teacher_cache(fixture, Path(tmp) / "teacher_cache", args.teacher_cache, args.top_k)
        print(f"task={args.task} examples={len(fixture.data)} vocabulary={len(fixture.tokenizer)} "
              f"batch={fixture.training.batch_size} lr={fixture.training.lr:g} beta={args.beta:g} "
              f"(TRL beta {trl_beta(args.beta):g}) max_new_tokens={fixture.max_new_tokens} "
              f"temperature={fixture.sampling.sampling_temperature:g} threads={torch.get_num_threads()} "
              f"steps={args.steps} after {args.warmup} warm-up teacher={args.teacher_cache} | torch {torch.__version__} trl {trl.__version__}")
        for setting in settings:
            runs: dict[str, list[Record]] = {"suite": [], "TRL": []}
            for round_ in range(args.rounds):
                order = (("suite", run_suite), ("TRL", run_trl))
                for name, run in order if round_ % 2 == 0 else order[::-1]:
                    runs[name].append(run(fixture, SETTINGS[setting], total_steps, args))
            report(setting, runs, args, failures)
    print("\nall checks passed" if not failures else "\nFAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
