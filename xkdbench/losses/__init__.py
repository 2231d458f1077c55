"""Per-token divergences between a student q and a teacher p, and a registry of them by name.

Every divergence has the signature ``f(student_logits, teacher_logits, *, <parameter>, temperature=1.0)``,
takes logits (..., V) and returns the per-position divergence (...) summed over the vocabulary, computed
in at least fp32. No masking and no reduction here: the caller normalises over valid tokens.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from xkdbench.losses._common import check_unit_interval
from xkdbench.losses.forward_kl import forward_kl
from xkdbench.losses.jsd import generalized_jsd
from xkdbench.losses.reverse_kl import reverse_kl
from xkdbench.losses.skew import skew_forward_kl, skew_reverse_kl
from xkdbench.losses.total_variation import total_variation
from xkdbench.registry import Registry

Divergence = Callable[..., torch.Tensor]

DIVERGENCES: Registry[Divergence] = Registry("divergence")
for _name, _fn in [("forward_kl", forward_kl), ("reverse_kl", reverse_kl), ("jsd", generalized_jsd),
                   ("skew_forward_kl", skew_forward_kl), ("skew_reverse_kl", skew_reverse_kl),
                   ("total_variation", total_variation)]:
    DIVERGENCES.register(_name)(_fn)


def divergence_parameters(name: str) -> list[str]:
    """The parameters (besides temperature) that divergence ``name`` takes, each a number in [0, 1]."""
    signature = inspect.signature(DIVERGENCES.get(name, field="divergence"))
    return [p.name for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "temperature"]


def divergence_fn(name: str, **params: float) -> Divergence:
    """The divergence ``name`` with its parameter bound: ``f(student_logits, teacher_logits, *, temperature=1.0)``.

    ``jsd`` takes ``beta`` (default 0.5), the skews take ``alpha`` (default 0.1), the others none. An unknown
    name raises the registry's error listing the known names; an unknown parameter or a value outside
    [0, 1] raises ValueError naming it and what is allowed.
    """
    allowed = divergence_parameters(name)
    for key, value in params.items():
        if key not in allowed:
            takes = ", ".join(f"{a} in [0, 1]" for a in allowed) or "no parameters"
            raise ValueError(f"divergence {name!r} takes {takes}; got {key}={value!r}")
        check_unit_interval(f"divergence {name!r}: {key}", value)
    return functools.partial(DIVERGENCES.get(name), **params)


__all__ = [
    "DIVERGENCES", "divergence_fn", "divergence_parameters", "forward_kl", "reverse_kl",
    "generalized_jsd", "skew_forward_kl", "skew_reverse_kl", "total_variation",
]
