"""The teacher cache at its edges: every stored row read back against the live teacher, positions past
a row's end, bf16 builds, the top-k error where the teacher gives a token no probability, and the
messages that say why a cache is refused."""
from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model
from tests.core.test_teacher_cache import IDENTITY, build, context, fixed_rows, the_teacher
from xkdbench.config import ConfigError
from xkdbench.core.teacher_cache import (
    MANIFEST,
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
    token_id_dtype,
    top_k_error,
)
from xkdbench.io import provenance

CPU = torch.device("cpu")
LLAMA = pytest.mark.parametrize("family", ["llama"])


def live_log_probs(teacher, rows):
    batch = teacher.collate([p for p, _ in rows], [t for _, t in rows])
    with torch.no_grad():
        return batch, torch.log_softmax(teacher.target_logits(batch).float(), dim=-1)


@LLAMA
def test_every_row_of_an_exact_cache_is_the_live_teachers_and_padding_is_uniform(tmp_path, tokenizer, family,
                                                                                 toy_data):
    teacher = the_teacher(tokenizer, family)
    cache = build(tmp_path / "cache", teacher, toy_data)
    batch, live = live_log_probs(teacher, fixed_rows(toy_data))
    rows = cache.find(batch)
    assert None not in rows
    width = batch.target_ids.shape[1] + 2  # two columns past the longest row
    cached = cache.log_probs(rows, width)
    mask = batch.target_mask.bool()
    torch.testing.assert_close(cached[:, :live.shape[1]][mask], live[mask], rtol=0, atol=2e-6)
    vocab = live.shape[-1]
    padding = torch.ones(cached.shape[:2], dtype=torch.bool)
    padding[:, :live.shape[1]] = ~mask
    assert torch.equal(cached[padding], torch.full_like(cached[padding], -math.log(vocab)))


@LLAMA
def test_top_k_rows_past_their_end_and_uncached_rows_are_uniform(tmp_path, tokenizer, family, toy_data):
    """Finite there, so a masked loss stays unchanged (0 times a finite number)."""
    teacher = the_teacher(tokenizer, family)
    cache = build(tmp_path / "cache", teacher, toy_data, top_k=4)
    batch, live = live_log_probs(teacher, fixed_rows(toy_data)[:6])
    rows = cache.find(batch)
    out = cache.log_probs([*rows, None], live.shape[1] + 1)
    vocab = live.shape[-1]
    beyond = torch.ones(out.shape[:2], dtype=torch.bool)
    beyond[:6, :live.shape[1]] = ~batch.target_mask.bool()
    assert torch.equal(out[beyond], torch.full_like(out[beyond], -math.log(vocab)))
    kept = out[:6, :live.shape[1]][batch.target_mask.bool()]
    assert torch.isfinite(kept).all()
    torch.testing.assert_close(kept.exp().sum(-1), torch.ones(kept.shape[0]), rtol=0, atol=2.0 ** -10)


@LLAMA
def test_a_bf16_build_stores_the_autocast_teachers_log_probabilities(tmp_path, tokenizer, family, toy_data):
    teacher = the_teacher(tokenizer, family)
    rows = fixed_rows(toy_data, with_outputs=False)[:8]  # one build batch: the same padding as the batch below
    identity = {**IDENTITY, "teacher_outputs": None}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        build_teacher_cache(teacher, rows, tmp_path / name, top_k=None, batch_size=8, device=CPU, use_bf16=bf16,
                            identity=identity)
    fp32, bf16 = (TeacherCache.open(tmp_path / n, expect=IDENTITY, mode="exact", top_k=64) for n in ("fp32", "bf16"))
    batch = teacher.collate([p for p, _ in rows], [t for _, t in rows])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = torch.log_softmax(teacher.target_logits(batch).float(), dim=-1)
    mask = batch.target_mask.bool()
    width = batch.target_ids.shape[1]
    got = bf16.log_probs(bf16.find(batch), width)[mask]
    torch.testing.assert_close(got, autocast[mask], rtol=0, atol=1e-5)
    assert (got - fp32.log_probs(fp32.find(batch), width)[mask]).abs().max() > 1e-3  # bf16 is not fp32
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert [json.loads((tmp_path / n / MANIFEST).read_text())["precision"] for n in ("fp32", "bf16")] == ["fp32", "bf16"]


