"""Every formula in docs/, checked numerically: each closed form is written out here in NumPy, as the
page gives it, and compared with central finite differences and with the library."""

import math
import pathlib
import re

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from composites import composite_attention, composite_cross_entropy, composite_layer_norm
from minigrad import kernels
from minigrad.tensor import _topological_order, _unbroadcast

ROOT = pathlib.Path(__file__).resolve().parents[1]


def numeric_vjp(f, x, dout, h=1e-6):
    """d/dx sum(f(x) * dout) by central differences, element by element (float64, small x only)."""
    x = x.astype(np.float64).copy()
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        original = x[i]
        x[i] = original + h
        plus = (f(x) * dout).sum()
        x[i] = original - h
        minus = (f(x) * dout).sum()
        x[i] = original
        grad[i] = (plus - minus) / (2 * h)
    return grad


def library_vjp(f, arrays, dout):
    """The engine's gradients of sum(f(*tensors) * dout) for each array."""
    tensors = [mg.Tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    f(*tensors).backward(dout)
    return [t.grad for t in tensors]


def close(a, b, tol=1e-7):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# --- docs/README.md: finite differences ----------------------------------------------------------


def test_central_difference_error_is_h_squared_f3_over_6():
    x, h = 0.7, 1e-3  # f = exp, so f' = f'' = f''' = e^x
    central = (math.exp(x + h) - math.exp(x - h)) / (2 * h)
    forward = (math.exp(x + h) - math.exp(x)) / h
    assert central - math.exp(x) == pytest.approx(h**2 / 6 * math.exp(x), rel=1e-3)
    assert forward - math.exp(x) == pytest.approx(h / 2 * math.exp(x), rel=1e-2)


def test_gradient_of_sum_of_softmax_is_zero_whatever_the_backward(rng):
    x = rng.standard_normal((3, 5))
    [g] = library_vjp(F.softmax, [x], np.ones((3, 5)))
    assert np.abs(g).max() < 1e-15


# --- docs/autograd.md --------------------------------------------------------------------------


def test_uses_of_a_tensor_add_up(rng):
    x = rng.standard_normal(4)
    [g] = library_vjp(lambda t: t * t + t.exp() * t - t, [x], np.ones(4))
    close(g, 2 * x + np.exp(x) * (1 + x) - 1)


def test_grad_accumulates_across_backward_calls(rng):
    x = mg.Tensor(rng.standard_normal(3), requires_grad=True)
    (x * x).sum().backward()
    (x * x).sum().backward()
    close(x.grad, 2 * (2 * x.data))


def test_shared_gradients_are_never_written_in_place(rng):
    x = mg.Tensor(rng.standard_normal(3), requires_grad=True)
    dout = rng.standard_normal(3)
    given = dout.copy()
    (x + x).backward(given)  # Add.backward returns `given` itself for both uses of x
    close(given, dout, tol=0)
    close(x.grad, 2 * dout, tol=0)


def test_slices_add_into_one_buffer_and_repeats_add_up(rng):
    x = rng.standard_normal((3, 6))
    dq, dk, dv, dg = (rng.standard_normal(s) for s in ((3, 2), (3, 2), (3, 2), (4, 6)))
    index = np.array([0, 2, 2, 1])

    def f(t):  # q, k and v cut out of one tensor, plus a gather with a repeated row
        return [t[:, 0:2], t[:, 2:4], t[:, 4:6], t[index]]

    tensor = mg.Tensor(x, requires_grad=True)
    loss = sum((piece * d).sum() for piece, d in zip(f(tensor), (dq, dk, dv, dg)))
    loss.backward()
    expected = np.concatenate([dq, dk, dv], axis=1)  # x-bar[index] += values, slice by slice
    for row, g in zip(index, dg):
        expected[row] += g  # row 2 twice: both add
    close(tensor.grad, expected, tol=1e-12)


def test_topological_order_puts_each_tensor_after_its_inputs(rng):
    a = mg.Tensor(rng.standard_normal(3), requires_grad=True)
    b = a.exp()
    c = a * b
    d = c + b.tanh() * a
    order = _topological_order(d)
    position = {id(t): i for i, t in enumerate(order)}
    assert len(order) == 6 and order[-1] is d  # a, b, c, tanh(b), tanh(b)*a, d
    for t in order:
        for inp in (t._ctx.inputs if t._ctx else ()):
            if inp.requires_grad:
                assert position[id(inp)] < position[id(t)]


def test_unbroadcast_sums_over_added_and_stretched_axes(rng):
    g = rng.standard_normal((2, 3, 4))  # dL/dy for y = x + b
    close(_unbroadcast(g, (4,)), g.sum(axis=(0, 1)))  # b (C,): sum over b and t
    close(_unbroadcast(g, (2, 1, 4)), g.sum(axis=1, keepdims=True))
    close(_unbroadcast(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    [gx, gb] = library_vjp(lambda x, b: x + b, [rng.standard_normal((2, 3, 4)), rng.standard_normal(4)], g)
    close(gx, g)
    close(gb, g.sum(axis=(0, 1)))


# --- docs/backward_derivations.md --------------------------------------------------------------


def test_matmul_backward(rng):
    A, B, dY = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    dA, dB = dY @ B.T, A.T @ dY
    close(dA, numeric_vjp(lambda a: a @ B, A, dY))
    close(dB, numeric_vjp(lambda b: A @ b, B, dY))
    lib = library_vjp(lambda a, b: a @ b, [A, B], dY)
    close(lib[0], dA)
    close(lib[1], dB)


def test_batched_matmul_with_a_broadcast_weight_sums_over_the_batch(rng):
    A, B, dY = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal((2, 3, 5))
    dB = sum(A[i].T @ dY[i] for i in range(2))
    close(library_vjp(lambda a, b: a @ b, [A, B], dY)[1], dB)


def test_linear_backward(rng):
    x, W, b, dy = (rng.standard_normal(s) for s in ((5, 3), (4, 3), (4,), (5, 4)))
    dx, dW, db = dy @ W, dy.T @ x, dy.sum(axis=0)
    close(dx, numeric_vjp(lambda x_: x_ @ W.T + b, x, dy))
    close(dW, numeric_vjp(lambda W_: x @ W_.T + b, W, dy))
    close(db, numeric_vjp(lambda b_: x @ W.T + b_, b, dy))
    for got, want in zip(library_vjp(F.linear, [x, W, b], dy), (dx, dW, db)):
        close(got, want)


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_softmax_backward_and_shift_invariance(rng):
    x, dy = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    y = np_softmax(x)
    dx = y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    close(dx, numeric_vjp(np_softmax, x, dy))
    close(library_vjp(F.softmax, [x], dy)[0], dx)
    jacobian = np.diag(y[0]) - np.outer(y[0], y[0])  # y_i (delta_ij - y_j)
    close(jacobian.T @ dy[0], dx[0])
    close(np_softmax(x + 123.0), y)
    close(dx.sum(axis=-1), np.zeros(3), tol=1e-12)


def np_cross_entropy(z, t):
    m = z.max(axis=-1, keepdims=True)
    logsumexp = m[:, 0] + np.log(np.exp(z - m).sum(axis=-1))
    return (logsumexp - z[np.arange(len(t)), t]).mean()


def test_cross_entropy_value_and_backward(rng):
    z, t, dL = rng.standard_normal((4, 6)), np.array([0, 5, 2, 2]), 0.7
    p = np_softmax(z)
    assert np_cross_entropy(z, t) == pytest.approx(-np.log(p[np.arange(4), t]).mean(), rel=1e-12)
    dz = dL / 4 * (p - np.eye(6)[t])
    close(dz, numeric_vjp(lambda z_: np_cross_entropy(z_, t), z, dL))
    close(library_vjp(lambda z_: F.cross_entropy(z_, t), [z], np.array(dL))[0], dz)
    big = z * 1e4  # log-sum-exp keeps it finite
    assert np.isfinite(np_cross_entropy(big, t))
    assert F.cross_entropy(mg.Tensor(big), t).item() == pytest.approx(np_cross_entropy(big, t), rel=1e-12)


def np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def test_layer_norm_backward(rng):
    C, eps = 6, 1e-5
    x, w, b, dy = rng.standard_normal((2, 3, C)), rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal((2, 3, C))
    mu = x.mean(axis=-1, keepdims=True)
    r = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (x - mu) * r
    g = dy * w
    dx = r * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    dw, db = (dy * xhat).sum(axis=(0, 1)), dy.sum(axis=(0, 1))
    close(dx, numeric_vjp(lambda x_: np_layer_norm(x_, w, b), x, dy))
    close(dw, numeric_vjp(lambda w_: np_layer_norm(x, w_, b), w, dy))
    close(db, numeric_vjp(lambda b_: np_layer_norm(x, w, b_), b, dy))
    for got, want in zip(library_vjp(F.layer_norm, [x, w, b], dy), (dx, dw, db)):
        close(got, want)
    # the intermediate steps of the derivation, for the first row
    x0, xh0 = x[0, 0], xhat[0, 0]
    dvar = numeric_vjp(lambda v: ((v - v.mean()) ** 2).mean(), x0, np.array(1.0))
    close(dvar, 2 / C * (x0 - x0.mean()))  # d sigma^2 / dx_j
    jac = r[0, 0, 0] * (np.eye(C) - 1 / C - np.outer(xh0, xh0) / C)  # d xhat_i / d x_j
    numeric_jac = np.stack([numeric_vjp(lambda v: np_layer_norm(v, 1.0, 0.0), x0, np.eye(C)[i]) for i in range(C)])
    close(jac, numeric_jac)


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_derivative(rng):
    x, dy = rng.standard_normal(7) * 2, rng.standard_normal(7)
    s = math.sqrt(2 / math.pi)
    t = np.tanh(s * (x + 0.044715 * x**3))
    dx = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * s * (1 + 3 * 0.044715 * x**2))
    close(dx, numeric_vjp(np_gelu, x, dy))
    close(library_vjp(F.gelu, [x], dy)[0], dx)


def np_attention(q, k, v):
    T, d = q.shape[-2:]
    S = q @ k.swapaxes(-1, -2) / math.sqrt(d) + np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, 0.0)
    return np_softmax(S) @ v


def test_attention_backward_step_by_step(rng):
    T, d = 5, 3
    q, k, v, dO = (rng.standard_normal((2, T, d)) for _ in range(4))
    S = q @ k.swapaxes(-1, -2) / math.sqrt(d) + np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, 0.0)
    P = np_softmax(S)
    O = P @ v
    dP, dV = dO @ v.swapaxes(-1, -2), P.swapaxes(-1, -2) @ dO
    dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
    dQ, dK = dS @ k / math.sqrt(d), dS.swapaxes(-1, -2) @ q / math.sqrt(d)
    assert np.all(dS[:, np.triu(np.ones((T, T), bool), 1)] == 0)  # nothing flows to future keys
    close((dP * P).sum(axis=-1), (dO * O).sum(axis=-1))  # the FlashAttention identity
    close(dQ, numeric_vjp(lambda q_: np_attention(q_, k, v), q, dO))
    close(dK, numeric_vjp(lambda k_: np_attention(q, k_, v), k, dO))
    close(dV, numeric_vjp(lambda v_: np_attention(q, k, v_), v, dO))
    lib = library_vjp(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                      [q[:, None], k[:, None], v[:, None]], dO[:, None])
    for got, want in zip(lib, (dQ, dK, dV)):
        close(got[:, 0], want)


