"""The core against references outside it: the logged validation NLL against Hugging Face's own
label loss example by example, and resume after a crash between two checkpoints (the log lines
written after the last checkpoint are dropped and written again)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import SamplingConfig, TrainingConfig
from xkdbench.core.data import TrainData
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.methods import METHODS, method_config

CPU = torch.device("cpu")


def log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


# -- validation NLL -------------------------------------------------------------------------------
@torch.no_grad()
def hf_label_nll(student, data: TrainData) -> float:
    """Mean gold-token NLL over all target tokens of `data`: each example alone (no padding), scored by
    the Hugging Face model's own `labels` loss (the mean cross-entropy over the labelled tokens)."""
    model = student.model.eval()
    total, count = 0.0, 0
    for prompt, target in zip(data.prompts, data.targets, strict=True):
        prompt_ids, target_ids = torch.tensor([prompt]), torch.tensor([target])
        if student.is_encoder_decoder:
            loss = model(input_ids=prompt_ids, labels=target_ids).loss
        else:  # the target follows the prompt; prompt positions carry no label
            labels = torch.cat([torch.full_like(prompt_ids, -100), target_ids], dim=1)
            loss = model(input_ids=torch.cat([prompt_ids, target_ids], dim=1), labels=labels).loss
        total += float(loss) * len(target)
        count += len(target)
    return total / count


def test_validation_nll_is_the_token_mean_of_hugging_faces_label_loss(tmp_path, tokenizer, family, toy_data):
    """13 validation pairs of different lengths, scored in batches of 8 (4 x batch_size): a token mean
    over all 13, not a mean of the two batches' means, pads excluded, with the weights of that step
    (step 1 from the student of a run stopped there, step 2 from the resumed run's final one)."""
    validation = TrainData(toy_data.prompts[:13], toy_data.targets[:13])
    lengths = [len(t) for t in validation.targets]
    assert len(set(lengths)) > 1 and sum(lengths[:8]) / 8 != sum(lengths[8:]) / 5

    def run(out, stop_after=None):
        student = tiny_model(tokenizer, family, seed=1)
        cfg = TrainingConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=0, log_every=100, validate_every=1,
                             checkpoint_every=100)
        setup = TrainSetup(METHODS.get("sft"), method_config("sft", {}), student, toy_data, cfg, 0, CPU,
                           validation=validation)
        train(setup, out, stop_after=stop_after)
        return student

    at_one = run(tmp_path, stop_after=1)  # the student object holds the weights after step 1
    first = hf_label_nll(at_one, validation)
    final = hf_label_nll(run(tmp_path), validation)
    records = {r["step"]: r["validation_nll"] for r in log(tmp_path) if "validation_nll" in r}
    assert list(records) == [1, 2]
    assert records[1] == pytest.approx(first, rel=1e-5) and records[2] == pytest.approx(final, rel=1e-5)
    assert abs(first - final) > 1e-3, "the two validations saw different weights"


# -- resume after a crash between checkpoints ----------------------------------------------------
class CrashingGKD(METHODS.get("gkd")):
    """GKD that dies when it starts building step `crash_at` (0-based), after that step's draws began."""

    crash_at = 3

    def sequences(self, examples, step):
        batch = super().sequences(examples, step)  # the coin and the sample of the step are drawn
        if step == self.crash_at:
            raise RuntimeError("simulated crash")
        return batch


def crash_run(tokenizer, family, data, out, method_cls, **training):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(**{"steps": 5, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1, "log_every": 1,
                            "checkpoint_every": 2, "validate_every": 3, **training})
    setup = TrainSetup(method_cls, method_config("gkd", {"student_data_fraction": 0.5}), student, data, cfg, 0, CPU,
                       teacher=tiny_model(tokenizer, family, seed=2, width=48), sampling=SamplingConfig(),
                       max_new_tokens=8, validation=TrainData(data.prompts[:8], data.targets[:8]))
    return student, train(setup, out)


def test_resume_after_a_crash_between_checkpoints(tmp_path, tokenizer, family, toy_data):
    """Checkpoints every 2 steps, a log line every step (and a validation at step 3). A crash in step 4
    leaves the log with lines for steps 1-3 and the checkpoint of step 2: the line of step 3 is past the
    checkpoint. The resumed run drops it, redoes steps 3-5, and ends with the log, counters and weights
    of a run that never crashed."""
    crash_at = 3
    full, summary = crash_run(tokenizer, family, toy_data, tmp_path / "full", METHODS.get("gkd"))
    CrashingGKD.crash_at = crash_at
    with pytest.raises(RuntimeError, match="simulated crash"):
        crash_run(tokenizer, family, toy_data, tmp_path / "cut", CrashingGKD)
    last_checkpoint = crash_at - 1
    assert torch.load(tmp_path / "cut" / "checkpoint" / "trainer_state.pt", weights_only=False)["step"] == last_checkpoint
    assert [r["step"] for r in log(tmp_path / "cut")] == list(range(1, crash_at + 1))  # one line past the checkpoint
    resumed, resumed_summary = crash_run(tokenizer, family, toy_data, tmp_path / "cut", METHODS.get("gkd"))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("full", "cut")]
    assert [r["step"] for r in strip[1]] == [1, 2, 3, 4, 5]
    assert strip[1] == strip[0]
    for key in ("generated_tokens", "teacher_forward_sequences", "tokens"):
        assert resumed_summary[key] == summary[key], key
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
