"""Evaluate a checkpoint: greedy decoding plus k samples per input at several temperatures.

Writes the outputs (one JSONL record per input: greedy output, its per-example scores, the samples)
and metrics.json (task metrics, oracle score, Self-BLEU and distinct-n of the samples).
"""
from __future__ import annotations

import time

import torch

from xkdbench.config import EvaluationConfig
from xkdbench.evaluation.diversity import distinct_n_per_input, self_bleu
from xkdbench.models.seq2seq import Seq2SeqLM
from xkdbench.progress import Progress


def decode_all(model: Seq2SeqLM, prompts: list[list[int]], *, batch_size: int, max_new_tokens: int,
               do_sample: bool, temperature: float = 1.0, num_samples: int = 1, autocast=None,
               progress: str | None = None) -> list[list[str]]:
    """Decode every prompt (token ids); returns num_samples texts per prompt. progress: a label, to print
    progress lines (xkdbench.progress) while a long decode runs."""
    outputs: list[list[str]] = []
    lines = Progress(progress, len(prompts), unit="input") if progress else None
    for start in range(0, len(prompts), batch_size):
        if lines and lines.due():
            lines.update(start)
        rows = prompts[start:start + batch_size]
        batch = model.collate(rows, [[] for _ in rows]).to(model.model.device)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            out = model.generate(batch, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature, num_return_sequences=num_samples)
        texts = model.decode(out.target_ids, out.target_mask)
        outputs.extend(texts[i:i + num_samples] for i in range(0, len(texts), num_samples))
    if lines:
        lines.update(len(prompts))
    return outputs


def evaluate(model: Seq2SeqLM, task, examples: list[dict], cfg: EvaluationConfig, *, max_prompt_tokens: int,
             max_new_tokens: int, seed: int, autocast=None) -> tuple[dict, list[dict]]:
    """Score `model` on `examples` of `task`; returns (metrics, per-input records)."""
    started = time.perf_counter()
    prompts = model.encode_prompts([task.prompt(ex) for ex in examples], max_prompt_tokens)
    greedy = [texts[0] for texts in decode_all(model, prompts, batch_size=cfg.batch_size,
                                               max_new_tokens=max_new_tokens, do_sample=False, autocast=autocast)]
    metrics: dict = {"split": cfg.split, "num_inputs": len(examples), "headline_metric": task.headline_metric,
                     "greedy": task.score(greedy, examples)}
    metrics["headline"] = metrics["greedy"][task.headline_metric]
    per_example = task.example_scores(greedy, examples)
    records = [{"index": i, "reference": task.target(ex), "greedy": out, "greedy_score": score}
               for i, (ex, out, score) in enumerate(zip(examples, greedy, per_example, strict=False))]
    if task.has_oracle:
        for record, ex in zip(records, examples, strict=False):
            record["greedy_oracle"] = task.oracle_score(ex, record["greedy"])
    metrics["sampling"] = {}
    k = cfg.samples_per_input
    sampled = examples[:cfg.sampled_inputs]  # slicing with None keeps all
    if k:
        metrics["sampled_inputs"] = len(sampled)
    for temperature in cfg.sampling_temperatures if k else []:
        torch.manual_seed(seed)  # the same sampling noise for every model evaluated with this seed
        samples = decode_all(model, prompts[:len(sampled)], batch_size=max(1, cfg.batch_size // k),
                             max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, num_samples=k,
                             autocast=autocast)
        flat = [s for per_input in samples for s in per_input]
        repeated = [ex for ex in sampled for _ in range(k)]
        quality = task.score(flat, repeated)
        quality.update(self_bleu=self_bleu(samples), distinct_1=distinct_n_per_input(samples, 1),
                       distinct_2=distinct_n_per_input(samples, 2))
        metrics["sampling"][f"{temperature:g}"] = quality
        for record, per_input in zip(records, samples, strict=False):
            record.setdefault("samples", {})[f"{temperature:g}"] = per_input
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics, records
