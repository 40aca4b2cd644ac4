"""AdamW and SGD against updates computed by hand, clipping, and the learning-rate schedule."""

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad.optim import SGD, AdamW, clip_grad_norm_, lr_at


def make_params(rng, dtype=np.float64):
    return [mg.Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in ((3, 4), (4,))]


def test_adamw_matches_hand_computed_updates_over_steps():
    rng = np.random.default_rng(0)
    w, b = make_params(rng)
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.99), 1e-8, 0.1
    opt = AdamW([{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}], lr=lr)
    ref = {id(p): (p.data.copy(), np.zeros(p.shape), np.zeros(p.shape)) for p in (w, b)}
    for t in range(1, 5):
        grads = [rng.standard_normal(p.shape) for p in (w, b)]
        for p, g, decay in zip((w, b), grads, (wd, 0.0)):
            p.grad = g.copy()
            x, m, v = ref[id(p)]
            x = x * (1 - lr * decay)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            ref[id(p)] = (x, m, v)
        opt.step()
        for p in (w, b):
            np.testing.assert_allclose(p.data, ref[id(p)][0], rtol=1e-12, atol=1e-14)
    state = opt.state_of(w)
    np.testing.assert_allclose(state["m"], ref[id(w)][1], rtol=1e-12)
    assert state["step"] == 4
    np.testing.assert_allclose(state["v_hat"], ref[id(w)][2] / (1 - b2**4), rtol=1e-12)


def test_adamw_skips_params_without_grad_and_round_trips_its_state():
    rng = np.random.default_rng(1)
    w, b = make_params(rng)
    opt = AdamW([w, b], lr=0.1)
    w.grad = np.ones(w.shape)
    before = b.data.copy()
    opt.step()
    assert np.array_equal(b.data, before)
    saved = opt.state_dict()
    w2, b2 = (mg.Tensor(p.data.copy(), requires_grad=True) for p in (w, b))
    opt2 = AdamW([w2, b2], lr=0.5)
    opt2.load_state_dict(saved)
    w.grad = w2.grad = np.full(w.shape, 0.3)
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(w.data, w2.data)
    assert opt2.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="parameter groups"):
        AdamW([{"params": [w]}, {"params": [b]}], lr=0.1).load_state_dict(saved)


def test_sgd_with_momentum_matches_hand_computation():
    rng = np.random.default_rng(2)
    w, _ = make_params(rng)
    opt = SGD([w], lr=0.1, momentum=0.9)
    x, buf = w.data.copy(), None
    for _ in range(3):
        g = rng.standard_normal(w.shape)
        w.grad = g.copy()
        buf = g if buf is None else 0.9 * buf + g
        x = x - 0.1 * buf
        opt.step()
        np.testing.assert_allclose(w.data, x, rtol=1e-13)
    plain = SGD([w], lr=0.5)
    w.grad = np.ones(w.shape)
    x = w.data - 0.5
    plain.step()
    np.testing.assert_allclose(w.data, x)


def test_zero_grad():
    w, b = make_params(np.random.default_rng(3))
    opt = SGD([w, b], lr=0.1)
    w.grad, b.grad = np.ones(w.shape), np.ones(b.shape)
    opt.zero_grad(set_to_none=False)
    assert np.all(w.grad == 0)
    opt.zero_grad()
    assert w.grad is None and b.grad is None


def test_clip_grad_norm_below_and_above_threshold():
    w, b = make_params(np.random.default_rng(4))
    w.grad, b.grad = np.full(w.shape, 3.0), np.full(b.shape, 4.0)
    norm = math.sqrt(12 * 9 + 4 * 16)
    assert clip_grad_norm_([w, b], 100.0) == pytest.approx(norm)
    assert np.all(w.grad == 3.0)  # below: untouched
    assert clip_grad_norm_([w, b], 1.0) == pytest.approx(norm)  # the norm before clipping
    new_norm = math.sqrt(float((w.grad**2).sum() + (b.grad**2).sum()))
    assert new_norm == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(w.grad / b.grad[0], np.full(w.shape, 0.75))  # direction kept


def test_lr_schedule_at_its_corners():
    args = dict(lr=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert lr_at(0, **args) == pytest.approx(0.1)
    assert lr_at(9, **args) == pytest.approx(1.0)  # warmup - 1: the peak
    assert lr_at(10, **args) == pytest.approx(1.0)  # warmup: cosine starts at the peak
    assert lr_at(60, **args) == pytest.approx(0.55)  # half way: the mean of lr and min_lr
    assert lr_at(110, **args) == pytest.approx(0.1)
    assert lr_at(5000, **args) == 0.1
    values = [lr_at(i, **args) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay


def test_optimizer_rejects_bad_arguments():
    w, _ = make_params(np.random.default_rng(5))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([], lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        SGD([w], lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW([w], lr=0.1, betas=(0.9, 1.0))
    with pytest.raises(KeyError, match="no AdamW state"):
        AdamW([w], lr=0.1).state_of(w)
