"""minigrad.functional's PyTorch-shaped options: cross_entropy's reduction, ignore_index and
label_smoothing; scaled_dot_product_attention's attn_mask, keys and values longer than the queries, and
scale. Each against the formula written out in NumPy here, and against PyTorch where it is installed."""

import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_options_against_the_formula_and_pytorch(reduction, label_smoothing):
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((2, 4, 5)), np.array([[1, -100, 4, 0], [-100, 2, 2, 3]])
    logp = log_softmax(logits).reshape(-1, 5)
    t = targets.reshape(-1)
    counted = t != -100
    expected = -(1 - label_smoothing) * logp[np.arange(8), np.where(counted, t, 0)] - label_smoothing * logp.mean(-1)
    expected = np.where(counted, expected, 0.0)
    expected = {"mean": expected.sum() / counted.sum(), "sum": expected.sum(), "none": expected.reshape(2, 4)}[reduction]
    x = mg.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, targets, reduction=reduction, label_smoothing=label_smoothing)
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)
    dout = rng.standard_normal(loss.shape)
    loss.backward(dout)
    torch = _torch_or_none()
    if torch is not None:
        tx = torch.tensor(logits, requires_grad=True)
        # PyTorch's class axis is the second: (B, V, T)
        tloss = torch.nn.functional.cross_entropy(tx.permute(0, 2, 1), torch.tensor(targets), reduction=reduction,
                                                  label_smoothing=label_smoothing)
        tloss.backward(torch.tensor(dout))
        np.testing.assert_allclose(loss.data, tloss.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert mg.gradcheck(lambda z: F.cross_entropy(z, targets, reduction=reduction, label_smoothing=label_smoothing),
                        [mg.Tensor(logits, requires_grad=True)])


def test_cross_entropy_ignoring_every_target_is_nan_and_bad_options_are_refused():
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.cross_entropy(mg.Tensor(np.zeros((2, 3))), np.array([-100, -100])).item())
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(mg.Tensor(np.zeros((2, 3))), np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match=r"targets\[1\] = 3 is outside \[0, 3\)"):
        F.cross_entropy(mg.Tensor(np.zeros((2, 3))), np.array([-100, 3]), reduction="sum")


def np_attention(q, k, v, mask=None, scale=None):
    s = q @ k.swapaxes(-1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


@pytest.mark.parametrize("case", ["causal, L < S", "boolean mask", "float mask", "scale", "plain"])
def test_attention_options_against_the_formula_and_pytorch(case):
    rng = np.random.default_rng(1)
    L, S, hs = (3, 5, 4) if case == "causal, L < S" else (4, 4, 4)
    q, k, v = rng.standard_normal((2, L, hs)), rng.standard_normal((2, S, hs)), rng.standard_normal((2, S, hs))
    options = {"causal, L < S": {"is_causal": True}, "boolean mask": {"attn_mask": rng.random((L, S)) < 0.7},
               "float mask": {"attn_mask": rng.standard_normal((L, S))}, "scale": {"scale": 0.3}, "plain": {}}[case]
    if case == "boolean mask":
        options["attn_mask"][:, 0] = True  # every query sees a key
    mask = np.tril(np.ones((L, S), bool)) if case == "causal, L < S" else options.get("attn_mask")
    leaves = [mg.Tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, **options)
    np.testing.assert_allclose(out.data, np_attention(q, k, v, mask, options.get("scale")), rtol=1e-12)
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    torch = _torch_or_none()
    if torch is not None:
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        topts = {n: torch.tensor(o) if n == "attn_mask" else o for n, o in options.items()}
        tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **topts)
        tout.backward(torch.tensor(dout))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10)
        for ours, theirs in zip(leaves, (tq, tk, tv)):
            np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert mg.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **options),
                        [mg.Tensor(x, requires_grad=True) for x in (q, k, v)])


def test_attention_refuses_a_mask_with_is_causal_and_a_non_bool_is_causal():
    q = mg.Tensor(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((2, 2), bool), is_causal=True)
    with pytest.raises(TypeError, match="is_causal must be True or False, got None"):
        F.scaled_dot_product_attention(q, q, q, is_causal=None)


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch
