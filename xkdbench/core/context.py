"""What a method may use during training: the student, the teacher view, on-policy sampling.

The context counts the costs a method incurs (teacher forward passes, generated tokens), so the cost
figure compares methods on what they actually did. With a teacher cache (xkdbench.core.teacher_cache)
the teacher's answers on fixed training sequences come from the cache: they are counted apart, as
`teacher_cache_sequences`, and only the live teacher's passes count as teacher forward passes.
It also owns the run's random streams, each seeded from (run seed, variant stream offset, stream name)
and drawn by one consumer only:
  decisions  `ctx.rng`: a method's per-step choices (GKD's on-policy coin, DistiLLM's replay draws);
  sampling   every on-policy or teacher sample: call k is drawn under the seed of "sampling/k";
  modules    the initialisation of the method's own modules (the core builds the method under it).
The data order is the loader's own (seed, step) function. So a module that draws at construction,
or a method that samples more often, shifts no other stream: X-KD with its regulariser off trains
exactly as GKD does, bit for bit, over a whole run.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from xkdbench.config import SamplingConfig
from xkdbench.core import distributed
from xkdbench.core.runtime import stream_seed, torch_stream
from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import Seq2SeqLM

if TYPE_CHECKING:
    from xkdbench.core.teacher_cache import TeacherCache

# scores texts against the training examples at these data indices: (indices, texts) -> scores in [0, 1]
Oracle = Callable[[list[int], list[str]], list[float]]


@dataclass
class TrainExamples:
    """One micro-batch of training inputs: gold targets, and the teacher's cached outputs if asked for."""

    gold: Batch
    teacher_output: Batch | None = None
    indices: tuple[int, ...] | None = None  # the rows' positions in the training data (for the oracle)

    def to(self, device) -> TrainExamples:
        return TrainExamples(self.gold.to(device), self.teacher_output.to(device) if self.teacher_output else None,
                             self.indices)


