"""How well a learned reward ranks outputs by the true reward (embedded tasks only).

X-KD and PbKD learn a reward; the embedded tasks know the true one (the oracle score). The Spearman
correlation between the two, over held-out student and teacher outputs, is a diagnostic the papers
cannot give on real data.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import Seq2SeqLM


@torch.no_grad()
def score_outputs(model: Seq2SeqLM, reward_fn: Callable[[Batch], torch.Tensor], prompts: list[str], outputs: list[str],
                  *, max_prompt_tokens: int, max_target_tokens: int, batch_size: int = 64) -> list[float]:
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        batch = model.encode(prompts[start:start + batch_size], outputs[start:start + batch_size],
                             max_prompt_tokens=max_prompt_tokens, max_target_tokens=max_target_tokens)
        scores.extend(reward_fn(batch.to(model.model.device)).float().cpu().tolist())
    return scores


def reward_oracle_correlation(model: Seq2SeqLM, reward_fn, task, examples: list[dict], outputs: dict[str, list[list[str]]],
                              *, max_prompt_tokens: int, max_target_tokens: int) -> dict:
    """Spearman correlation of learned reward and oracle score, per output source and pooled.

    outputs: source name ("student", "teacher") -> per input, a list of output texts.
    """
    result: dict = {}
    pooled_reward: list[float] = []
    pooled_oracle: list[float] = []
    for source, per_input in outputs.items():
        pairs = [(ex, out) for ex, texts in zip(examples, per_input, strict=False) for out in texts]
        prompts = [task.prompt(ex) for ex, _ in pairs]
        texts = [out for _, out in pairs]
        rewards = score_outputs(model, reward_fn, prompts, texts, max_prompt_tokens=max_prompt_tokens,
                                max_target_tokens=max_target_tokens)
        oracle = [task.oracle_score(ex, out) for ex, out in pairs]
        result[source] = _spearman(rewards, oracle)
        pooled_reward += rewards
        pooled_oracle += oracle
    result["pooled"] = _spearman(pooled_reward, pooled_oracle)
    return result


def _spearman(x: list[float], y: list[float]) -> dict:
    if len(set(y)) < 2 or len(set(x)) < 2:  # undefined when either side is constant
        return {"spearman": None, "p_value": None, "n": len(x)}
    from scipy.stats import spearmanr  # only cells of reward-learning methods pay for importing scipy

    rho, p = spearmanr(x, y)
    return {"spearman": float(rho), "p_value": float(p), "n": len(x)}
