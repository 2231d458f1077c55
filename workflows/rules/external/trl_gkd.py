"""TRL's GKDTrainer on one cell of a study: the trainer of the external method `trl_gkd` (trl_gkd.smk).

    python workflows/rules/external/trl_gkd.py --cell CELL/inputs/cell.json --model CELL/model \
        --summary CELL/train_summary.json [--threads N]

It reads what the suite wrote for the cell (`xkdbench cell-inputs`: the paths of the teacher and the student
initialisation, the entry's settings, the distillation budget, the training examples and the order the
suite serves them in), trains the student initialisation against the teacher with TRL's own
`trl.experimental.gkd.GKDTrainer`, and writes the rule contract's outputs: the distilled student as a
Hugging Face directory and train_summary.json. It needs the `.[bench]` extra (trl==1.16.0, pinned).

Matched to the suite's `gkd` with the same beta and student_data_fraction (TRL's default in brackets):
  - beta: the same number. TRL >= 0.16 mixes m = beta p + (1 - beta) q (teacher p, student q) and weighs
    beta KL(p || m) + (1 - beta) KL(q || m), the suite's JSD(beta) (TRL <= 0.15 mixed with 1 - beta).
  - lmbda = student_data_fraction [0.5]. TRL draws its coin per micro-batch (`random.random() <= lmbda`),
    the suite per optimiser step from its own stream: the same at 0 and 1, alike in distribution between.
  - gradient checkpointing off [on: it also samples without the KV cache].
  - bf16 as the suite's precision: autocast on CUDA under `auto`, never on the CPU [on, on the CPU too].
  - dropout as training.disable_dropout [off]; the suite trains in eval mode, TRL zeroes the probabilities.
  - the loss normalisation of on-policy batches: TRL divides a batch's summed JSD by `num_items_in_batch`,
    which the Trainer counts on the gold batch before TRL swaps in the student's samples, so an on-policy
    loss is scaled by sampled tokens / gold tokens. Here every batch is divided by the tokens it sums over
    (`labels != -100` of the batch trained on), the suite's mean over the step's target tokens.
  - optimiser: torch AdamW over every parameter at distill.lr and weight_decay [adamw_torch_fused, no decay
    on biases and norms]; the suite's schedule, xkdbench.core.trainer.lr_factor [linear decay; Hugging
    Face's warm-up starts at 0, so its first step would not train]; clipping at max_grad_norm.
  - sampling: the study's sampling_temperature [0.9] and top_p, top_k 0, at most max_target_tokens new
    tokens [128], KV cache on, masked after the first EOS (the EOS carries loss). TRL's loss temperature
    is always 1, so the suite's gkd keeps loss_temperature 1 (its default).
  - data: the cell's examples tokenised as the suite does (prompt tokens + BOS separator, target tokens +
    EOS, cut at the task's limits) and served in the suite's order: step k of both trainers sees the same
    examples (a sequential sampler over order.json) [a random sampler].
  - budget: distill.steps, batch_size, and grad_accum 1 (TRL's coin and its normalisation are per
    micro-batch, the suite's per step: they agree only without accumulation, so other values are refused).

Not matched, by design of each trainer: TRL left-pads prompt and target together and passes no position
ids (rotary embeddings see relative positions only, so the logits agree up to rounding); TRL samples
with Hugging Face `generate`, the suite with its lean decoder, from different random streams; TRL
computes the JSD at every position and masks afterwards, the suite on target positions only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKDTrainer lives in trl.experimental since TRL 1.0

import torch  # noqa: E402

from xkdbench.config import TrainingConfig  # noqa: E402
from xkdbench.core.runtime import resolve_device, set_threads, stream_seed, use_bf16  # noqa: E402
from xkdbench.core.trainer import lr_factor  # noqa: E402
from xkdbench.models import load_model  # noqa: E402


def fail(message: str) -> None:
    print(f"trl_gkd: error: {message}", file=sys.stderr)
    raise SystemExit(2)


try:
    import trl
    from datasets import Dataset
    from packaging.version import Version
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.experimental.utils import DataCollatorForChatML
except ImportError as error:
    fail(f"TRL is not installed ({error}); install the bench extra: pip install -e '.[bench]'")


class SuiteMatchedGKDTrainer(GKDTrainer):
    """GKDTrainer with the suite's token normalisation and schedule, counting what the cost table reads."""

    training: TrainingConfig

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer,
                                                                  lambda step: lr_factor(step, self.training))
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        trained = (inputs["labels"][:, 1:] != -100).sum()  # the tokens TRL sums the JSD over
        self.counts["tokens"] += int(trained)
        self.counts["teacher_forward_sequences"] += int(inputs["input_ids"].shape[0])
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=trained.clamp(min=1))

    def generate_on_policy_outputs(self, model, inputs, generation_config):
        ids, mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
        self.counts["generated_tokens"] += int((labels != -100).sum())
        return ids, mask, labels


