"""The teacher cache: exact mode trains as the live teacher does, top-k's error is bounded by the dropped
mass, rows are found by content, and a cache that is not the run's, or is damaged, is refused."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model, toy_pairs
from xkdbench.config import SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.core.teacher_cache import (
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
    row_key,
    top_k_error,
)
from xkdbench.core.trainer import TrainSetup, backward_step, train
from xkdbench.methods import FIXED, METHODS, SAMPLED, method_config
from xkdbench.methods.bellman_distill import with_trailing_pad

CPU = torch.device("cpu")
LLAMA = pytest.mark.parametrize("family", ["llama"])  # one family where the other adds nothing
IDENTITY = {"teacher": "a" * 64, "tokenizer": "b" * 64, "data": "c" * 64, "max_prompt_tokens": 24,
            "max_target_tokens": 12}

# every method family that asks the teacher about fixed sequences, with settings that read it differently
FIXED_CASES = [
    ("supervised_kd", {}),
    ("supervised_kd", {"hard_label_weight": 0.5, "loss_temperature": 2.0}),
    ("token_divergence", {"divergence": "reverse_kl"}),
    ("token_divergence", {"divergence": "jsd", "beta": 0.5, "loss_temperature": 0.5}),
    ("token_divergence", {"divergence": "total_variation"}),
    ("gkd", {"student_data_fraction": 0.0, "seq_kd": True}),
    ("distillm", {"divergence": "skew_reverse_kl", "threshold_increment": 0.0}),  # the threshold stays 0: gold
    ("xkd_div", {"student_data_fraction": 0.0, "regulariser_on": "gold", "reward_likelihood_weight": 0.1}),
    ("bellman_distill", {}),
    ("bellman_distill", {"expert_term": "code", "top_p": 0.5, "temperature": 2.0}),
]


def the_teacher(tokenizer, family):
    return tiny_model(tokenizer, family, seed=2, width=48)


def fixed_rows(data: TrainData, with_outputs: bool = True):
    rows = list(zip(data.prompts, data.targets, strict=True))
    return rows + list(zip(data.prompts, data.teacher_outputs, strict=True)) if with_outputs else rows


def build(directory, teacher, data, top_k=None, with_outputs=True) -> TeacherCache:
    identity = {**IDENTITY, "teacher_outputs": "d" * 64 if with_outputs else None}
    build_teacher_cache(teacher, fixed_rows(data, with_outputs), directory, top_k=top_k, batch_size=16, device=CPU,
                        use_bf16=False, identity=identity)
    return TeacherCache.open(directory, expect=IDENTITY, mode="top_k" if top_k else "exact", top_k=top_k or 64)


def context(student, teacher, cache=None):
    return TrainContext(student, teacher, SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0,
                        total_steps=4, validate_every=2, teacher_cache=cache)


# -- exact mode is the live teacher --------------------------------------------------------------
def first_step(tokenizer, family, data, method, settings, cache):
    """Loss terms (token means) and gradients of one step of batch 4 x accumulation 2. With the cache, a
    method that asks only about fixed sequences gets no live teacher at all."""
    student = tiny_model(tokenizer, family, seed=1)
    cls, config = METHODS.get(method), method_config(method, settings)
    live = cache is None or SAMPLED in cls.teacher_sequences(config)
    ctx = context(student, the_teacher(tokenizer, family) if live else None, cache)
    impl = cls(config, ctx)
    loader = StepLoader(data, student, batch_size=4, grad_accum=2, seed=0)
    micro = [impl.sequences(examples, 0) for examples in loader.step_examples(0)]
    tokens, totals = backward_step(impl, micro)
    modules = {"student": student.model, **impl.trainable_modules()}
    grads = {f"{m}.{n}": p.grad.clone() for m, module in modules.items() for n, p in module.named_parameters()
             if p.grad is not None}
    counts = (int(ctx.teacher_forward_sequences), int(ctx.teacher_cache_sequences))
    return {name: total / tokens for name, total in totals.items()}, grads, counts


@pytest.mark.parametrize("method,settings", FIXED_CASES)
def test_exact_cache_gives_the_live_losses_and_gradients(tmp_path, tokenizer, family, toy_data, method, settings):
    cache = build(tmp_path / "cache", the_teacher(tokenizer, family), toy_data)
    live_terms, live_grads, live_counts = first_step(tokenizer, family, toy_data, method, settings, None)
    terms, grads, counts = first_step(tokenizer, family, toy_data, method, settings, cache)
    assert terms.keys() == live_terms.keys() and grads.keys() == live_grads.keys()
    for name in terms:
        torch.testing.assert_close(terms[name], live_terms[name], atol=1e-6, rtol=1e-6, msg=name)
    for name in grads:
        torch.testing.assert_close(grads[name], live_grads[name], atol=1e-6, rtol=1e-6, msg=name)
    assert live_counts == (8, 0) and counts == (0, 8)  # 8 sequences a step, none through the teacher


def run(tokenizer, family, data, out, method, settings, cache=None, steps=4):
    cls, config = METHODS.get(method), method_config(method, settings)
    live = cache is None or SAMPLED in cls.teacher_sequences(config)
    student = tiny_model(tokenizer, family, seed=1)
    training = TrainingConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, validate_every=2)
    setup = TrainSetup(cls, config, student, data, training, 0, CPU, validation=data, sampling=SamplingConfig(),
                       teacher=the_teacher(tokenizer, family) if live else None, max_new_tokens=8,
                       teacher_cache=cache)
    return student, train(setup, out)


def assert_same_weights(a, b):
    """Equal up to Adam's amplification of float rounding. The gradients agree to ~1e-9 (the cached numbers
    differ from the live teacher's in the last float32 bits: another batch, another padding), but Adam
    divides each coordinate by its own gradient's magnitude, so the few coordinates whose gradient is itself
    ~1e-8 (tokens neither model puts mass on) move up to ~1e-5 differently at lr 1e-2. How many such
    coordinates there are depends on the CPU's kernels: 0.1% with AVX2, 1.2% with AVX-512 (supervised KD);
    either is far from a wrong cache (another teacher's), which moves the median weight by 1e-2."""
    diffs = torch.cat([(x - y).abs().flatten() for x, y in zip(a.model.state_dict().values(),
                                                              b.model.state_dict().values(), strict=True)])
    assert diffs.max() <= 5e-5, diffs.max()
    assert (diffs > 1e-6).sum() <= 0.05 * diffs.numel(), (diffs > 1e-6).sum()


@LLAMA
@pytest.mark.parametrize("method,settings", [FIXED_CASES[i] for i in (0, 2, 5, 6, 7, 8)])
def test_a_whole_off_policy_run_on_the_exact_cache_ends_where_the_live_run_ends(tmp_path, tokenizer, family,
                                                                                  toy_data, method, settings):
    cache = build(tmp_path / "cache", the_teacher(tokenizer, family), toy_data)
    live, live_summary = run(tokenizer, family, toy_data, tmp_path / "live", method, settings)
    cached, summary = run(tokenizer, family, toy_data, tmp_path / "cached", method, settings, cache)
    assert_same_weights(live, cached)
    assert live_summary["teacher_forward_sequences"] == 4 * 8 and live_summary["teacher_cache_sequences"] == 0
    assert summary["teacher_forward_sequences"] == 0 and summary["teacher_cache_sequences"] == 4 * 8


@LLAMA
def test_a_mixed_run_sends_only_its_samples_to_the_live_teacher(tmp_path, tokenizer, family, toy_data):
    """GKD at lambda 0.5: the fixed steps read the cache, the on-policy steps the live teacher (counted);
    the run ends where the live run ends."""
    settings = {"student_data_fraction": 0.5, "divergence": "reverse_kl"}
    cache = build(tmp_path / "cache", the_teacher(tokenizer, family), toy_data)
    live, live_summary = run(tokenizer, family, toy_data, tmp_path / "live", "gkd", settings, steps=6)
    cached, summary = run(tokenizer, family, toy_data, tmp_path / "cached", "gkd", settings, cache, steps=6)
    assert_same_weights(live, cached)
    coins = METHODS.get("gkd")(method_config("gkd", settings), context(None, None))  # the run's coins
    on_policy_steps = sum(coins.on_policy(step) for step in range(6))
    assert 0 < on_policy_steps < 6 and live_summary["teacher_forward_sequences"] == 6 * 8
    assert summary["teacher_forward_sequences"] == 8 * on_policy_steps
    assert summary["teacher_cache_sequences"] == 8 * (6 - on_policy_steps)


# -- finding rows ---------------------------------------------------------------------------------
def test_rows_are_found_by_content_in_any_order_and_padding(tmp_path, tokenizer, family, toy_data):
    teacher = the_teacher(tokenizer, family)
    cache = build(tmp_path / "cache", teacher, toy_data)
    assert len(cache) == len({row_key(p, t) for p, t in fixed_rows(toy_data)})  # duplicates stored once
    order = [5, 3, 60, 1]
    gold = teacher.collate([toy_data.prompts[i] for i in order], [toy_data.targets[i] for i in order])
    rows = cache.find(gold)
    assert None not in rows and len(set(rows)) == 4
    # the same rows reversed, one teacher output, a row never cached, and Bellman Distill's padding column
    prompts = [toy_data.prompts[i] for i in order[::-1]] + [toy_data.prompts[7], toy_data.prompts[0]]
    targets = [toy_data.targets[i] for i in order[::-1]] + [toy_data.teacher_outputs[7], [teacher.eos_id]]
    batch = with_trailing_pad(teacher.collate(prompts, targets), teacher.pad_id)
    found = cache.find(batch)
    assert found[:4] == rows[::-1] and found[4] is not None and found[5] is None
    dense = cache.log_probs(found, batch.target_ids.shape[1])  # (6, T + 1, V)
    with torch.no_grad():
        live = torch.log_softmax(teacher.target_logits(batch).float(), dim=-1)
    valid = batch.target_mask.bool()
    valid[5] = False  # the uncached row
    # the same numbers at every valid position (up to float rounding of a differently padded batch)
    torch.testing.assert_close(dense[valid], live[valid], atol=1e-5, rtol=0)
    # elsewhere (padding, the extra column, the uncached row) the uniform distribution: finite
    vocab = dense.shape[-1]
    assert torch.equal(dense[~valid], torch.full_like(dense[~valid], -math.log(vocab)))


def test_hidden_states_come_from_one_counted_live_forward_even_for_cached_rows(tmp_path, tokenizer, family,
                                                                               toy_data):
    """AMM's adversary reads the teacher's hidden states, which the cache does not hold: asking with
    with_hidden goes live for every row and counts one forward per row, never a cache hit."""
    teacher = the_teacher(tokenizer, family)
    ctx = context(tiny_model(tokenizer, family, seed=1), teacher, build(tmp_path / "cache", teacher, toy_data))
    gold = teacher.collate(toy_data.prompts[:4], toy_data.targets[:4])
    logits, hidden = ctx.teacher_logits(gold, with_hidden=True)
    with torch.no_grad():
        want_logits, want_hidden = teacher.target_logits(gold, with_hidden=True)
    assert torch.equal(logits, want_logits) and torch.equal(hidden, want_hidden)
    assert (int(ctx.teacher_forward_sequences), int(ctx.teacher_cache_sequences)) == (4, 0)
    ctx.teacher_logits(gold)  # the same rows without hidden states: served by the cache
    assert (int(ctx.teacher_forward_sequences), int(ctx.teacher_cache_sequences)) == (4, 4)


@LLAMA
def test_a_fixed_only_run_asking_about_a_sample_fails_loudly(tmp_path, tokenizer, family, toy_data):
    teacher = the_teacher(tokenizer, family)
    cache = build(tmp_path / "cache", teacher, toy_data)
    ctx = context(tiny_model(tokenizer, family, seed=1), None, cache)
    stranger = teacher.collate([toy_data.prompts[0]], [[teacher.eos_id]])
    with pytest.raises(RuntimeError) as error:
        ctx.teacher_logits(stranger)
    assert str(error.value) == (
        "teacher logits were asked for with no live teacher loaded: the teacher cache holds only the fixed "
        "training sequences; a method whose teacher_sequences are FIXED only must not ask about generated sequences")


@pytest.mark.parametrize("method,settings,expected", [
    ("sft", {}, set()), ("seqkd", {}, set()), ("xkd_seq", {}, set()),
    ("supervised_kd", {}, {FIXED}), ("token_divergence", {}, {FIXED}), ("bellman_distill", {}, {FIXED}),
    ("gkd", {"student_data_fraction": 0.0}, {FIXED}), ("gkd", {"student_data_fraction": 0.5}, {FIXED, SAMPLED}),
    ("gkd", {"student_data_fraction": 1.0}, {SAMPLED}), ("xkd_div", {"student_data_fraction": 0.0}, {FIXED}),
    ("distillm", {}, {FIXED, SAMPLED}), ("distillm", {"threshold_increment": 0.0}, {FIXED}),
    ("distillm", {"initial_threshold": 1.0}, {SAMPLED}),
    ("distillm", {"initial_threshold": 0.5, "threshold_increment": 0.0}, {FIXED, SAMPLED}), ("minillm", {}, {SAMPLED}),
])
def test_each_method_declares_the_sequences_it_asks_the_teacher_about(method, settings, expected):
    assert METHODS.get(method).teacher_sequences(method_config(method, settings)) == expected


# -- top-k ----------------------------------------------------------------------------------------
@LLAMA
def test_top_k_keeps_the_top_entries_and_spreads_the_dropped_mass(tmp_path, tokenizer, family, toy_data):
    teacher = the_teacher(tokenizer, family)
    exact, k = build(tmp_path / "exact", teacher, toy_data), 8
    top = build(tmp_path / "top", teacher, toy_data, top_k=k)
    assert top.token_ids.dtype == np.int16 and top.logprobs.dtype == np.float16
    rows = list(range(len(exact)))
    width = int(np.diff(exact.offsets).max())
    valid = torch.arange(width) < torch.from_numpy(np.diff(exact.offsets))[:, None]  # (N, width)
    p = exact.log_probs(rows, width)[valid].double().numpy()  # (P, V)
    q = top.log_probs(rows, width)[valid].double().numpy()
    vocab = p.shape[1]
    # an independent reference in float64: the k largest as they are, the rest's mass spread evenly
    order = np.argsort(-p, axis=1)
    kept = np.take_along_axis(p, order[:, :k], axis=1)
    mass = np.exp(np.take_along_axis(p, order[:, k:], axis=1)).sum(axis=1)
    reference = np.repeat(np.log(mass / (vocab - k))[:, None], vocab, axis=1)
    np.put_along_axis(reference, order[:, :k], kept, axis=1)
    # storage rounds each kept log-probability to float16: at most 2^-11 of it
    np.testing.assert_allclose(q, reference, rtol=2.0 ** -11, atol=1e-7)
    np.testing.assert_allclose(np.exp(q).sum(axis=1), 1.0, atol=2.0 ** -11)
    tv = 0.5 * np.abs(np.exp(p) - np.exp(q)).sum(axis=1)
    rounding = 0.5 * np.abs(np.exp(q) - np.exp(reference)).sum(axis=1)
    assert (tv <= mass + rounding + 1e-12).all() and mass.max() > 1e-3  # the bound binds somewhere
    # the reported error is the reference's (before float16 rounding)
    error = top_k_error(torch.from_numpy(p), k)
    np.testing.assert_allclose(error["dropped_mass"].numpy(), mass, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(error["total_variation"].numpy(),
                               0.5 * np.abs(np.exp(p) - np.exp(reference)).sum(axis=1), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(error["kl"].numpy(), (np.exp(p) * (p - reference)).sum(axis=1), rtol=1e-9,
                               atol=1e-15)
    assert (error["total_variation"] <= error["dropped_mass"] + 1e-12).all()


def test_top_k_error_by_hand():
    """p = (0.5, 0.3, 0.15, 0.05), k = 2: m = 0.2 spread as 0.1 + 0.1; TV = 0.5 (0.05 + 0.05) = 0.05;
    KL = 0.15 log(1.5) + 0.05 log(0.5)."""
    error = top_k_error(torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).log(), 2)
    assert error["dropped_mass"].item() == pytest.approx(0.2)
    assert error["total_variation"].item() == pytest.approx(0.05)
    assert error["kl"].item() == pytest.approx(0.15 * math.log(1.5) + 0.05 * math.log(0.5))


# -- integrity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,what", [("teacher", "other teacher weights"), ("tokenizer", "other tokenizer"),
                                      ("data", "other training data"), ("max_target_tokens", "other max_target")])