def test_a_top_k_that_keeps_the_whole_vocabulary_is_refused(tmp_path, tokenizer):
    teacher = tiny_model(tokenizer, "llama")
    vocab = teacher.model.get_output_embeddings().weight.shape[0]
    with pytest.raises(ConfigError, match=re.escape(f"teacher_cache.top_k: {vocab} keeps the whole vocabulary "
                                                    f"({vocab} tokens); allowed: 1..{vocab - 1}, or mode: exact")):
        build_teacher_cache(teacher, [([5, 6], [7, 8])], tmp_path / "c", top_k=vocab, batch_size=2, device=CPU,
                            use_bf16=False, identity={**IDENTITY, "teacher_outputs": None})


def test_a_teacher_whose_logits_are_narrower_than_its_output_layer_is_named(tmp_path, tokenizer):
    """The cache's rows are as wide as the output layer; a teacher whose target_logits drop a column (a
    wrapper slicing off a padded vocabulary, say) would shift every stored id, so the build stops."""
    teacher = tiny_model(tokenizer, "llama")
    vocab = teacher.model.get_output_embeddings().out_features
    full = teacher.target_logits
    teacher.target_logits = lambda batch: full(batch)[..., :-1]
    with pytest.raises(RuntimeError, match=re.escape(f"the teacher's logits have {vocab - 1} entries, "
                                                     f"its output layer {vocab}")):
        build_teacher_cache(teacher, [([5, 6], [7, 8])], tmp_path / "c", top_k=4, batch_size=2, device=CPU,
                            use_bf16=False, identity={**IDENTITY, "teacher_outputs": None})
    assert not (tmp_path / "c").exists()  # nothing half-built is left behind


def test_top_k_error_where_the_teacher_gives_a_token_no_probability():
    """log p = -inf for a token: it adds nothing to the KL (0 log 0 = 0), not NaN."""
    exact = torch.tensor([0.6, 0.3, 0.1, 0.0], dtype=torch.float64).log()
    error = top_k_error(exact, 2)
    # m = 0.1 spread over 2 tokens: q = (0.6, 0.3, 0.05, 0.05); KL = 0.1 log(0.1 / 0.05)
    assert error["kl"].item() == pytest.approx(0.1 * math.log(2.0), rel=1e-12)
    assert error["total_variation"].item() == pytest.approx(0.05, rel=1e-12)


def test_top_k_error_of_half_precision_is_computed_in_float32():
    exact = torch.log_softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(0)), -1)
    half = top_k_error(exact.half(), 5)
    reference = top_k_error(exact.half().float(), 5)
    for key in ("dropped_mass", "total_variation", "kl"):
        assert half[key].dtype == torch.float32
        torch.testing.assert_close(half[key], reference[key], rtol=0, atol=0)


# -- why a cache is refused, in words ---------------------------------------------------------------------
@pytest.fixture
def built(tmp_path, tokenizer, toy_data):
    build(tmp_path / "cache", the_teacher(tokenizer, "llama"), toy_data, with_outputs=False)
    return tmp_path / "cache"


def rebuild(directory):
    return (f"rebuild it with `xkdbench teacher-cache` (in the workflow: rerun snakemake with "
            f"`--forcerun {directory / MANIFEST}`)")


def edit_manifest(directory, **changes):
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest.update(changes)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def refused(directory, message, **kwargs):
    kwargs = {"expect": IDENTITY, "mode": "exact", "top_k": 64, **kwargs}
    with pytest.raises(TeacherCacheError) as error:
        TeacherCache.open(directory, **kwargs)
    assert str(error.value) == message


def test_a_damaged_manifest_is_named(built):
    (built / MANIFEST).write_text('{"files": {}')
    refused(built, f"--teacher-cache: {built / MANIFEST} is damaged (truncated or overwritten: not the manifest "
                   f"the build wrote); {rebuild(built)}")


def test_another_format_is_named(built):
    edit_manifest(built, format=99)
    refused(built, f"--teacher-cache: {built} is in format 99, this version reads 1; {rebuild(built)}",
            where="--teacher-cache")


def test_the_differing_identity_is_named_with_both_values(built):
    refused(built, f"config: the cache was built from other training data than this run's (data: cache "
                   f"{'c' * 16}, run {'e' * 16}); {rebuild(built)} from the run's inputs",
            expect={**IDENTITY, "data": "e" * 64}, where="config")


