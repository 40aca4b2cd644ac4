"""The Tensor and the engine: dtypes, forward values against NumPy formulas, and backward's rules."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad.backend import add_at


def t(x, grad=True):
    return mg.Tensor(np.asarray(x, dtype=np.float64), requires_grad=grad)


# --- construction and dtypes ---


def test_float_data_becomes_float32_unless_float64():
    assert mg.Tensor([1.0, 2.0]).dtype == np.float32
    assert mg.Tensor(np.ones(2, np.float16)).dtype == np.float32
    assert mg.Tensor(np.ones(2, np.float64)).dtype == np.float64
    assert mg.Tensor(3.5).dtype == np.float32
    assert mg.Tensor(np.array([1, 2])).dtype.kind == "i"


def test_ops_keep_float32_with_python_and_numpy_scalars():
    x = mg.Tensor(np.ones(3, np.float32), requires_grad=True)
    for y in (x * 2.5, 2.5 * x, x / 3, 1 - x, x**2, x + np.float64(1.0), (x * x).sum(), x.exp().mean()):
        assert y.dtype == np.float32
    (x * 2.5).sum().backward()
    assert x.grad.dtype == np.float32


def test_attributes_and_conversions():
    x = mg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and x.requires_grad and x.grad is None
    assert x.sum().item() == 15.0
    assert isinstance(x.numpy(), np.ndarray)
    d = x.detach()
    assert not d.requires_grad and d.data is x.data
    assert x.device == "cpu" and x.to("cpu") is x


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        mg.Tensor(np.array([1, 2]), requires_grad=True)


def test_comparisons_on_either_side():
    x = mg.Tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal((x > 1.5).data, [False, True, True])
    np.testing.assert_array_equal((2.0 < x).data, [False, False, True])
    np.testing.assert_array_equal((x == np.array([1.0, 0.0, 3.0])).data, [True, False, True])
    np.testing.assert_array_equal((np.array([3.0, 2.0, 1.0]) >= x).data, [True, True, False])
    assert not (x <= 0).requires_grad


# --- forward values against NumPy formulas ---


def test_forward_values_match_numpy(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4,))
    pos = rng.random((3, 4)) + 0.5
    ta, tb, tp = mg.Tensor(a), mg.Tensor(b), mg.Tensor(pos)
    close = np.testing.assert_allclose
    close((ta + tb).data, a + b)
    close((ta - tb).data, a - b)
    close((ta * tb).data, a * b)
    close((ta / tb).data, a / b)
    close((-ta).data, -a)
    close((tp**1.5).data, pos**1.5)
    close((ta @ mg.Tensor(np.ones((4, 2)))).data, a @ np.ones((4, 2)))
    close(ta.exp().data, np.exp(a))
    close(tp.log().data, np.log(pos))
    close(ta.tanh().data, np.tanh(a))
    close(tp.sqrt().data, np.sqrt(pos))
    close(ta.relu().data, np.maximum(a, 0))
    close(ta.sum(axis=1).data, a.sum(axis=1))
    close(ta.mean(axis=(0, 2), keepdims=True).data, a.mean(axis=(0, 2), keepdims=True))
    close(ta.amax(axis=-1).data, a.max(axis=-1))
    close(ta.max(axis=-1).values.data, a.max(axis=-1))
    np.testing.assert_array_equal(ta.max(dim=-1).indices.data, a.argmax(axis=-1))
    close(ta.max().data, a.max())
    close(ta.reshape(4, 6).data, a.reshape(4, 6))
    close(ta.permute(2, 0, 1).data, a.transpose(2, 0, 1))
    close(ta.transpose(0, 2).data, a.swapaxes(0, 2))
    close(ta[1, :, ::2].data, a[1, :, ::2])
    close(mg.cat([ta, ta], axis=1).data, np.concatenate([a, a], axis=1))
    close(mg.where(a > 0, ta, 0.0).data, np.where(a > 0, a, 0.0))
    pieces = ta.split([1, 3], axis=2)
    close(pieces[1].data, a[:, :, 1:])


def test_functional_forward_values_match_numpy(rng):
    x = rng.standard_normal((2, 3, 5))
    w, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    close = np.testing.assert_allclose
    close(F.linear(mg.Tensor(x), mg.Tensor(w), mg.Tensor(b)).data, x @ w.T + b)
    e = np.exp(x - x.max(-1, keepdims=True))
    close(F.softmax(mg.Tensor(x)).data, e / e.sum(-1, keepdims=True))
    close(F.log_softmax(mg.Tensor(x)).data, np.log(e / e.sum(-1, keepdims=True)))
    g, beta = rng.standard_normal(5), rng.standard_normal(5)
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + beta
    close(F.layer_norm(mg.Tensor(x), mg.Tensor(g), mg.Tensor(beta)).data, ln, rtol=1e-10, atol=1e-12)
    gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    close(F.gelu(mg.Tensor(x)).data, gelu)
    targets = np.array([[0, 4, 2], [1, 1, 3]])
    logp = np.log(e / e.sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1).mean()
    close(F.cross_entropy(mg.Tensor(x), targets).item(), nll)
    emb = rng.standard_normal((7, 3))
    close(F.embedding(np.array([[6, 0], [0, 2]]), mg.Tensor(emb)).data, emb[[[6, 0], [0, 2]]])


def test_attention_matches_a_plain_loop(rng):
    B, NH, T, hs = 2, 3, 5, 4
    q, k, v = (rng.standard_normal((B, NH, T, hs)) for _ in range(3))
    y = F.scaled_dot_product_attention(mg.Tensor(q), mg.Tensor(k), mg.Tensor(v), is_causal=True).data
    for bi in range(B):
        for h in range(NH):
            for i in range(T):
                s = np.array([q[bi, h, i] @ k[bi, h, j] / np.sqrt(hs) for j in range(i + 1)])
                p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
                np.testing.assert_allclose(y[bi, h, i], p @ v[bi, h, : i + 1], rtol=1e-10)


def test_softmax_and_cross_entropy_are_finite_at_large_logits():
    x = mg.Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]]), requires_grad=True)
    assert np.isfinite(F.softmax(x).data).all() and np.isfinite(F.log_softmax(x).data).all()
    loss = F.cross_entropy(x, np.array([1, 2]))
    np.testing.assert_allclose(loss.item(), 1e4)  # row 0 misses by 2e4, row 1 is right: mean 1e4
    loss.backward()
    np.testing.assert_allclose(x.grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-12)


# --- backward's rules ---


def test_gradients_accumulate_when_a_tensor_is_used_twice():
    x = t([1.0, 2.0])
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.array([1.0, 2.0]) + 1)


def test_backward_accumulates_across_calls_until_grad_is_reset():
    x = t([3.0])
    (x * 2).sum().backward()
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad, [7.0])


def test_broadcast_gradient_is_summed_back(rng):
    x, b = t(rng.standard_normal((2, 3, 4))), t(rng.standard_normal(4))
    (x + b).sum().backward()
    assert b.grad.shape == (4,)
    np.testing.assert_allclose(b.grad, np.full(4, 6.0))
    m = t(rng.standard_normal((2, 1, 3)))
    (m * t(np.ones((2, 3, 3)))).sum().backward()
    np.testing.assert_allclose(m.grad, np.full((2, 1, 3), 3.0))


def test_shared_gradient_arrays_are_not_aliased():
    a, b = t([1.0, 2.0]), t([3.0, 4.0])
    (a + b).backward(np.array([1.0, 1.0]))
    a.grad *= 10  # in-place edits (clipping) of one leaf's grad must not reach the other's
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_gather_with_repeated_indices_scatter_adds():
    w = t(np.zeros((3, 2)))
    w[np.array([0, 2, 2, 2])].sum().backward()
    np.testing.assert_allclose(w.grad, [[1, 1], [0, 0], [3, 3]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_at_adds_up_repeated_indices_as_numpy_add_at(dtype):
    """backend.add_at, the one scatter-add of the engine: repeated rows, negative indices naming the same
    rows, a 2-D index and trailing axes, an index tuple with a repeated pair, an inf kept in its own row."""
    rng = np.random.default_rng(4)
    target = rng.normal(size=(7, 3, 2)).astype(dtype)
    index = rng.integers(-7, 7, size=(5, 40))
    values = rng.normal(size=(5, 40, 3, 2)).astype(dtype)
    values[0, 0, 0, 0] = np.inf
    expected = target.copy()
    for i in np.ndindex(index.shape):  # one element at a time: the sum add_at must give
        expected[index[i]] += values[i]
    add_at(target, index, values)
    np.testing.assert_allclose(target, expected, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)
    pairs = np.zeros(4, dtype)
    add_at(pairs, ((0, 0, 3),), np.ones(3, dtype))
    np.testing.assert_array_equal(pairs, [2, 0, 0, 1])


def test_chain_of_ten_thousand_ops_needs_no_recursion():
    x = t(1.0)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, 1.0001**10_000, rtol=1e-9)


def test_graph_is_freed_after_backward_unless_retained():
    x = t([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 2 * np.array([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_no_grad_builds_no_graph():
    x = t([1.0, 2.0])
    with mg.no_grad():
        y = (x * 3).sum()
    assert not y.requires_grad and y._ctx is None
    assert mg.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_non_scalar_backward_needs_a_gradient():
    x = t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="one-element output"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, -1.0]))
    np.testing.assert_allclose(x.grad, [2.0, -2.0])


def test_only_leaves_keep_grad_unless_asked():
    x = t([1.0, 2.0])
    h = x * 3
    k = x * 4
    k.retain_grad()
    (h + k).sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(k.grad, [1.0, 1.0])


def test_gradients_flow_only_to_inputs_that_require_them():
    x, c = t([1.0, 2.0]), mg.Tensor(np.array([5.0, 6.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, [5.0, 6.0])


def test_pow_of_two_tensors_and_its_values_at_zero():
    """d(a^b)/da = b a^(b-1), d(a^b)/db = a^b ln a; at a = 0 both are 0 where PyTorch gives 0 (b = 0 for
    da; b >= 0 for db), not the 0 * inf = NaN the formulas give."""
    a, b = t([0.0, 0.0, 3.0, 2.0]), t([2.0, 0.0, 0.5, -1.0])
    (a**b).backward(np.ones(4))
    np.testing.assert_allclose(a.grad, [0.0, 0.0, 0.5 / np.sqrt(3.0), -0.25])
    np.testing.assert_allclose(b.grad, [0.0, 0.0, np.sqrt(3.0) * np.log(3.0), 0.5 * np.log(2.0)])


def test_split_sizes_must_add_up():
    with pytest.raises(ValueError, match="add up"):
        mg.split(t(np.ones((4, 2))), [1, 2])


def test_cross_entropy_rejects_bad_targets():
    logits = t(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"targets\[1\] = 3 is outside \[0, 3\)"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="do not match"):
        F.cross_entropy(logits, np.array([0, 1, 2]))


def test_backend_info_says_what_is_active():
    info = mg.backend_info()
    assert info["array_module"] == "numpy"
    assert info["cpu_kernels"] in ("cpp", "numpy") and info["why"]


def test_engine_agrees_with_pytorch_when_installed(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 8))
    w, b = rng.standard_normal((5, 8)), rng.standard_normal(5)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    mx, mw, mb = t(x), t(w), t(b)
    torch_loss = torch.nn.functional.cross_entropy(
        torch.nn.functional.gelu(tx @ tw.T + tb, approximate="tanh").reshape(-1, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    )
    ours = F.cross_entropy(F.gelu(F.linear(mx, mw, mb)), np.array([[0, 1, 2], [3, 4, 0]]))
    torch_loss.backward()
    ours.backward()
    np.testing.assert_allclose(ours.item(), torch_loss.item(), rtol=1e-12)
    for mine, theirs in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_slices_dense_uses_and_shared_gradients_accumulate_correctly():
    """Mixing slices, gathers with repeats, dense uses and ops that hand one gradient to two inputs
    gives the exact sums."""
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    y = mg.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    s = x + y  # add hands the same dout array to x and y
    out = (s * 2).sum() + (x[0:2] * 3).sum() + x[1:3].sum() + x[np.array([3, 3, 0])].sum() + (x * x).sum()
    out.backward()
    expected_x = 2 + 2 * x.data
    expected_x[0:2] += 3
    expected_x[1:3] += 1
    expected_x[3] += 2
    expected_x[0] += 1
    np.testing.assert_allclose(x.grad, expected_x, rtol=1e-14)
    np.testing.assert_allclose(y.grad, np.full((4, 3), 2.0))
