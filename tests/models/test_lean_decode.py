"""The lean decoder against Hugging Face: per-step logits, greedy and sampled outputs under a seed,
num_return_sequences, EOS/pad handling, temperature and top-p, the fallback, and the mixture sampler."""
from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from tests.conftest import toy_pairs
from xkdbench.core.mixture_sampling import sample_mixture
from xkdbench.models import ModelSpec, Seq2SeqLM, build_model, lean_decode


def two_layer_model(tokenizer, family: str, seed: int = 0, width: int = 32, lively: bool = True) -> Seq2SeqLM:
    """Two layers, so that layer stacking (and T5's bias shared from the first layer) is exercised.

    At their initial scale these untrained models mostly repeat their last input token (tied embeddings,
    small layer weights); `lively` scales the layers' weights by 8 so that they write varied text."""
    model = build_model(ModelSpec(family=family, d_model=width, n_layers=2, n_heads=2, d_ff=2 * width),
                        tokenizer, seed=seed)
    if lively:
        with torch.no_grad():
            for name, module in model.model.named_modules():
                if isinstance(module, torch.nn.Linear) and name != "lm_head":
                    module.weight.mul_(8)
    return model


def prompts_of(model: Seq2SeqLM, n: int = 6):
    prompts, _ = toy_pairs(n, seed=5)
    batch = model.encode(prompts, None, max_prompt_tokens=24, max_target_tokens=12)
    assert n == 1 or len(set(batch.prompt_mask.sum(1).tolist())) > 1, "prompts of different lengths (left padding)"
    return batch


def make_eos_likely(model: Seq2SeqLM, bonus: float = 5.5) -> None:
    """Raise EOS's logit at every step by about `bonus`, through the weights (the lean decoder reads the
    weights; a hook on lm_head would send the model to `generate`), so that sampled rows finish at
    different steps. One embedding dimension, set to the same large value for every token and a larger
    one for EOS, dominates the final normalised state (of a model at its initial scale), and with tied
    embeddings the logits are dot products with the embedding rows."""
    embedding = model.model.get_input_embeddings().weight  # (V, D), tied to lm_head in both families
    # the normalised state is ~sqrt(D) along that dimension; T5 rescales it by D ** -0.5 before lm_head
    per_unit = 1.0 if model.is_encoder_decoder else embedding.shape[1] ** 0.5
    with torch.no_grad():
        level = 10 * float(embedding.norm(dim=1).mean())  # dominant over the other dimensions together
        embedding[:, 0] = level
        embedding[model.eos_id, 0] = level + bonus / per_unit


def hf_and_lean(model: Seq2SeqLM, batch, seed: int = 0, **kwargs):
    """The same call decoded by Hugging Face `generate` and by the lean decoder, each from `seed`;
    also whether both left torch's generator in the same state (the same number of draws)."""
    assert lean_decode.supports(model.model), "the comparison would be of generate with itself"
    outputs, states = [], []
    for decoder in ("hf", "lean"):
        model.decoder = decoder
        torch.manual_seed(seed)
        outputs.append(model.generate(batch, **kwargs))
        states.append(torch.random.get_rng_state())
    return outputs[0], outputs[1], torch.equal(*states)


def test_supports_the_models_the_suite_builds(tokenizer, family):
    assert lean_decode.supports(two_layer_model(tokenizer, family).model)


@pytest.mark.parametrize("unsupported", [
    lambda: LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    lambda: LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)),
    lambda: LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, attention_bias=True)),
    lambda: LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2)).to(torch.bfloat16),
    lambda: T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                num_heads=2, feed_forward_proj="relu")),
    lambda: MistralForCausalLM(MistralConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)),
], ids=["rope-scaling", "gqa", "attention-bias", "bf16-weights", "t5-relu", "mistral"])
def test_refuses_what_it_does_not_decode(unsupported):
    model = unsupported()
    assert not lean_decode.supports(model) and lean_decode.unsupported_reason(model)
    with pytest.raises(ValueError, match="does not support"):
        lean_decode.decoder_for(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
                                capacity=1)


def test_refuses_hooked_models_and_generate_falls_back(tokenizer, family):
    """A hook changes what a module computes, and the lean decoder skips the modules: such a model is
    decoded by `generate`, hook included."""
    model = two_layer_model(tokenizer, family)
    batch = prompts_of(model)
    plain = model.generate(batch, max_new_tokens=6, do_sample=False)
    eos = model.eos_id

    def favour_eos(module, inputs, output):
        output = output.clone()
        output[..., eos] += 1e4
        return output

    handle = model.model.lm_head.register_forward_hook(favour_eos)
    assert not lean_decode.supports(model.model)
    hooked = model.generate(batch, max_new_tokens=6, do_sample=False)
    assert (hooked.target_ids[:, 0] == eos).all() and not torch.equal(hooked.target_ids, plain.target_ids)
    handle.remove()
    assert lean_decode.supports(model.model)


def test_step_logits_equal_the_full_forward(tokenizer, family):
    """Teacher-forced through the lean decoder's cache, every step's logits are those of a full forward
    (no cache) of the prompt and the tokens fed so far, left-padded batch of prompts of different lengths."""
    model = two_layer_model(tokenizer, family, lively=False)  # logits of order 1, for an absolute tolerance
    model.model.eval()
    batch = prompts_of(model)
    steps = 10
    fed = torch.randint(4, len(tokenizer), (batch.size, steps), generator=torch.Generator().manual_seed(0))
    decoder = lean_decode.decoder_for(model.model, batch.prompt_ids, batch.prompt_mask, capacity=steps - 1)
    lean = [decoder.logits]
    for t in range(steps - 1):
        decoder.advance(fed[:, t])
        lean.append(decoder.logits)
    with torch.no_grad():
        full = model.target_logits(batch.with_targets(fed, torch.ones_like(fed)))  # (B, steps, V)
    torch.testing.assert_close(torch.stack(lean, dim=1), full, atol=1e-5, rtol=0)


def test_step_logits_are_generates_own(tokenizer, family):
    """Bit for bit the logits `generate` computes at every step (the same kernels on the same operands),
    which is why sampling under a seed draws the same tokens."""
    model = two_layer_model(tokenizer, family)
    model.model.eval()
    batch = prompts_of(model)
    config = GenerationConfig(max_new_tokens=12, do_sample=False, eos_token_id=model.eos_id, pad_token_id=model.pad_id,
                              decoder_start_token_id=getattr(model.model.config, "decoder_start_token_id", None),
                              return_dict_in_generate=True, output_logits=True)
    out = model.model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, generation_config=config)
    new = out.sequences[:, 1:] if family == "t5" else out.sequences[:, batch.prompt_ids.shape[1]:]
    decoder = lean_decode.decoder_for(model.model, batch.prompt_ids, batch.prompt_mask, capacity=new.shape[1] - 1)
    for t, expected in enumerate(out.logits):
        assert torch.equal(decoder.logits, expected), f"step {t}"
        if t + 1 < len(out.logits):
            decoder.advance(new[:, t])


def test_greedy_equals_hf_generate_with_eos_and_pad(tokenizer, family):
    model = two_layer_model(tokenizer, family)
    batch = prompts_of(model, 12)
    model.decoder = "hf"
    model.eos_id = int(model.generate(batch, max_new_tokens=16, do_sample=False).target_ids[0, 3])  # row 0 stops by step 4
    hf, lean, _ = hf_and_lean(model, batch, max_new_tokens=16, do_sample=False)
    assert torch.equal(lean.target_ids, hf.target_ids) and torch.equal(lean.target_mask, hf.target_mask)
    lengths = lean.target_mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "rows should finish at different steps"


@pytest.mark.parametrize("temperature, top_p, k", [(1.0, 1.0, 1), (0.7, 0.8, 1), (1.5, 0.95, 1), (1.0, 1.0, 3),
                                                    (0.8, 0.9, 4)])
def test_sampling_equals_hf_generate_under_a_seed(tokenizer, family, temperature, top_p, k):
    """The same tokens, EOS/pad handling and early stop as `generate`, and the same number of draws from
    torch's generator (its state afterwards is the same)."""
    lively = two_layer_model(tokenizer, family)
    stopping = two_layer_model(tokenizer, family, lively=False)
    make_eos_likely(stopping, bonus=4 * temperature)  # p(EOS) about 1/6 at every step
    batch = prompts_of(lively)
    for model in (lively, stopping):
        for seed in range(2):
            hf, lean, same_state = hf_and_lean(model, batch, seed, max_new_tokens=40, do_sample=True,
                                               temperature=temperature, top_p=top_p, num_return_sequences=k)
            assert torch.equal(lean.target_ids, hf.target_ids) and torch.equal(lean.target_mask, hf.target_mask)
            assert torch.equal(lean.prompt_ids, hf.prompt_ids) and lean.size == batch.size * k
            assert same_state, "a different number of draws from the generator"
    # with EOS likely: rows finish at different steps and, once every row has finished, decoding stops
    assert len(set(lean.target_mask.sum(1).tolist())) > 1, "rows should finish at different steps"
    assert lean.target_ids.shape[1] < 40
    # the raw tokens, before Seq2SeqLM masks them: a finished row emits pad, as in `generate`
    torch.manual_seed(0)
    raw = lean_decode.generate(model.model, batch.prompt_ids, batch.prompt_mask, max_new_tokens=40, do_sample=True,
                               temperature=temperature, top_p=top_p, num_return_sequences=k,
                               eos_id=model.eos_id, pad_id=model.pad_id)
    config = GenerationConfig(max_new_tokens=40, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                              num_return_sequences=k, eos_token_id=model.eos_id, pad_token_id=model.pad_id,
                              decoder_start_token_id=getattr(model.model.config, "decoder_start_token_id", None))
    torch.manual_seed(0)
    hf_raw = model.model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, generation_config=config)
    assert torch.equal(raw, hf_raw[:, 1:] if family == "t5" else hf_raw[:, batch.prompt_ids.shape[1]:])
    finished = [ids for ids in raw.tolist() if model.eos_id in ids]
    assert finished
    for ids in finished:
        end = ids.index(model.eos_id)
        assert ids[end + 1:] == [model.pad_id] * (len(ids) - end - 1)