class TrainContext:
    def __init__(self, student: Seq2SeqLM, teacher: Seq2SeqLM | None, sampling: SamplingConfig, *,
                 max_new_tokens: int, device: torch.device, use_bf16: bool, seed: int,
                 total_steps: int | None = None, validate_every: int = 0, stream: int = 0,
                 teacher_cache: TeacherCache | None = None, oracle: Oracle | None = None):
        self.student = student
        self.oracle = oracle
        # the run's step budget and validation interval, for methods whose schedules depend on them
        self.total_steps = total_steps
        self.validate_every = validate_every
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.sampling = sampling
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.use_bf16 = use_bf16
        self.seed, self.stream = seed, stream
        # Decisions a method draws per step (e.g. GKD's on-policy coin) come from this generator,
        # seeded from the run seed alone, so every process of a distributed run takes the same branch.
        self.rng = random.Random(stream_seed(seed, "decisions", stream))
        self.sampling_calls = 0  # saved in checkpoints: a resumed run continues the sampling stream
        self.teacher_forward_sequences = torch.zeros((), dtype=torch.long)
        self.teacher_cache_sequences = torch.zeros((), dtype=torch.long)
        self.generated_tokens = torch.zeros((), dtype=torch.long)

    def oracle_scores(self, indices: tuple[int, ...] | None, batch: Batch, *, group: int = 1) -> list[float]:
        """The task oracle's score of each row's target text, against the training example it answers:
        rows come in `group` consecutive rows per index (ctx.sample_student's num_samples)."""
        if self.oracle is None or indices is None:
            raise RuntimeError("this run has no oracle: the method must declare needs_oracle, and the training "
                               "data come from an embedded task")
        texts = self.student.decode(batch.target_ids, batch.target_mask)
        if len(texts) != group * len(indices):
            raise ValueError(f"{len(texts)} rows cannot be {group} per each of {len(indices)} examples")
        return self.oracle([indices[r // group] for r in range(len(texts))], texts)

    def random_stream(self, name: str):
        """Torch's global generator seeded for the stream `name` inside the block, restored after it."""
        return torch_stream(stream_seed(self.seed, name, self.stream), self.device)

    def sampling_stream(self):
        """The block draws the next on-policy sample of the run (see the module docstring)."""
        self.sampling_calls += 1
        # every rank of a distributed run draws its own samples (rank 0 the single process's)
        rank = distributed.rank()
        return self.random_stream(f"sampling/{self.sampling_calls}" + (f"/rank{rank}" if rank else ""))

    def autocast(self):
        """bf16 autocast on CUDA when asked for; full fp32 elsewhere (fp16 is unusable on CPU)."""
        if self.use_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def student_logits(self, batch: Batch, *, with_hidden: bool = False):
        """Student logits (B, T, V) on batch's targets (with gradient)."""
        with self.autocast():
            return self.student.target_logits(batch, with_hidden=with_hidden)

    @torch.no_grad()
    def teacher_logits(self, batch: Batch, *, with_hidden: bool = False):
        """Teacher logits (B, T, V) on batch's targets, without gradient; with_hidden also returns the
        teacher's last hidden state (B, T, H), which only the live teacher has (one counted forward).

        Rows found in the teacher cache are served from it as float32 log-probabilities, which every loss
        may take for logits (it applies log_softmax or softmax, and the two differ by a per-position
        constant); in a batch of both kinds the live rows are converted to log-probabilities too."""
        if with_hidden:
            return self._live_teacher_logits(batch, with_hidden=True)
        rows = self.teacher_cache.find(batch) if self.teacher_cache is not None else None
        if rows is None or rows.count(None) == len(rows):
            return self._live_teacher_logits(batch)
        live = [i for i, r in enumerate(rows) if r is None]
        self.teacher_cache_sequences += len(rows) - len(live)
        out = self.teacher_cache.log_probs(rows, batch.target_ids.shape[1], self.device)  # (B, T, V)
        if live:
            index = torch.tensor(live, device=batch.target_ids.device)
            part = Batch(*(t[index] for t in (batch.prompt_ids, batch.prompt_mask, batch.target_ids,
                                              batch.target_mask)))
            out[index.to(out.device)] = torch.log_softmax(self._live_teacher_logits(part).float(), dim=-1)
        return out

    def _live_teacher_logits(self, batch: Batch, *, with_hidden: bool = False):
        if self.teacher is None:
            what = "the teacher cache holds only the fixed training sequences" if self.teacher_cache is not None \
                else "the method declared needs_teacher = False"
            raise RuntimeError(f"teacher logits were asked for with no live teacher loaded: {what}; a method whose "
                               "teacher_sequences are FIXED only must not ask about generated sequences")
        self.teacher_forward_sequences += batch.size
        with self.autocast():
            return self.teacher.target_logits(batch, with_hidden=with_hidden)

    def sample_student(self, batch: Batch, *, temperature: float | None = None, num_samples: int = 1) -> Batch:
        """On-policy samples for the batch's prompts: no gradient, KV cache, masked after the first EOS."""
        return self._sample(self.student, batch, temperature, num_samples)

    def sample_teacher(self, batch: Batch, *, temperature: float | None = None, num_samples: int = 1) -> Batch:
        if self.teacher is None:
            raise RuntimeError("this method declared needs_teacher = False but asked for teacher samples")
        self.teacher_forward_sequences += batch.size * num_samples
        return self._sample(self.teacher, batch, temperature, num_samples)

    def _sample(self, model: Seq2SeqLM, batch: Batch, temperature: float | None, num_samples: int) -> Batch:
        with self.sampling_stream(), self.autocast():
            out = model.generate(
                batch, max_new_tokens=self.max_new_tokens, do_sample=True,
                temperature=temperature or self.sampling.sampling_temperature, top_p=self.sampling.top_p,
                num_return_sequences=num_samples,
            )
        self.generated_tokens += out.target_mask.sum().cpu()
        return out
