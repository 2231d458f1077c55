"""What the teacher cache's top-k mode changes in what a student is trained on, and what each k costs on disk.

Trains a task's teacher (or loads a trained one) and the student initialisation as the study would, caches
the teacher's distributions on gold training sequences exactly and at each k, and prints per k:
  dropped mass   the teacher probability outside the top k, per token: mean, 99th percentile, largest;
  KL, TV         KL(exact || reconstructed) and total variation per token, of the distribution the losses
                 see (the stored float16 entries plus the uniform tail, renormalised);
  loss change    the relative change of supervised KD's forward KL and of the token reverse KL between
                 the student initialisation and the teacher (token means over the rows);
  bytes / token  the cache on disk divided by the cached target tokens.

    python benchmarks/teacher_cache_error.py --config workflows/config/smoke.yaml --task reasoning
    python benchmarks/teacher_cache_error.py --config workflows/config/default.yaml --task reasoning \\
        --teacher results/default/teacher/reasoning/model --student results/default/student_init/reasoning/seed0/model
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xkdbench.config import load_config
from xkdbench.core.data import TrainData
from xkdbench.core.runtime import resolve_device, set_threads
from xkdbench.core.teacher_cache import TeacherCache, build_teacher_cache
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.losses import forward_kl, reverse_kl
from xkdbench.methods import METHODS, method_config
from xkdbench.models import build_model, load_model, train_tokenizer
from xkdbench.tasks import get_task

IDENTITY = {"teacher": None, "tokenizer": None, "data": None, "max_prompt_tokens": None, "max_target_tokens": None,
            "teacher_outputs": None}


def sft(model, task, split, cfg, section, steps, out, device):
    """Train `model` by SFT on `split` as the study's `section` does (steps overridden when given)."""
    task_cfg = cfg.task(task.name)
    records = task.records(split)
    data = TrainData.from_texts(model, [task.prompt(r) for r in records], [task.target(r) for r in records],
                                max_prompt_tokens=task_cfg.max_prompt_tokens, max_target_tokens=task_cfg.max_target_tokens)
    training = cfg.training(section, task.name)
    if steps is not None:
        training = dataclasses.replace(training, steps=steps, checkpoint_every=max(steps, 1))
    started = time.perf_counter()
    train(TrainSetup(METHODS.get("sft"), method_config("sft", {}), model, data, training, 0, device), out)
    print(f"# {section}: {training.steps} SFT steps in {time.perf_counter() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--task", default="reasoning")
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--rows", type=int, default=400, help="gold training sequences measured (the first ones)")
    parser.add_argument("--teacher", help="a trained teacher directory (default: train one as the config does)")
    parser.add_argument("--student", help="a student initialisation directory (default: train one)")
    parser.add_argument("--teacher-steps", type=int, help="override the config's teacher training steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config)
    task_cfg = cfg.task(args.task)
    task = get_task(args.task, source=task_cfg.source, **task_cfg.options)
    device = resolve_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="teacher_cache_error-") as work:
        measure(args, cfg, task, device, Path(work))


def measure(args, cfg, task, device, work: Path) -> None:
    task_cfg = cfg.task(args.task)
    if args.teacher:
        teacher = load_model(args.teacher)
    else:
        tokenizer = train_tokenizer(task.training_texts(), cfg.models.tokenizer.vocab_size)
        teacher = build_model(cfg.models.teacher, tokenizer, seed=0)
        sft(teacher, task, "train", cfg, "teacher_training", args.teacher_steps, work / "teacher", device)
    if args.student:
        student = load_model(args.student)
    else:
        student = build_model(cfg.models.student, teacher.tokenizer, seed=0)
        sft(student, task, "warmup", cfg, "student_init", None, work / "student", device)
    student.model.to(device).eval()

    records = task.records("train")[:args.rows]
    prompts = teacher.encode_prompts([task.prompt(r) for r in records], task_cfg.max_prompt_tokens)
    targets = teacher.encode_targets([task.target(r) for r in records], task_cfg.max_target_tokens)
    rows = list(zip(prompts, targets, strict=True))
    caches = {}
    for k in [None, *args.ks]:
        manifest = build_teacher_cache(teacher, rows, work / f"cache_{k}", top_k=k, batch_size=32, device=device,
                                       use_bf16=False, identity=IDENTITY)
        caches[k] = TeacherCache.open(work / f"cache_{k}", expect={}, mode="top_k" if k else "exact", top_k=k or 0)
    exact = caches[None]
    vocab, positions = exact.vocab_size, exact.manifest["positions"]
    print(f"# {args.config} {args.task}: vocabulary {vocab}, {len(exact)} sequences, {positions} target tokens; "
          f"teacher {teacher.num_parameters():,} parameters, student {student.num_parameters():,}")

    stats = {k: {"kl": [], "tv": [], "fkl": 0.0, "rkl": 0.0} for k in caches}
    count = 0
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            chunk = list(range(start, min(start + 32, len(rows))))
            batch = student.collate([rows[i][0] for i in chunk], [rows[i][1] for i in chunk]).to(device)
            valid = batch.target_mask.bool()
            width = batch.target_ids.shape[1]
            student_logits = student.target_logits(batch).float()
            found = exact.find(batch)
            p = exact.log_probs(found, width, device)
            count += int(valid.sum())
            for k, cache in caches.items():
                q = torch.log_softmax(cache.log_probs(cache.find(batch), width, device), dim=-1)  # what losses see
                s = stats[k]
                if k is not None:
                    s["kl"].append((p.exp() * (p - q)).sum(-1)[valid])
                    s["tv"].append(0.5 * (p.exp() - q.exp()).abs().sum(-1)[valid])
                s["fkl"] += float(forward_kl(student_logits, q)[valid].sum())
                s["rkl"] += float(reverse_kl(student_logits, q)[valid].sum())
    base = stats[None]
    print("\n| k | dropped mass mean | p99 | max | KL(exact‖top-k) mean | TV mean | forward KL change | "
          "reverse KL change | bytes / token |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in [*args.ks, None]:
        s, manifest = stats[k], caches[k].manifest
        if k is None:
            mass = kl = tv = np.zeros(1)
        else:  # every cached position is a measured one
            mass = np.exp(caches[k].tail_logmass[:].astype(np.float64))
            kl, tv = (torch.cat(s[name]).double().numpy() for name in ("kl", "tv"))
        change = [(s[name] - base[name]) / base[name] for name in ("fkl", "rkl")]
        print(f"| {k or f'exact ({vocab})'} | {mass.mean():.2e} | {np.quantile(mass, 0.99):.2e} | {mass.max():.2e} | "
              f"{kl.mean():.2e} | {tv.mean():.2e} | {change[0]:+.2e} | {change[1]:+.2e} | "
              f"{manifest['bytes_per_position']:.0f} |")
    print(f"\nstudent-initialisation loss (token mean, exact teacher): forward KL {base['fkl'] / count:.4f}, "
          f"reverse KL {base['rkl'] / count:.4f}; cache build {exact.manifest['seconds']:.1f}s (exact)")


if __name__ == "__main__":
    main()