def test_num_return_sequences_repeats_each_prompt_in_place(tokenizer, family):
    """With k samples per prompt, rows i*k .. i*k+k-1 decode prompt i (HF's repeat_interleave)."""
    model = two_layer_model(tokenizer, family)
    model.model.eval()
    batch = prompts_of(model)
    k = 3
    single = lean_decode.decoder_for(model.model, batch.prompt_ids, batch.prompt_mask, capacity=1)
    repeated = lean_decode.decoder_for(model.model, batch.prompt_ids, batch.prompt_mask, capacity=1, expand=k)
    torch.testing.assert_close(repeated.logits, single.logits.repeat_interleave(k, dim=0), atol=1e-6, rtol=0)
    tokens = single.logits.argmax(-1)
    single.advance(tokens)
    repeated.advance(tokens.repeat_interleave(k))
    torch.testing.assert_close(repeated.logits, single.logits.repeat_interleave(k, dim=0), atol=1e-6, rtol=0)


def test_warping_is_hfs_temperature_and_top_p(tokenizer, family):
    """The sampled distribution at non-default temperature and top_p is HF's warpers applied to the HF
    model's logits, and it moves the right way: sharper for T < 1, flatter for T > 1, and top_p keeps the
    smallest set of most probable tokens whose mass reaches top_p."""
    model = two_layer_model(tokenizer, family)
    model.model.eval()
    batch = prompts_of(model)
    with torch.no_grad():
        logits = model.target_logits(batch.with_targets(batch.prompt_ids[:, :1], torch.ones_like(batch.prompt_ids[:, :1])))
    logits = logits[:, 0].float()
    entropy = {}
    for temperature, top_p in [(1.0, 1.0), (0.6, 1.0), (1.7, 1.0), (1.0, 0.7), (0.7, 0.9)]:
        hf = logits
        if temperature != 1.0:
            hf = TemperatureLogitsWarper(temperature)(None, hf)
        if top_p < 1.0:
            hf = TopPLogitsWarper(top_p)(None, hf)
        ours = lean_decode.warp(logits, temperature, top_p)
        assert torch.equal(torch.softmax(ours, -1), torch.softmax(hf, -1))
        probs = torch.softmax(ours, -1)
        entropy[temperature, top_p] = float(-(probs * probs.clamp_min(1e-30).log()).sum(-1).mean())
        if top_p < 1.0:  # the kept set, computed independently from the tempered distribution
            full = torch.softmax(logits / temperature, -1)
            for row, kept in zip(full, probs > 0, strict=True):
                ordered = row.sort(descending=True).values
                size = int((ordered.cumsum(0) < top_p).sum()) + 1  # the smallest prefix with mass >= top_p
                assert size - 1 <= int(kept.sum()) <= size + 1  # +-1: float ties at the boundary
                assert 1 < int(kept.sum()) < len(row)
    assert entropy[0.6, 1.0] < entropy[1.0, 1.0] < entropy[1.7, 1.0]
    assert entropy[1.0, 0.7] < entropy[1.0, 1.0]


def test_top_p_by_hand():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda top_p: (lean_decode.top_p_filter(logits, top_p) > -float("inf")).tolist()[0]  # noqa: E731
    assert kept(0.75) == [False, True, False, True]  # 0.5 + 0.3 = 0.8 > 0.75
    assert kept(0.85) == [False, True, True, True]
    assert kept(0.1) == [False, True, False, False]
    assert kept(0.0) == [False, True, False, False]  # at least the most probable token (min_tokens_to_keep)
    assert kept(1.0) == [True, True, True, True]
    # a set whose mass is exactly top_p is enough (HF drops cumulative <= 1 - top_p, not < 1 - top_p)
    assert lean_decode.top_p_filter(torch.zeros(1, 4), 0.5).isfinite().sum() == 2


