"""Bellman Distill (Yu, Li, Zhang, AAAI 2026): distillation as TD imitation learning on the teacher's nucleus."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xkdbench.methods.base import FIXED, Method, Paper, register
from xkdbench.models.batch import Batch
from xkdbench.validation import check_choice, check_range

EXPERT_TERMS = ("textbook", "code")


@dataclass
class BellmanDistillConfig:
    """top_p: p of the action set A_p(s), the teacher's top-p nucleus (paper and code `top_p`, 0.8; 0.5 also
      studied).
    alpha: the chi^2 regulariser's alpha in phi(x) = x - x^2 / (4 alpha) (0.1; the code hard-codes
      1 / (4 * 0.1), `bellman/losses.py` lines 72-73).
    gamma: the discount of the TD target (code `gamma`, 0.99).
    q_floor: the clip applied to the max-shifted student logits, Q = max(logits - max logits, q_floor) (-10,
      `bellman/losses.py` lines 51-52).
    epsilon: the code form's smoothing of the projected policy (code `args.epsilon`; the repository shows no
      default). Unused by the textbook form.
    temperature: student and teacher logits are divided by it before anything else (code `temperature`).
    expert_term: `textbook` (default, the paper's IQ-Learn objective) or `code` (what the public code
      computes); see `bellman_distill_loss`.
    """

    top_p: float = 0.8
    alpha: float = 0.1
    gamma: float = 0.99
    q_floor: float = -10.0
    epsilon: float = 1e-6
    temperature: float = 1.0
    expert_term: str = "textbook"

    def validate(self, where: str) -> None:
        check_range(f"{where}.top_p", self.top_p, 0, 1, low_open=True)
        check_range(f"{where}.alpha", self.alpha, 0, low_open=True)
        check_range(f"{where}.gamma", self.gamma, 0, 1)
        check_range(f"{where}.q_floor", self.q_floor, high=0, high_open=True)
        check_range(f"{where}.epsilon", self.epsilon, 0)
        check_range(f"{where}.temperature", self.temperature, 0, low_open=True)
        check_choice(f"{where}.expert_term", self.expert_term, EXPERT_TERMS)


def nucleus_mask(teacher_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """A_p(s) as a boolean (..., V) mask, by Hugging Face's top-p rule (`TopPLogitsWarper`): sort ascending,
    drop the tokens whose cumulative mass is <= 1 - p (so the token that crosses p stays), always keep the
    arg-max. Tokens at -inf have no mass and are dropped. The public code uses the same rule (`trainer.py`,
    `compute_logits_and_log_probs`, lines 147-161)."""
    sorted_logits, order = torch.sort(teacher_logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -1] = False
    return ~drop_sorted.scatter(-1, order, drop_sorted)


def soft_q(student_logits: torch.Tensor, temperature: float, q_floor: float) -> torch.Tensor:
    """Q = the student's logits / temperature, shifted by their max and clipped below at q_floor (fp32 or fp64)."""
    logits = student_logits if student_logits.dtype == torch.float64 else student_logits.float()
    logits = logits / temperature
    return (logits - logits.max(dim=-1, keepdim=True).values).clamp(min=q_floor)