def test_a_run_reading_teacher_outputs_still_checks_every_other_input(built):
    """A cache without teacher outputs may serve a SeqKD run's gold rows, but only if the rest matches."""
    outputs_first = {"teacher_outputs": "d" * 64, **IDENTITY}
    assert TeacherCache.open(built, expect=outputs_first, mode="exact", top_k=64)
    refused(built, f"--teacher-cache: the cache was built from other tokenizer than this run's (tokenizer: cache "
                   f"{'b' * 16}, run {'f' * 16}); {rebuild(built)} from the run's inputs",
            expect={**outputs_first, "tokenizer": "f" * 64})


def test_a_run_without_teacher_outputs_refuses_a_cache_that_has_them(tmp_path, tokenizer, toy_data):
    build(tmp_path / "cache", the_teacher(tokenizer, "llama"), toy_data, with_outputs=True)
    with pytest.raises(TeacherCacheError, match=r"\(teacher_outputs: cache d{16}, run None\)"):
        TeacherCache.open(tmp_path / "cache", expect={**IDENTITY, "teacher_outputs": None}, mode="exact", top_k=64)


def test_a_manifest_with_other_files_is_named(built):
    manifest = json.loads((built / MANIFEST).read_text())
    files = dict(manifest["files"])
    files.pop("keys.npy")
    edit_manifest(built, files=files)
    refused(built, f"--teacher-cache: the manifest lists ['logprobs.npy', 'offsets.npy'], a exact cache has "
                   f"['keys.npy', 'logprobs.npy', 'offsets.npy']; {rebuild(built)}")


def test_rows_not_in_the_cache_are_counted_and_the_first_named(built, tokenizer, toy_data):
    cache = TeacherCache.open(built, expect=IDENTITY, mode="exact", top_k=64)
    prompts = [p for p, _ in fixed_rows(toy_data, with_outputs=False)][:5]
    targets = [t for _, t in fixed_rows(toy_data, with_outputs=False)][:5]
    targets[2], targets[4] = [9, 9, 9], [8, 8]
    with pytest.raises(TeacherCacheError) as error:
        cache.check_covers(prompts, targets, "training sequences")
    assert str(error.value) == (
        "--teacher-cache: 2 of the run's 5 training sequences are not in the cache (first: training example 2); "
        "it was built from other data, other sequence limits; rebuild it with `xkdbench teacher-cache` from the "
        "run's inputs")


def test_generated_tokens_add_up_over_calls_and_follow_the_explicit_temperature(tokenizer, toy_data):
    student = tiny_model(tokenizer, "llama", seed=1)
    ctx = context(student, None)
    batch = student.collate([p for p, _ in fixed_rows(toy_data, with_outputs=False)][:4], [[5]] * 4)
    first = ctx.sample_student(batch)
    second = ctx.sample_student(batch, num_samples=2)
    assert second.target_ids.shape[0] == 8
    assert int(ctx.generated_tokens) == int(first.target_mask.sum() + second.target_mask.sum())


@pytest.mark.parametrize("top_k", [None, 4])
def test_the_manifest_describes_the_cache(tmp_path, tokenizer, toy_data, top_k):
    teacher = the_teacher(tokenizer, "llama")
    rows = fixed_rows(toy_data, with_outputs=False)
    build(tmp_path / "cache", teacher, toy_data, top_k=top_k, with_outputs=False)
    manifest = json.loads((tmp_path / "cache" / MANIFEST).read_text())
    vocab = teacher.model.get_output_embeddings().weight.shape[0]
    unique = {(tuple(p), tuple(t)) for p, t in rows}
    positions = sum(len(t) for _, t in unique)
    assert {k: manifest[k] for k in ("format", "mode", "top_k", "vocab_size", "logprob_dtype", "token_id_dtype",
                                     "rows", "positions", "precision")} == {
        "format": 1, "mode": "exact" if top_k is None else "top_k", "top_k": vocab if top_k is None else top_k,
        "vocab_size": vocab, "logprob_dtype": "float32" if top_k is None else "float16",
        "token_id_dtype": None if top_k is None else "int16", "rows": len(unique), "positions": positions,
        "precision": "fp32"}
    stored = {path.stem: np.load(path, mmap_mode="r").dtype.name for path in (tmp_path / "cache").glob("*.npy")}
    assert stored == {"keys": "uint8", "offsets": "int64",
                      "logprobs": manifest["logprob_dtype"],  # the files hold what the manifest says
                      **({} if top_k is None else {"token_ids": manifest["token_id_dtype"], "tail_logmass": "float32"})}
    assert manifest["bytes_per_position"] == pytest.approx(
        sum(f["bytes"] for f in manifest["files"].values()) / positions)
    assert 0 <= manifest["seconds"] < 60 and round(manifest["seconds"], 3) == manifest["seconds"]
    assert manifest["created_by"] == provenance()  # what built it: versions, git revision, host