def test_first_token_frequencies_follow_the_warped_distribution(tokenizer, family):
    """Independently of `generate`: 6000 first tokens of one prompt at T 0.7, top_p 0.9 follow the
    softmax of HF's warpers on the HF logits (chi-square)."""
    model = two_layer_model(tokenizer, family)
    model.model.eval()
    batch = prompts_of(model, 1)
    temperature, top_p, n = 0.7, 0.9, 6000
    with torch.no_grad():
        logits = model.target_logits(batch.with_targets(batch.prompt_ids[:, :1], torch.ones_like(batch.prompt_ids[:, :1])))
    expected = torch.softmax(TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits[:, 0].float())), -1)[0]
    torch.manual_seed(0)
    first = lean_decode.generate(model.model, batch.prompt_ids, batch.prompt_mask, max_new_tokens=1, do_sample=True,
                                 temperature=temperature, top_p=top_p, num_return_sequences=n,
                                 eos_id=model.eos_id, pad_id=model.pad_id)[:, 0]
    counts = torch.bincount(first, minlength=expected.numel()).double()
    support = expected > 0
    assert counts[~support].sum() == 0, "a token top_p removed was drawn"
    assert int(support.sum()) < expected.numel()
    # pool the rare tokens so that every cell expects >= 5 draws
    order = expected[support].argsort(descending=True)
    exp, obs = (expected[support][order] * n).double(), counts[support][order]
    common = exp >= 5
    exp = torch.cat([exp[common], exp[~common].sum().reshape(1)]) if (~common).any() else exp
    obs = torch.cat([obs[common], obs[~common].sum().reshape(1)]) if (~common).any() else obs
    assert chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue > 1e-3


def test_bf16_autocast_gives_generates_logits(tokenizer, family):
    """Under bf16 autocast (what training asks for with bf16) the lean decoder's float32 logits are
    still bit for bit those of `generate` under the same autocast (on CPU; the same ops autocast alike)."""
    model = two_layer_model(tokenizer, family)
    model.model.eval()
    batch = prompts_of(model)
    config = GenerationConfig(max_new_tokens=6, do_sample=False, eos_token_id=model.eos_id, pad_token_id=model.pad_id,
                              decoder_start_token_id=getattr(model.model.config, "decoder_start_token_id", None),
                              return_dict_in_generate=True, output_logits=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                                   generation_config=config)
        new = out.sequences[:, 1:] if family == "t5" else out.sequences[:, batch.prompt_ids.shape[1]:]
        decoder = lean_decode.decoder_for(model.model, batch.prompt_ids, batch.prompt_mask, capacity=new.shape[1])
        for t, expected in enumerate(out.logits):
            assert decoder.logits.dtype == torch.float32 and torch.equal(decoder.logits, expected), f"step {t}"
            decoder.advance(new[:, t])


def test_decoder_switch(tokenizer, family, monkeypatch):
    model = two_layer_model(tokenizer, family)
    batch = prompts_of(model)
    with pytest.raises(ValueError, match="decoder must be one of"):
        Seq2SeqLM(model.model, tokenizer, decoder="fast")

    def refuse(*args, **kwargs):
        raise AssertionError("the other decoder was used")

    monkeypatch.setattr(model.model, "generate", refuse)  # the default decodes without HF generate
    assert model.decoder == "lean"
    model.generate(batch, max_new_tokens=4, do_sample=True)
    monkeypatch.undo()
    monkeypatch.setattr(lean_decode, "generate", refuse)
    Seq2SeqLM(model.model, tokenizer, decoder="hf").generate(batch, max_new_tokens=4, do_sample=True)


@pytest.mark.parametrize("weight", [0.0, 0.4])
def test_mixture_sampling_is_the_same_with_either_decoder(tokenizer, family, weight):
    """MiniLLM's teacher-mixed sampler steps the lean decoders of both models; it draws the same tokens
    as with Hugging Face's modules stepping (decoder "hf")."""
    student = two_layer_model(tokenizer, family, seed=1, lively=False)
    teacher = two_layer_model(tokenizer, family, seed=2, width=48, lively=False)
    batch = prompts_of(student, 8)
    make_eos_likely(student, bonus=4.0)
    make_eos_likely(teacher, bonus=4.0)
    assert lean_decode.supports(student.model) and lean_decode.supports(teacher.model)
    outputs = []
    for decoder in ("hf", "lean"):
        student.decoder = teacher.decoder = decoder
        torch.manual_seed(4)
        outputs.append(sample_mixture(student, teacher, batch, teacher_weight=weight, max_new_tokens=30,
                                      temperature=0.9))
    hf, lean = outputs
    assert torch.equal(lean.target_ids, hf.target_ids) and torch.equal(lean.target_mask, hf.target_mask)
    assert len(set(lean.target_mask.sum(1).tolist())) > 1