# --- docs/fused_kernels.md ---------------------------------------------------------------------


def count_nodes(fn, *inputs):
    with mg.profile() as prof:
        fn(*inputs)
    return sum(s.forward_calls for s in prof.stats.values()), prof.stats


@pytest.mark.parametrize("name", ["attention", "layer_norm", "cross_entropy"])
def test_fused_node_equals_the_chain_it_replaces(rng, name):
    targets = rng.integers(0, 5, size=(2, 3))
    pairs = {
        "attention": (composite_attention, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                      [(2, 2, 4, 3)] * 3),
        "layer_norm": (composite_layer_norm, F.layer_norm, [(2, 3, 6), (6,), (6,)]),
        "cross_entropy": (lambda z: composite_cross_entropy(z, targets), lambda z: F.cross_entropy(z, targets),
                          [(2, 3, 5)]),
    }
    composite, fused, shapes = pairs[name]
    arrays = [rng.standard_normal(s) for s in shapes]
    out_c, out_f = (f(*[mg.Tensor(a) for a in arrays]) for f in (composite, fused))
    close(out_c.numpy(), out_f.numpy(), tol=1e-10)
    dout = rng.standard_normal(out_f.shape)
    for gc, gf in zip(library_vjp(composite, arrays, dout), library_vjp(fused, arrays, dout)):
        close(gc, gf, tol=1e-10)
    leaves = [mg.Tensor(a, requires_grad=True) for a in arrays]
    n_composite, _ = count_nodes(composite, *leaves)
    n_fused, stats = count_nodes(fused, *leaves)
    assert (n_composite, n_fused) == (9, 1), "docs/fused_kernels.md's table says 9 nodes against 1"


def test_attention_chain_is_the_nine_ops_the_page_lists(rng):
    q, k, v = (mg.Tensor(rng.standard_normal((1, 1, 4, 2)), requires_grad=True) for _ in range(3))
    _, stats = count_nodes(composite_attention, q, k, v)
    calls = {name: s.forward_calls for name, s in stats.items()}
    assert calls == {"Permute": 1, "MatMul": 2, "Mul": 1, "Where": 1, "Sub": 1, "Exp": 1, "Sum": 1, "Div": 1}


def test_reference_kernels_are_the_documented_formulas(rng):
    """lse = log sum_j exp(S_ij), P = exp(S - lse) is the softmax, delta is the textbook rowsum(dP * P),
    and the gradients are the page's formulas."""
    T, d = 4, 3
    q, k, v, dO = (rng.standard_normal((1, 2, T, d)) for _ in range(4))
    out, lse = kernels.attention_forward(q, k, v, True)
    close(out, np_attention(q, k, v))
    S = q @ k.swapaxes(-1, -2) / math.sqrt(d) + np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, 0.0)
    close(lse, np.log(np.exp(S).sum(axis=-1)))
    P = np.exp(S - lse[..., None])
    close(P, np_softmax(S))
    dq, dk, dv = kernels.attention_backward(dO, q, k, v, lse, True)
    dP = dO @ v.swapaxes(-1, -2)
    delta = (dP * P).sum(axis=-1, keepdims=True) / P.sum(axis=-1, keepdims=True)
    close(delta, (dP * P).sum(axis=-1, keepdims=True))  # the division changes only the rounding
    dS = P * (dP - delta)
    close(dq, dS @ k / math.sqrt(d))
    close(dk, dS.swapaxes(-1, -2) @ q / math.sqrt(d))
    close(dv, P.swapaxes(-1, -2) @ dO)