def test_a_one_position_cache_counts_its_bytes_per_position(tmp_path, tokenizer):
    teacher = the_teacher(tokenizer, "llama")
    build_teacher_cache(teacher, [([5, 6, 7], [8])], tmp_path / "c", top_k=4, batch_size=4, device=CPU,
                        use_bf16=False, identity={**IDENTITY, "teacher_outputs": None})
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert manifest["positions"] == 1
    assert manifest["bytes_per_position"] == sum(f["bytes"] for f in manifest["files"].values())



def test_a_cache_build_reports_its_progress_per_batch(tmp_path, tokenizer, toy_data, capsys, monkeypatch):
    """A progress line before each batch of sequences and one at the end (a line is due every time here)."""
    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", "1e-9")
    rows = fixed_rows(toy_data, with_outputs=False)[:40]
    build_teacher_cache(the_teacher(tokenizer, "llama"), rows, tmp_path / "c", top_k=4, batch_size=16, device=CPU,
                        use_bf16=False, identity={**IDENTITY, "teacher_outputs": None})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" | ")[0] for line in lines] == [
        "[teacher-cache] sequence 0/40: starting", "[teacher-cache] sequence 0/40 (0%)",
        "[teacher-cache] sequence 16/40 (40%)", "[teacher-cache] sequence 32/40 (80%)",
        "[teacher-cache] sequence 40/40 (100%)"]


def test_token_ids_take_int16_up_to_a_32768_token_vocabulary():
    """Ids run 0..V-1: int16 holds them up to V = 32,768 (largest id 32,767), int32 from V = 32,769."""
    assert [np.dtype(token_id_dtype(v)).name for v in (2, 32_767, 32_768, 32_769, 128_256)] == \
        ["int16", "int16", "int16", "int32", "int32"]

@LLAMA
def test_token_ids_past_int16_are_stored_and_read_back(tmp_path, tokenizer, family, toy_data):
    """A 40,000-token vocabulary (T5's 32,128 fits int16; Llama-3's 128,256 does not): the cache stores
    its ids as int32 and the most probable tokens, all past 32,767, come back at their own ids."""
    teacher = the_teacher(tokenizer, family)
    hidden = teacher.model.get_output_embeddings().in_features
    head = torch.nn.Linear(hidden, 40_000)
    with torch.no_grad():  # small random logits, and the last three ids far ahead of the rest
        head.weight.copy_(torch.randn(40_000, hidden, generator=torch.Generator().manual_seed(0)) * 0.01)
        head.bias.zero_()
        head.bias[-3:] = torch.tensor([20.0, 19.0, 18.0])
    teacher.model.lm_head = head
    rows = fixed_rows(toy_data, with_outputs=False)[:4]
    started = time.perf_counter()
    build_teacher_cache(teacher, rows, tmp_path / "c", top_k=4, batch_size=4, device=CPU, use_bf16=False,
                        identity={**IDENTITY, "teacher_outputs": None})
    wall = time.perf_counter() - started
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert manifest["token_id_dtype"] == "int32" and manifest["vocab_size"] == 40_000
    assert 0 < manifest["seconds"] <= wall  # the build's own time, within the time around the call
    cache = TeacherCache.open(tmp_path / "c", expect=IDENTITY, mode="top_k", top_k=4)
    batch, live = live_log_probs(teacher, rows)
    mask = batch.target_mask.bool()
    cached = cache.log_probs(cache.find(batch), batch.target_ids.shape[1])[mask]  # (N, 40000)
    top = live[mask].topk(3, dim=-1).indices
    assert (top >= 39_997).all()
    torch.testing.assert_close(cached.gather(-1, top), live[mask].gather(-1, top), rtol=0, atol=2e-3)
