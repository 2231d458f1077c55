"""The DIVERGENCES registry and divergence_fn: names, parameter binding, and the errors a config can cause."""
from __future__ import annotations

import pytest
import torch

from xkdbench.losses import (
    DIVERGENCES,
    divergence_fn,
    divergence_parameters,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from xkdbench.registry import UnknownNameError


def test_registry_names_and_functions():
    assert DIVERGENCES.names() == sorted(
        ["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "total_variation"]
    )
    assert DIVERGENCES.get("forward_kl") is forward_kl
    assert DIVERGENCES.get("reverse_kl") is reverse_kl
    assert DIVERGENCES.get("jsd") is generalized_jsd
    assert DIVERGENCES.get("skew_forward_kl") is skew_forward_kl
    assert DIVERGENCES.get("skew_reverse_kl") is skew_reverse_kl
    assert DIVERGENCES.get("total_variation") is total_variation


def test_parameters_per_divergence():
    assert divergence_parameters("jsd") == ["beta"]
    assert divergence_parameters("skew_forward_kl") == divergence_parameters("skew_reverse_kl") == ["alpha"]
    for name in ("forward_kl", "reverse_kl", "total_variation"):
        assert divergence_parameters(name) == []


def test_divergence_fn_binds_the_parameter(make_logits):
    student, teacher = make_logits(2, 3, 9, seed=1), make_logits(2, 3, 9, seed=2)
    f = divergence_fn("jsd", beta=0.9)
    assert torch.equal(f(student, teacher), generalized_jsd(student, teacher, beta=0.9))
    assert torch.equal(f(student, teacher, temperature=2.0), generalized_jsd(student, teacher, beta=0.9, temperature=2.0))
    assert torch.equal(divergence_fn("skew_reverse_kl", alpha=0.2)(student, teacher),
                       skew_reverse_kl(student, teacher, alpha=0.2))
    assert torch.equal(divergence_fn("forward_kl")(student, teacher), forward_kl(student, teacher))
    assert torch.equal(divergence_fn("jsd")(student, teacher), generalized_jsd(student, teacher, beta=0.5))
    assert torch.equal(divergence_fn("jsd", beta=0)(student, teacher), forward_kl(student, teacher))


def test_unknown_name_lists_the_known_names():
    with pytest.raises(UnknownNameError, match="known divergences: forward_kl, jsd, reverse_kl"):
        divergence_fn("kl")


@pytest.mark.parametrize(("name", "params", "message"), [
    ("forward_kl", {"beta": 0.5}, "'forward_kl' takes no parameters; got beta=0.5"),
    ("jsd", {"alpha": 0.1}, r"'jsd' takes beta in \[0, 1\]; got alpha=0.1"),
    ("skew_forward_kl", {"beta": 0.1}, r"'skew_forward_kl' takes alpha in \[0, 1\]; got beta=0.1"),
    ("jsd", {"beta": 1.5}, r"'jsd': beta must be a number in \[0, 1\], got 1.5"),
    ("jsd", {"beta": -0.1}, r"'jsd': beta must be a number in \[0, 1\], got -0.1"),
    ("skew_reverse_kl", {"alpha": "0.1"}, r"'skew_reverse_kl': alpha must be a number in \[0, 1\], got '0.1'"),
    ("jsd", {"temperature": 2.0}, r"'jsd' takes beta in \[0, 1\]; got temperature=2.0"),
])
def test_bad_parameters_are_value_errors_naming_the_range(name, params, message):
    with pytest.raises(ValueError, match=message):
        divergence_fn(name, **params)


def test_error_messages_name_the_field_and_what_is_allowed():
    from xkdbench.losses import divergence_parameters, generalized_jsd

    logits = torch.zeros(1, 3)
    with pytest.raises(ValueError, match=r"^beta must be a number in \[0, 1\], got 1.5$"):
        generalized_jsd(logits, logits, beta=1.5)
    with pytest.raises(UnknownNameError, match=r"^divergence: unknown divergence 'kl'; known divergences: forward_kl, jsd, "):
        divergence_parameters("kl")