# --- docs/optimizers.md ------------------------------------------------------------------------


def param_with_grads(value):
    return mg.Tensor(np.array(value, dtype=np.float64), requires_grad=True)


def test_sgd_momentum_by_hand(rng):
    lr, mu = 0.1, 0.9
    p = param_with_grads(rng.standard_normal(4))
    theta, buf = p.data.copy(), None
    opt = mg.optim.SGD([p], lr=lr, momentum=mu)
    for _ in range(3):
        g = rng.standard_normal(4)
        p.grad = g.copy()
        opt.step()
        buf = g if buf is None else mu * buf + g
        theta = theta - lr * buf
        close(p.data, theta, tol=1e-12)
    g, b = np.array([2.0]), None  # a constant gradient: b_t = g (1 - mu^t) / (1 - mu) -> g / (1 - mu)
    for t in range(1, 200):
        b = g if b is None else mu * b + g
    close(b, g * (1 - mu**199) / (1 - mu), tol=1e-12)


def test_adam_moment_is_a_weighted_sum_whose_weights_sum_to_one_minus_beta_power_t(rng):
    beta1, grads = 0.9, rng.standard_normal(5)
    m = 0.0
    for g in grads:
        m = beta1 * m + (1 - beta1) * g
    t = len(grads)
    weights = (1 - beta1) * beta1 ** (t - 1 - np.arange(t))
    assert m == pytest.approx((weights * grads).sum(), rel=1e-12)
    assert weights.sum() == pytest.approx(1 - beta1**t, rel=1e-12)


def test_bias_correction_makes_a_constant_gradient_exact_from_step_one():
    p = param_with_grads([0.5, -1.0, 3.0])
    g = np.array([0.2, -4.0, 1e-3])
    opt = mg.optim.AdamW([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    before = p.data.copy()
    for t in range(1, 4):
        p.grad = g.copy()
        opt.step()
        state = opt.state_of(p)
        assert state["step"] == t
        close(state["m_hat"], g, tol=1e-12)
        close(state["v_hat"], g * g, tol=1e-12)
        if t == 1:  # the first step moves each element by lr g / (|g| + eps): about lr, whatever |g|
            close(before - p.data, 0.01 * g / (np.abs(g) + 1e-8), tol=1e-12)


def test_adamw_step_by_hand(rng):
    lr, (b1, b2), eps, wd = 0.05, (0.9, 0.99), 1e-8, 0.1
    p = param_with_grads(rng.standard_normal((2, 3)))
    opt = mg.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    theta, m, v = p.data.copy(), np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(1, 5):
        g = rng.standard_normal((2, 3))
        p.grad = g.copy()
        opt.step()
        theta = theta * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        close(p.data, theta, tol=1e-12)
        state = opt.state_of(p)
        for name, want in (("m", m), ("v", v), ("m_hat", m_hat), ("v_hat", v_hat)):
            close(state[name], want, tol=1e-12)


def test_decoupled_decay_shrinks_by_one_minus_lr_wd_where_l2_in_adam_does_not():
    lr, theta0 = 0.01, np.array([0.5, -2.0, 8.0])
    for wd in (0.01, 0.1):
        decoupled = param_with_grads(theta0)
        opt = mg.optim.AdamW([decoupled], lr=lr, weight_decay=wd)
        decoupled.grad = np.zeros(3)  # the loss pulls nowhere: only the decay acts
        opt.step()
        close(decoupled.data, theta0 * (1 - lr * wd), tol=1e-12)

        l2 = param_with_grads(theta0)  # L2: g <- g + wd theta, fed to Adam without decay
        opt = mg.optim.AdamW([l2], lr=lr, weight_decay=0.0)
        l2.grad = wd * theta0
        opt.step()
        close(theta0 - l2.data, lr * np.sign(theta0), tol=1e-5)  # a step of ~lr per weight, whatever wd is


def test_global_norm_clipping(rng):
    grads = [rng.standard_normal((3, 4)) * 5, rng.standard_normal(7)]
    params = [param_with_grads(np.zeros(g.shape)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    norm = math.sqrt(sum((g * g).sum() for g in grads))
    assert mg.clip_grad_norm_(params, max_norm=1.0) == pytest.approx(norm, rel=1e-12)
    for p, g in zip(params, grads):
        close(p.grad, g * 1.0 / (norm + 1e-6), tol=1e-12)  # same factor for all: the direction is kept
    clipped = math.sqrt(sum((p.grad * p.grad).sum() for p in params))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    before = [p.grad.copy() for p in params]
    mg.clip_grad_norm_(params, max_norm=10.0)  # under the cap: untouched
    for p, g in zip(params, before):
        close(p.grad, g, tol=0)


def test_warmup_then_cosine_schedule():
    lr, min_lr, warmup, decay = 1e-3, 1e-4, 10, 110

    def documented(it):
        if it < warmup:
            return lr * (it + 1) / warmup
        if it >= decay:
            return min_lr
        r = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)

    values = [mg.optim.lr_at(it, lr, min_lr, warmup, decay) for it in range(130)]
    for it, value in enumerate(values):
        assert value == pytest.approx(documented(it), rel=1e-12)
    assert values[0] == pytest.approx(lr / warmup) and values[warmup - 1] == pytest.approx(lr)
    assert values[warmup] == pytest.approx(lr)  # r = 0: the cosine starts at lr
    assert values[(warmup + decay) // 2] == pytest.approx((lr + min_lr) / 2)  # r = 1/2: half-way
    assert values[decay] == values[129] == min_lr
    assert all(a <= b for a, b in zip(values[:warmup], values[1:warmup]))
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1:]))


# --- the pages point at code that exists -------------------------------------------------------


def doc_pages():
    return sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if not target.startswith("http"):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_every_named_function_is_defined_where_the_page_says(page):
    """'`layernorm_forward`/`layernorm_backward` in [`minigrad/kernels.py`]' must name real definitions."""
    text = " ".join(page.read_text().split())
    for names, path in re.findall(r"((?:`[\w.]+`/)*`[\w.]+`) in \[`([\w/.]+\.(?:py|cpp|h|cu))`\]", text):
        source = (ROOT / path).read_text()
        for name in re.findall(r"`([\w.]+)`", names):
            for part in name.split("."):
                definition = rf"^\s*(def|class) {part}\b" if path.endswith(".py") else rf"\b{part}\s*\("
                assert re.search(definition, source, re.M), f"{page.name}: no {part} in {path}"