def bellman_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target_ids: torch.Tensor,
                  target_mask: torch.Tensor, *, top_p: float = 0.8, alpha: float = 0.1, gamma: float = 0.99,
                  q_floor: float = -10.0, epsilon: float = 1e-6, temperature: float = 1.0,
                  expert_term: str = "textbook") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The per-token terms of -J, each (B, T), and the token count N they are divided by.

    Their sum over the batch divided by N is `bellman_distill_loss`. Teacher logits carry no gradient.
    """
    check_choice("expert_term", expert_term, EXPERT_TERMS)
    q = soft_q(student_logits, temperature, q_floor)  # (B, T, V)
    with torch.no_grad():
        teacher = teacher_logits.to(q.dtype) / temperature
        in_nucleus = nucleus_mask(teacher, top_p)
    mask = target_mask.to(q.dtype)
    if expert_term == "textbook":
        return _textbook_terms(q, in_nucleus, target_ids, mask, alpha, gamma), mask.sum()
    return _code_terms(q, in_nucleus, mask, top_p, alpha, gamma, epsilon), mask[:, :-1].sum()


def bellman_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target_ids: torch.Tensor,
                         target_mask: torch.Tensor, *, top_p: float = 0.8, alpha: float = 0.1, gamma: float = 0.99,
                         q_floor: float = -10.0, epsilon: float = 1e-6, temperature: float = 1.0,
                         expert_term: str = "textbook") -> torch.Tensor:
    """-J(Q), the scalar Bellman Distill minimises, on one batch of (B, T) targets.

    Both forms share Q (`soft_q`) and the action set A_p(s) (`nucleus_mask` on the teacher's logits).

    expert_term="textbook" is the paper's IQ-Learn chi^2 objective, over the valid target tokens t:
        J(Q) = E[phi(Q(s_t, y_t) - gamma V(s_t+1))] - E[V(s_t) - gamma V(s_t+1)],  phi(x) = x - x^2 / (4 alpha),
        pi(a|s) = softmax(Q(s, .)) renormalised over A_p(s),  V(s) = sum_{a in A_p(s)} pi(a|s) (Q(s,a) - log pi(a|s)),
    with V = 0 after the end of the sequence and the mean over the N valid tokens. V(s) is computed as
    logsumexp_{a in A_p(s)} Q(s, a), which that sum equals exactly (it is the soft value over A_p).

    expert_term="code" is what TobyLeelsz/Bellman-Distillation computes (`bellman/losses.py`, function
    `bellman_distill_loss`, lines 50-73, with `chi_reg` on; the nucleus from `bellman/trainer.py` lines
    147-161, applied to the teacher's logits, line 275):
      - pi = (softmax(Q) * mask_p / top_p + epsilon) renormalised over the WHOLE vocabulary (lines 24-29), so
        V = sum_v pi (Q - log pi) runs over every token, and is multiplied by the target mask (lines 17-22);
      - the "expert" term is mean_v(mask_p * Q) (the vocabulary mean of the nucleus-masked Q), not Q at the
        data token (lines 68-69), and the TD target enters only the chi^2 term, which is the vocabulary mean
        of (mask_p * Q * m_t - gamma V(s_t+1))^2 (lines 72-73);
      - the states are positions t < T-1, V(s_t+1) = m_t+1 V(t+1), and every sum is divided by
        N = sum of m[:, :-1] (lines 66-73).
    The code takes the target mask as given (its pad is EOS, so the EOS itself never carries loss there);
    this function does too. The code's pi * log(pi) is NaN at epsilon 0 (0 * -inf); here 0 log 0 = 0, so
    the code form stays finite at epsilon 0.
    """
    terms, count = bellman_terms(student_logits, teacher_logits, target_ids, target_mask, top_p=top_p,
                                 alpha=alpha, gamma=gamma, q_floor=q_floor, epsilon=epsilon,
                                 temperature=temperature, expert_term=expert_term)
    return sum(t.sum() for t in terms.values()) / count.clamp(min=1)


def _textbook_terms(q, in_nucleus, target_ids, mask, alpha, gamma):
    value = torch.logsumexp(q.masked_fill(~in_nucleus, float("-inf")), dim=-1)  # V(s_t), (B, T)
    next_value = torch.zeros_like(value)
    next_value[:, :-1] = value[:, 1:] * mask[:, 1:]  # V(s_t+1), 0 after the end
    q_data = q.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)  # Q(s_t, y_t)
    residual = q_data - gamma * next_value
    phi = residual - residual.pow(2) / (4 * alpha)
    return {"td": -phi * mask, "value": (value - gamma * next_value) * mask}


def _code_terms(q, in_nucleus, mask, top_p, alpha, gamma, epsilon):
    nucleus = in_nucleus.to(q.dtype)
    projected = q.softmax(dim=-1) * nucleus / top_p + epsilon
    projected = projected / projected.sum(dim=-1, keepdim=True)
    # 0 log 0 = 0, with a gradient that stays finite where the policy is exactly 0 (epsilon 0)
    positive = projected > 0
    log_projected = torch.where(positive, projected.where(positive, torch.ones_like(projected)).log(),
                                torch.zeros_like(projected))
    value = (projected * (q - log_projected)).sum(dim=-1) * mask  # V(t) * m_t, as `compute_value`
    next_value = value[:, 1:] * mask[:, 1:]  # m_t+1 V(t+1), states t < T-1
    masked_q = nucleus[:, :-1] * q[:, :-1] * mask[:, :-1].unsqueeze(-1)  # (B, T-1, V)
    expert = masked_q.mean(dim=-1)
    chi2 = (masked_q - gamma * next_value.unsqueeze(-1)).pow(2).mean(dim=-1)
    pad = (0, 1)  # position T-1 is no state in the code: its terms are 0
    return {"td": F.pad(-(expert - gamma * next_value), pad),
            "value": F.pad(value[:, :-1] * mask[:, :-1] - gamma * next_value, pad),
            "chi2": F.pad(chi2 / (4 * alpha), pad)}


def with_trailing_pad(batch: Batch, pad_id: int) -> Batch:
    """The batch with one more target column of padding (mask 0)."""
    ids = F.pad(batch.target_ids, (0, 1), value=pad_id)
    return batch.with_targets(ids, F.pad(batch.target_mask, (0, 1), value=0))


@register("bellman_distill")
class BellmanDistill(Method):
    """Offline TD imitation learning: the student's logits are a soft Q-function fitted by IQ-Learn's chi^2
    objective on the teacher's own outputs (SeqKD's cached outputs), with the teacher's top-p nucleus as the
    action set at every state. The loss is `bellman_distill_loss`; the hook returns its per-token terms
    `td`, `value` (and `chi2` in the code form), which the core reduces to the same scalar.

    Deviations from the paper and code, each deliberate:
      - the teacher's nucleus comes from one teacher forward on the cached outputs per step (the code does
        the same forward); the cached outputs are decoded by the experiment's `seqkd` rule (greedy by
        default), where the code samples responses from the teacher beforehand;
      - the code adds a language-model loss on a pre-training corpus (`lm_coef`, `trainer.py` line 291);
        it is off here, as for MiniLLM: the embedded tasks have no such corpus;
      - the code computes a KL regulariser (`reg_phi_loss`, line 278) that only enters its logs (and its
        `kl_loss` is absent from the repository); it is not computed here;
      - the code trains on teacher responses only; this method has no student-sample option, as neither
        the paper's abstract nor the code gives one;
      - in the code form, the code's mask drops EOS because its pad token is EOS; here the EOS stays a target
        token, as for every method of the suite, so the student learns to stop;
      - the code's states are t < T-1 of a batch padded to a fixed length, so no valid token is lost there;
        this method appends one padding column to every batch for the same effect, which also makes the
        core's token count equal the code's N = sum of m[:, :-1].
    """

    Config = BellmanDistillConfig
    paper = Paper("Language Model Distillation: A Temporal Difference Imitation Learning Perspective",
                  "2505.20335", "AAAI 2026")

    @classmethod
    def uses_teacher_outputs(cls, config) -> bool:
        return True

    @classmethod
    def teacher_sequences(cls, config):
        return frozenset({FIXED})

    def sequences(self, examples, step):
        return with_trailing_pad(examples.teacher_output, self.ctx.student.pad_id)

    def loss(self, batch):
        c = self.config
        terms, _ = bellman_terms(self.ctx.student_logits(batch), self.ctx.teacher_logits(batch), batch.target_ids,
                                 batch.target_mask, top_p=c.top_p, alpha=c.alpha, gamma=c.gamma, q_floor=c.q_floor,
                                 epsilon=c.epsilon, temperature=c.temperature, expert_term=c.expert_term)
        return terms