@LLAMA
def test_a_cache_built_from_other_inputs_is_refused(tmp_path, tokenizer, family, toy_data, key, what):
    build(tmp_path / "cache", the_teacher(tokenizer, family), toy_data)
    with pytest.raises(TeacherCacheError, match=f"built from {what}.*rebuild it with `xkdbench teacher-cache`"):
        TeacherCache.open(tmp_path / "cache", expect={**IDENTITY, key: "other"}, mode="exact", top_k=64)
    with pytest.raises(TeacherCacheError, match="built from other teacher outputs"):
        TeacherCache.open(tmp_path / "cache", expect={**IDENTITY, "teacher_outputs": "e" * 64}, mode="exact",
                          top_k=64)
    with pytest.raises(TeacherCacheError, match="built in mode exact, the config's teacher_cache asks for top_k 64"):
        TeacherCache.open(tmp_path / "cache", expect=IDENTITY, mode="top_k", top_k=64)


@pytest.mark.parametrize("damage,message", [
    ("truncate", r"logprobs.npy has \d+ bytes, the manifest says \d+ \(truncated"),
    ("corrupt", r"token_ids.npy is corrupted"),
    ("delete", r"tail_logmass.npy is missing"),
    ("unfinished", r"has no manifest.json \(no cache, or an interrupted build\)"),
])
@LLAMA
def test_a_damaged_cache_is_refused(tmp_path, tokenizer, family, toy_data, damage, message):
    build(tmp_path / "cache", the_teacher(tokenizer, family), toy_data, top_k=4)
    directory = tmp_path / "cache"
    if damage == "truncate":
        data = (directory / "logprobs.npy").read_bytes()
        (directory / "logprobs.npy").write_bytes(data[:-100])
    elif damage == "corrupt":
        data = bytearray((directory / "token_ids.npy").read_bytes())
        data[-1] ^= 1
        (directory / "token_ids.npy").write_bytes(bytes(data))
    elif damage == "delete":
        (directory / "tail_logmass.npy").unlink()
    else:
        (directory / "manifest.json").unlink()
    with pytest.raises(TeacherCacheError, match=message):
        TeacherCache.open(directory, expect=IDENTITY, mode="top_k", top_k=4)


