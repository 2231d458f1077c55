"""The training context's small contracts: what a micro-batch keeps when moved, where samples come from
(the model asked for, the temperature and count asked for), what it refuses, and its messages."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig
from xkdbench.core.context import TrainContext, TrainExamples
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.methods import METHODS, method_config

CPU = torch.device("cpu")
LLAMA = pytest.mark.parametrize("family", ["llama"])


def context(tokenizer, family, temperature=1.0, **kwargs):
    return TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                        SamplingConfig(sampling_temperature=temperature), max_new_tokens=6, device=CPU,
                        use_bf16=False, seed=0, **kwargs)


def prompts(ctx, data):
    return StepLoader(data, ctx.student, batch_size=4, grad_accum=1, seed=0).step_examples(0)[0]


def test_an_empty_training_split_is_refused_by_name(tokenizer):
    with pytest.raises(ValueError, match="^the training split is empty$"):
        TrainData.from_texts(tiny_model(tokenizer, "llama"), [], [], max_prompt_tokens=8, max_target_tokens=8)



def test_training_data_without_teacher_outputs_gives_none_and_a_length_mismatch_is_named(tokenizer):
    from tests.conftest import toy_pairs

    model = tiny_model(tokenizer, "llama")
    prompts, targets = toy_pairs(8)
    data = TrainData.from_texts(model, prompts, targets, max_prompt_tokens=24, max_target_tokens=12)
    examples = StepLoader(data, model, batch_size=4, grad_accum=2, seed=0).step_examples(0)
    assert [e.teacher_output for e in examples] == [None, None]
    with pytest.raises(ValueError, match=r"^teacher outputs cover 7 inputs, the training data has 8$"):
        TrainData.from_texts(model, prompts, targets, max_prompt_tokens=24, max_target_tokens=12,
                             teacher_outputs=targets[:7])

@LLAMA
def test_moving_a_micro_batch_keeps_its_rows_and_a_missing_teacher_output(tokenizer, family, toy_data):
    examples = prompts(context(tokenizer, family), toy_data)
    assert examples.indices is not None and examples.teacher_output is not None
    moved = examples.to(CPU)
    assert moved.indices == examples.indices and torch.equal(moved.teacher_output.target_ids,
                                                              examples.teacher_output.target_ids)
    gold_only = TrainExamples(examples.gold, None, examples.indices).to(CPU)
    assert gold_only.teacher_output is None and gold_only.indices == examples.indices


@LLAMA
def test_samples_come_from_the_model_temperature_and_count_asked_for(tokenizer, family, toy_data):
    """Asking for temperature T equals a context whose sampling temperature is T; the teacher's samples are
    the teacher's (counted as teacher sequences), num_samples per prompt."""
    gold = prompts(context(tokenizer, family), toy_data).gold
    asked = context(tokenizer, family).sample_student(gold, temperature=0.05)
    configured = context(tokenizer, family, temperature=0.05).sample_student(gold)
    default = context(tokenizer, family).sample_student(gold)
    assert torch.equal(asked.target_ids, configured.target_ids)
    assert not torch.equal(asked.target_ids, default.target_ids)
    ctx = context(tokenizer, family)
    teacher = ctx.sample_teacher(gold, temperature=0.7, num_samples=2)
    assert teacher.size == 2 * gold.size and int(ctx.teacher_forward_sequences) == 2 * gold.size
    reference = context(tokenizer, family)
    with reference.sampling_stream():
        expected = reference.teacher.generate(gold, max_new_tokens=6, do_sample=True, temperature=0.7, top_p=1.0,
                                              num_return_sequences=2)
    assert torch.equal(teacher.target_ids, expected.target_ids)
    once = ctx.sample_teacher(gold)  # one sample per prompt by default; the count adds up over calls
    assert once.size == gold.size and int(ctx.teacher_forward_sequences) == 3 * gold.size
    student = context(tokenizer, family).sample_student(gold, temperature=0.7, num_samples=2)
    assert not torch.equal(teacher.target_ids, student.target_ids)


@LLAMA
def test_distillm_refuses_a_context_without_validation(tokenizer, family):
    """Its schedule moves on validation only: a context built without `validate_every` has none."""
    with pytest.raises(ConfigError, match="distill.validate_every: 0 is not allowed for distillm"):
        METHODS.get("distillm")(method_config("distillm", {}), context(tokenizer, family, total_steps=10))
    METHODS.get("distillm")(method_config("distillm", {}), context(tokenizer, family, total_steps=10, validate_every=5))


def test_a_seed_past_numpys_range_still_seeds_numpy():
    """NumPy's legacy generator takes seeds below 2**32; a larger run seed is reduced modulo 2**32."""
    import numpy as np

    from xkdbench.core.runtime import seed_everything
    seed_everything(2**32 + 7)
    drawn = np.random.rand(3)
    np.random.seed(7)
    assert np.array_equal(drawn, np.random.rand(3))



def test_seeding_seeds_pythons_random_module_too():
    """A method may draw from Python's `random`: the run's seed decides those draws as well."""
    import random

    from xkdbench.core.runtime import seed_everything
    seed_everything(11)
    drawn = [random.random() for _ in range(3)]
    reference = random.Random(11)
    assert drawn == [reference.random() for _ in range(3)]

@LLAMA
def test_asking_a_context_without_a_teacher_for_it_says_why(tokenizer, family, toy_data):
    """A method that declared needs_teacher = False gets no teacher; asking for its logits or samples
    names the declaration (a teacher-cache run names the cache instead: tests/core/test_teacher_cache.py)."""
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), None, SamplingConfig(), max_new_tokens=6, device=CPU,
                       use_bf16=False, seed=0)
    gold = prompts(ctx, toy_data).gold
    with pytest.raises(RuntimeError, match=r"^teacher logits were asked for with no live teacher loaded: the method "
                                           r"declared needs_teacher = False; a method whose teacher_sequences are "
                                           r"FIXED only must not ask about generated sequences$"):
        ctx.teacher_logits(gold)
    with pytest.raises(RuntimeError, match=r"^this method declared needs_teacher = False but asked for teacher "
                                           r"samples$"):
        ctx.sample_teacher(gold)