class TrainLog(TrainerCallback):
    """Writes train_log.jsonl beside the summary (step, loss, lr, grad_norm, counts, seconds), as the suite's."""

    def __init__(self, path: Path, trainer_counts: dict, every: int):
        self.path, self.counts, self.every, self.started = path, trainer_counts, every, time.perf_counter()
        self.file = open(path, "w", encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and (state.global_step % self.every == 0 or state.global_step == state.max_steps):
            record = {"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                      "grad_norm": logs.get("grad_norm"), **self.counts,
                      "seconds": round(time.perf_counter() - self.started, 3)}
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.file.close()


def checkpointing_on(model) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5, 4
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def check_setup(trainer: GKDTrainer, bf16: bool, top_p: float) -> None:
    """The overridden TRL defaults took effect (they are easy to lose in a TRL or transformers upgrade)."""
    args, generation = trainer.args, trainer.generation_config
    problems = [what for what, bad in (
        ("gradient checkpointing is on", args.gradient_checkpointing or checkpointing_on(trainer.model)),
        ("bf16 autocast differs from the suite's precision", bool(args.bf16) != bf16 or args.fp16),
        ("sampling without the KV cache", not generation.use_cache),
        ("sampling temperature", generation.temperature != args.temperature),
        ("sampling with top-k", generation.top_k not in (0, None)),
        ("sampling top_p", generation.top_p != top_p),
        ("no EOS for sampling", generation.eos_token_id is None),
        ("dtype is not fp32", next(trainer.model.parameters()).dtype != torch.float32),
    ) if bad]
    if problems:
        raise RuntimeError("TRL's setup differs from the suite's: " + "; ".join(problems))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", required=True, help="the cell's inputs/cell.json (from `xkdbench cell-inputs`)")
    parser.add_argument("--model", required=True, help="where to write the distilled student (a directory)")
    parser.add_argument("--summary", required=True, help="where to write train_summary.json")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args()
    if Version(trl.__version__) < Version("0.16"):
        fail(f"TRL {trl.__version__} mixes the JSD with 1 - beta (before PR #3043); install the bench extra (trl==1.16.0)")
    cell = json.loads(Path(args.cell).read_text(encoding="utf-8"))
    settings, paths = cell["settings"], cell["paths"]
    training = TrainingConfig(**cell["training"])
    if training.grad_accum != 1:
        fail(f"config distill.grad_accum: {training.grad_accum}; trl_gkd runs with 1 only (TRL draws its on-policy "
             "coin and normalises its loss per micro-batch, the suite per optimiser step)")
    set_threads(args.threads)
    device = resolve_device(cell["device"])
    bf16 = use_bf16(cell["precision"], device)

    student = load_model(paths["student"])  # the suite's view: the same tokenisation as an in-house cell
    if student.is_encoder_decoder:
        fail("config models.student.family: t5; TRL's GKDTrainer trains decoder-only (causal) models: use llama")
    teacher = AutoModelForCausalLM.from_pretrained(paths["teacher"], dtype=torch.float32)
    examples = [json.loads(line) for line in Path(paths["examples"]).read_text(encoding="utf-8").splitlines() if line]
    prompts = student.encode_prompts([e["prompt"] for e in examples], cell["max_prompt_tokens"])
    targets = student.encode_targets([e["target"] for e in examples], cell["max_target_tokens"])
    steps = json.loads(Path(paths["order"]).read_text(encoding="utf-8"))
    order = [i for step in steps for i in step]  # the suite's examples, step by step
    rows = [{"prompt": "", "input_ids": prompts[i] + targets[i], "completion_mask": [0] * len(prompts[i]) + [1] * len(targets[i])}
            for i in order]
    seed = cell["seed"] if not cell["stream"] else stream_seed(cell["seed"], "trl_gkd", cell["stream"]) % 2**31

    out = Path(args.model)
    scratch = out.with_name(f".{out.name}.trl-{os.getpid()}")
    # transformers 5 renamed gradient_checkpointing (TRL's default: on) to activation_checkpointing
    names = {f.name for f in dataclasses.fields(GKDConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    config = GKDConfig(
        output_dir=str(scratch / "trainer"), max_steps=training.steps, per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=1, learning_rate=training.lr, weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm, bf16=bf16, fp16=False, use_cpu=device.type == "cpu",
        **{checkpointing: False}, lmbda=settings["student_data_fraction"], beta=settings["beta"],
        temperature=cell["sampling"]["sampling_temperature"], max_new_tokens=cell["max_target_tokens"],
        disable_dropout=training.disable_dropout, seq_kd=False, seed=seed, train_sampling_strategy="sequential",
        dataloader_num_workers=0, logging_strategy="steps", logging_steps=1, save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True,
    )
    optimizer = torch.optim.AdamW(student.model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    trainer = SuiteMatchedGKDTrainer(
        model=student.model, teacher_model=teacher, args=config, train_dataset=Dataset.from_list(rows),
        processing_class=student.tokenizer, optimizers=(optimizer, None),
        data_collator=DataCollatorForChatML(tokenizer=student.tokenizer,
                                            max_length=cell["max_prompt_tokens"] + cell["max_target_tokens"]),
    )
    trainer.training = training
    trainer.counts = {"tokens": 0, "generated_tokens": 0, "teacher_forward_sequences": 0}
    top_p = cell["sampling"]["top_p"]
    trainer.generation_config.top_p = trainer.generation_kwargs["top_p"] = top_p
    check_setup(trainer, bf16, top_p)
    log = TrainLog(Path(args.summary).with_name("train_log.jsonl"), trainer.counts, training.log_every)
    trainer.add_callback(log)
    random.seed(seed)  # the on-policy coin (Python's random); the Trainer seeds torch itself
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started

    # the contract's outputs: a Hugging Face directory (model and tokenizer), renamed into place when whole
    final = scratch / "model"
    trainer.model.save_pretrained(final)
    student.tokenizer.save_pretrained(final)
    if out.exists():
        shutil.rmtree(out)
    os.replace(final, out)
    shutil.rmtree(scratch, ignore_errors=True)
    summary = {"steps": training.steps, "seconds": round(seconds, 3), **trainer.counts, "teacher_cache_sequences": 0,
               "examples": len(examples), "student_parameters": sum(p.numel() for p in trainer.model.parameters()),
               "trainer": f"trl {trl.__version__} GKDTrainer"}
    tmp = Path(args.summary).with_name(f".{Path(args.summary).name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.summary)
    print(f"trl_gkd: {cell['task']} {cell['method']} f{cell['fraction']:g} seed{cell['seed']}: {len(examples)} examples, "
          f"{training.steps} steps in {seconds:.1f}s, {trainer.counts['generated_tokens']} generated tokens -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
