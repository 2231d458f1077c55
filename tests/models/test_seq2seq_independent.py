"""EOS handling of sampled targets with the branch forced: a model made to draw EOS often, so that every
call has rows that stop early and rows that run to the length limit, each checked against a hand
loop over the raw tokens (no conditional assertions that may never run)."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model, toy_pairs


def eos_every_few_tokens(model, bonus: float = 3.5) -> None:
    """Give EOS a logit about `bonus` above every other token at every step, through the weights (the
    default decoder reads the weights, a hook would switch decoders). One embedding dimension is set to
    one large value for every token and a slightly larger one for EOS: it dominates the normalised last
    hidden state, and with tied input/output embeddings every logit is a dot product with an embedding
    row. The final normalisation leaves that dimension at sqrt(D) (Llama) or 1 (T5, which rescales by
    D ** -0.5 before its tied output layer)."""
    embedding = model.model.get_input_embeddings().weight  # (V, D)
    per_unit = 1.0 if model.is_encoder_decoder else embedding.shape[1] ** 0.5
    with torch.no_grad():
        level = 10 * float(embedding.norm(dim=1).mean())
        embedding[:, 0] = level
        embedding[model.eos_id, 0] = level + bonus / per_unit


@pytest.mark.parametrize("num_samples", [1, 3])
def test_targets_are_masked_after_the_first_eos_in_every_call(tokenizer, family, num_samples):
    model = tiny_model(tokenizer, family)
    eos_every_few_tokens(model)
    prompts, _ = toy_pairs(12, seed=3)
    batch = model.encode(prompts, None, max_prompt_tokens=24, max_target_tokens=12)
    limit = 10
    torch.manual_seed(0)
    out = model.generate(batch, max_new_tokens=limit, do_sample=True, num_return_sequences=num_samples)
    ids, mask = out.target_ids.tolist(), out.target_mask.tolist()
    stopped = [row.index(model.eos_id) for row in ids if model.eos_id in row]
    # both kinds of rows, and EOS at different positions (the model draws EOS with probability ~0.1)
    assert 0 < len(stopped) < len(ids) and len(set(stopped)) > 1, stopped
    assert out.target_ids.shape[1] == limit  # a row ran to the limit, so decoding did too
    for row, row_mask in zip(ids, mask, strict=True):
        if model.eos_id in row:
            end = row.index(model.eos_id)
            assert row_mask == [1] * (end + 1) + [0] * (limit - end - 1)  # the EOS itself is a target token
            assert row[end + 1:] == [model.pad_id] * (limit - end - 1)
        else:
            assert row_mask == [1] * limit
    assert out.size == batch.size * num_samples
    assert torch.equal(out.prompt_ids, batch.prompt_ids.repeat_interleave(num_samples, dim=0))
    texts = model.decode(out.target_ids, out.target_mask)  # EOS and what follows never reach the text
    for text, row, row_mask in zip(texts, ids, mask, strict=True):
        kept = [t for t, m in zip(row, row_mask, strict=True) if m and t != model.eos_id]
        assert text == tokenizer.decode(kept, skip_special_tokens=True).strip()


def test_all_rows_stopping_early_ends_decoding_early(tokenizer, family):
    """With EOS almost certain, every row stops within a few tokens and the batch is no wider than
    its longest row."""
    model = tiny_model(tokenizer, family)
    eos_every_few_tokens(model, bonus=9.0)
    prompts, _ = toy_pairs(6, seed=4)
    batch = model.encode(prompts, None, max_prompt_tokens=24, max_target_tokens=12)
    torch.manual_seed(0)
    out = model.generate(batch, max_new_tokens=20, do_sample=True)
    ends = [row.index(model.eos_id) for row in out.target_ids.tolist()]
    assert out.target_ids.shape[1] == max(ends) + 1 < 20
    assert out.target_mask.sum(1).tolist() == [e + 1 for e in ends]
