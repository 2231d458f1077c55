import torch

from tests.conftest import tiny_model, toy_pairs
from xkdbench.models import load_model
from xkdbench.models.batch import mask_after_first_eos


def test_mask_after_first_eos_keeps_eos_and_pads_rest():
    eos, pad = 1, 0
    ids = torch.tensor([[5, 6, 1, 7, 1], [5, 5, 5, 5, 5], [1, 8, 9, 9, 9]])
    out, mask = mask_after_first_eos(ids, eos, pad)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert out.tolist() == [[5, 6, 1, 0, 0], [5, 5, 5, 5, 5], [1, 0, 0, 0, 0]]


def test_mask_after_first_eos_when_pad_equals_eos():
    # the EOS token must stay a target even though it looks like padding
    ids = torch.tensor([[4, 1, 1, 1]])
    out, mask = mask_after_first_eos(ids, eos_id=1, pad_id=1)
    assert mask.tolist() == [[1, 1, 0, 0]]


def test_target_logits_ignore_padding(tokenizer, family):
    """A sequence's logits are the same alone and inside a padded batch (left-padded prompts)."""
    model = tiny_model(tokenizer, family)
    model.model.eval()
    prompts, targets = toy_pairs(4)
    batch = model.encode(prompts, targets, max_prompt_tokens=24, max_target_tokens=12)
    full = model.target_logits(batch)
    for i in range(4):
        alone = model.encode(prompts[i:i + 1], targets[i:i + 1], max_prompt_tokens=24, max_target_tokens=12)
        logits = model.target_logits(alone)
        n = int(alone.target_mask.sum())
        torch.testing.assert_close(full[i, :n], logits[0, :n], atol=2e-5, rtol=1e-4)


def test_greedy_generation_matches_argmax_of_target_logits(tokenizer, family):
    model = tiny_model(tokenizer, family)
    prompts, _ = toy_pairs(6)
    batch = model.encode(prompts, None, max_prompt_tokens=24, max_target_tokens=12)
    generated = model.generate(batch, max_new_tokens=10, do_sample=False)
    logits = model.target_logits(generated)
    valid = generated.target_mask.bool()
    assert torch.equal(logits.argmax(-1)[valid], generated.target_ids[valid])


def test_sampling_returns_k_masked_samples_per_prompt(tokenizer, family):
    model = tiny_model(tokenizer, family)
    prompts, _ = toy_pairs(3)
    batch = model.encode(prompts, None, max_prompt_tokens=24, max_target_tokens=12)
    torch.manual_seed(0)
    samples = model.generate(batch, max_new_tokens=8, do_sample=True, num_return_sequences=4)
    assert samples.size == 12
    assert torch.equal(samples.prompt_ids, batch.prompt_ids.repeat_interleave(4, dim=0))
    assert torch.equal(samples.prompt_mask, batch.prompt_mask.repeat_interleave(4, dim=0))
    # up to and including the first EOS is a target, nothing after it; a row without EOS is all target
    for ids, mask in zip(samples.target_ids.tolist(), samples.target_mask.tolist(), strict=True):
        end = ids.index(model.eos_id) + 1 if model.eos_id in ids else len(ids)
        assert mask == [1] * end + [0] * (len(ids) - end)


def test_save_and_load_roundtrip(tmp_path, tokenizer, family):
    model = tiny_model(tokenizer, family)
    model.save(tmp_path / "m", extra_modules={"head": torch.nn.Linear(2, 2)})
    loaded = load_model(tmp_path / "m")
    assert loaded.family == family and (tmp_path / "m" / "head.pt").exists()
    prompts, targets = toy_pairs(2)
    batch = model.encode(prompts, targets, max_prompt_tokens=24, max_target_tokens=12)
    torch.testing.assert_close(loaded.target_logits(batch), model.target_logits(batch))
    assert not list(tmp_path.glob(".m.tmp-*")), "no temporary directory is left behind"


def test_tokenizer_splits_digits_and_roundtrips(tokenizer):
    ids = tokenizer("cat 1234 dog", add_special_tokens=False).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert [t for t in tokens if t.strip("Ġ").isdigit()] == ["1", "2", "3", "4"]
    assert tokenizer.decode(ids) == "cat 1234 dog"


def test_batched_encoding_equals_one_text_at_a_time(tokenizer, family):
    """Training data and evaluation prompts are tokenised in one call; each row must be exactly what the
    per-text encoding gives, truncation and the separator/EOS included."""
    model = tiny_model(tokenizer, family)
    prompts, targets = toy_pairs(40)
    texts = prompts + targets + ["", "  ", "ünïcödé ¿?", prompts[0] * 20]
    for max_tokens in (1, 3, 12, 200):
        assert model.encode_prompts(texts, max_tokens) == [model.encode_prompt(t, max_tokens) for t in texts]
        assert model.encode_targets(texts, max_tokens) == [model.encode_target(t, max_tokens) for t in texts]
    assert model.encode_prompts([], 5) == []


def test_decoder_only_target_logits_are_the_full_forward_at_the_target_positions(tokenizer):
    """target_logits asks the causal LM for the last T positions' logits only (`logits_to_keep`); they are
    the full forward's logits at positions P-1 .. P+T-2, bit for bit, and their gradients reach the
    same weights. A model class without `logits_to_keep` gets the same logits by slicing."""
    model = tiny_model(tokenizer, "llama")
    model.model.eval()
    prompts, targets = toy_pairs(5)
    batch = model.encode(prompts, targets, max_prompt_tokens=24, max_target_tokens=12)
    P, T = batch.prompt_ids.shape[1], batch.target_ids.shape[1]
    ids = torch.cat([batch.prompt_ids, batch.target_ids[:, :-1]], dim=1)
    attention = torch.cat([batch.prompt_mask, torch.ones_like(batch.target_ids[:, :-1])], dim=1)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model.model(input_ids=ids, attention_mask=attention, position_ids=positions).logits  # (B, P+T-1, V)
        kept = model.target_logits(batch)
    assert kept.shape == (5, T, full.shape[-1])
    assert torch.equal(kept, full[:, P - 1:])

    class NoKeep(torch.nn.Module):  # a causal LM whose forward has no logits_to_keep
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=False, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              output_hidden_states=output_hidden_states, use_cache=use_cache)

    plain = model.model
    try:
        model.model = NoKeep(plain)
        model.model.config = plain.config
        with torch.no_grad():
            sliced = model.target_logits(batch)
    finally:
        model.model = plain
    assert torch.equal(sliced, full[:, P - 1:])