@LLAMA
def test_an_interrupted_build_leaves_nothing_behind(tmp_path, tokenizer, family, toy_data):
    teacher = the_teacher(tokenizer, family)
    forward, calls = teacher.target_logits, []

    def failing(batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(batch)

    teacher.target_logits = failing
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "cache", teacher, toy_data)
    assert list(tmp_path.iterdir()) == []


@LLAMA
def test_a_run_whose_training_sequences_are_not_all_cached_is_refused(tmp_path, tokenizer, family, toy_data):
    teacher = the_teacher(tokenizer, family)
    cache = build(tmp_path / "cache", teacher, toy_data, with_outputs=False)
    with pytest.raises(TeacherCacheError, match="64 of the run's 64 teacher outputs are not in the cache.*other "
                                                "sequence limits or without --teacher-outputs; rebuild it with"):
        run(tokenizer, family, toy_data, tmp_path / "bellman", "bellman_distill", {}, cache)
    prompts, targets = toy_pairs(64, seed=1)
    other = TrainData.from_texts(teacher, prompts, targets, max_prompt_tokens=24, max_target_tokens=12)
    with pytest.raises(TeacherCacheError, match=r"\d+ of the run's 64 gold targets are not in the cache"):
        run(tokenizer, family, other, tmp_path / "kd", "supervised_kd", {}, cache)
