"""Small scalar graphs of the kind micrograd's tests and lectures build, on 0-d float64 tensors: each
value and gradient derived by hand here (or, for the long expression, from the same expression in plain
Python floats with central differences), and against PyTorch where it is installed."""

import math

import numpy as np
import pytest

import minigrad as mg


def scalar(v):
    return mg.Tensor(v, dtype=np.float64, requires_grad=True)


def test_a_neuron():
    """o = tanh(x1 w1 + x2 w2 + b) (the micrograd lecture's): do/dn = 1 - o^2 = 1/2, so
    dx1 = w1/2, dw1 = x1/2, dx2 = w2/2, dw2 = x2/2, db = 1/2."""
    x1, x2, w1, w2, b = scalar(2.0), scalar(0.0), scalar(-3.0), scalar(1.0), scalar(6.8813735870195432)
    o = (x1 * w1 + x2 * w2 + b).tanh()
    o.backward()
    assert o.item() == pytest.approx(math.sqrt(0.5), abs=1e-12)
    for t, expected in ((x1, -1.5), (w1, 1.0), (x2, 0.5), (w2, 0.0), (b, 0.5)):
        assert t.grad.shape == () and t.grad.item() == pytest.approx(expected, abs=1e-12)


def test_a_tensor_used_twice_gets_both_gradients():
    """b = a + a: db/da = 2 (the bug the micrograd lecture fixes); and 0-d reuse deeper in a graph."""
    a = scalar(3.0)
    (a + a).backward()
    assert a.grad.item() == 2.0
    x = scalar(2.0)
    y = x * x
    (y * y + y).backward()  # x^4 + x^2: 4x^3 + 2x = 36
    assert x.grad.item() == 36.0
    x = scalar(3.0)
    (x * x + x).backward()  # 2x + 1
    assert x.grad.item() == 7.0


def test_micrograd_sanity_check():
    """micrograd's test_sanity_check. At x = -4: z = 3x + 2 = -10 < 0, so relu(z) = 0 and relu(z^2) = z^2:
    y = z^2 + z x (1 + x) = -20, dy/dx = 6z + 3x(1 + x) + z(1 + x) + z x = -60 + 36 + 30 + 40 = 46."""
    x = scalar(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    assert (y.item(), x.grad.item()) == (-20.0, 46.0)
    torch = _torch_or_none()
    if torch is not None:
        tx = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
        tz = 2 * tx + 2 + tx
        tq = tz.relu() + tz * tx
        ty = (tz * tz).relu() + tq + tq * tx
        ty.backward()
        assert (ty.item(), tx.grad.item()) == (y.item(), x.grad.item())


def more_ops(a, b, relu):
    """micrograd's test_more_ops expression, for minigrad tensors, PyTorch tensors or Python floats."""
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + relu(b + a)
    d = d + 3 * d + relu(b - a)
    e = c - d
    f = e**2
    g = f / 2.0
    return g + 10.0 / f


def test_micrograd_more_ops():
    """Powers, division by a tensor, reuse and relu: against the same expression in Python floats (value,
    and central differences for the gradient) and against PyTorch."""
    a, b = scalar(-4.0), scalar(2.0)
    g = more_ops(a, b, lambda t: t.relu())
    g.backward()

    def plain(x, y):
        return more_ops(x, y, lambda v: max(v, 0.0))

    h = 1e-6
    assert g.item() == pytest.approx(plain(-4.0, 2.0), rel=1e-14)
    assert g.item() == pytest.approx(24.70408163265306, rel=1e-14)  # the value micrograd's test states
    assert a.grad.item() == pytest.approx((plain(-4.0 + h, 2.0) - plain(-4.0 - h, 2.0)) / (2 * h), rel=1e-6)
    assert b.grad.item() == pytest.approx((plain(-4.0, 2.0 + h) - plain(-4.0, 2.0 - h)) / (2 * h), rel=1e-6)
    torch = _torch_or_none()
    if torch is not None:
        ta, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (-4.0, 2.0))
        tg = more_ops(ta, tb, torch.relu)
        tg.backward()
        np.testing.assert_allclose([g.item(), a.grad.item(), b.grad.item()],
                                   [tg.item(), ta.grad.item(), tb.grad.item()], rtol=1e-12)


def test_powers_and_division_by_hand():
    """f = x^3 / y + 2^x - y^-2 at x = 1.5, y = 2: df/dx = 3x^2/y + 2^x ln 2, df/dy = -x^3/y^2 + 2 y^-3."""
    x, y = scalar(1.5), scalar(2.0)
    f = x**3 / y + 2.0**x - y**-2
    f.backward()
    assert f.item() == pytest.approx(1.5**3 / 2 + 2**1.5 - 0.25, rel=1e-14)
    assert x.grad.item() == pytest.approx(3 * 1.5**2 / 2 + 2**1.5 * math.log(2), rel=1e-14)
    assert y.grad.item() == pytest.approx(-(1.5**3) / 4 + 2 / 8, rel=1e-14)


def test_a_zero_dimensional_parameter_is_clipped_zeroed_and_stepped():
    """A 0-d parameter's gradient is a 0-d array: clipping scales it, zero_grad zeroes it, SGD moves it."""
    w = scalar(3.0)
    (w * w * 10.0).backward()  # dw = 60
    assert isinstance(w.grad, np.ndarray) and w.grad.shape == ()
    norm = mg.clip_grad_norm_([w], 6.0)
    assert norm == pytest.approx(60.0) and w.grad.item() == pytest.approx(6.0, rel=1e-6)
    opt = mg.optim.SGD([w], lr=0.5)
    opt.step()
    assert w.item() == pytest.approx(3.0 - 3.0, abs=1e-6)
    opt.zero_grad(set_to_none=False)
    assert w.grad.item() == 0.0


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch
