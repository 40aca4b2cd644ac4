"""Property tests (hypothesis): the binary ops on random broadcastable shapes, the reductions on random
shapes and axes, and indexing with random basic and integer-array indices, each gradchecked in float64
against central differences, and the values held to NumPy (or PyTorch, where it is installed).

The examples are derandomized, so CI sees the same ones every run; HYPOTHESIS_PROFILE=explore draws
new ones (and more of them) for a local search."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BINARY = {  # name: (minigrad op, NumPy op, domain of a, domain of b)
    "add": (lambda a, b: a + b, np.add, "any", "any"),
    "sub": (lambda a, b: a - b, np.subtract, "any", "any"),
    "mul": (lambda a, b: a * b, np.multiply, "any", "any"),
    "div": (lambda a, b: a / b, np.divide, "any", "away"),
    "pow": (lambda a, b: a**b, np.power, "positive", "any"),
    "maximum": (mg.maximum, np.maximum, "any", "any"),  # two draws never tie within the finite differences
}


def leaf(seed, shape, domain):
    """A float64 leaf: N(0, 1); 'positive' in [0.5, 1.5); 'away' from 0 (|x| >= 0.3)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if domain == "positive":
        x = 0.5 + rng.random(shape)
    elif domain == "away":
        x = np.sign(x) * (0.3 + np.abs(x))
    return mg.Tensor(x, requires_grad=True)


@pytest.mark.parametrize("name", BINARY)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3),
       seed=st.integers(0, 2**31))
def test_binary_ops_broadcast_and_match_numpy(name, shapes, seed):
    op, reference, domain_a, domain_b = BINARY[name]
    shape_a, shape_b = shapes.input_shapes
    a, b = leaf(seed, shape_a, domain_a), leaf(seed + 1, shape_b, domain_b)
    out = op(a, b)
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.data, reference(a.data, b.data), rtol=1e-12)
    assert mg.gradcheck(op, [a, b])
    assert a.grad.shape == shape_a and b.grad.shape == shape_b


REDUCTIONS = {  # name: (minigrad reduction of (x, axis, keepdims), NumPy's, least elements it needs)
    "sum": (lambda x, a, k: x.sum(a, k), lambda x, a, k: x.sum(axis=a, keepdims=k), 0),
    "mean": (lambda x, a, k: x.mean(a, k), lambda x, a, k: x.mean(axis=a, keepdims=k), 1),
    "amax": (lambda x, a, k: x.amax(a, k), lambda x, a, k: x.max(axis=a, keepdims=k), 1),
    "var": (lambda x, a, k: x.var(a, k), lambda x, a, k: x.var(axis=a, keepdims=k, ddof=1), 2),
    "logsumexp": (lambda x, a, k: x.logsumexp(a, k),
                  lambda x, a, k: np.log(np.exp(x).sum(axis=a, keepdims=k)), 1),
}


@st.composite
def shape_and_axis(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.one_of(st.none(), hnp.valid_tuple_axes(len(shape), min_size=1)
                          if shape else st.sampled_from([0, -1])))
    return shape, axis


@pytest.mark.parametrize("name", REDUCTIONS)
@given(shape_axis=shape_and_axis(), keepdims=st.booleans(), seed=st.integers(0, 2**31))
def test_reductions_over_random_axes(name, shape_axis, keepdims, seed):
    op, reference, least = REDUCTIONS[name]
    shape, axis = shape_axis
    reduced = int(np.prod(shape if axis is None or not shape else [shape[a] for a in np.atleast_1d(axis)]))
    if reduced < least:
        return
    x = leaf(seed, shape, "any")
    if name == "amax":  # distinct values, well apart, so no tie within the finite differences
        x = mg.Tensor(np.random.default_rng(seed).permutation(x.size).reshape(shape) * 0.1, requires_grad=True)
    out = op(x, axis, keepdims)
    numpy_axis = axis if shape else None  # a 0-d tensor's axis 0 or -1 is all of it; NumPy wants None
    np.testing.assert_allclose(out.data, reference(x.data, numpy_axis, keepdims), rtol=1e-12, atol=1e-12)
    assert mg.gradcheck(lambda t: op(t, axis, keepdims), [x])


@st.composite
def shape_and_index(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    if draw(st.booleans()):
        index = draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    else:  # integer arrays (with repeats) on the first axes, maybe a slice after them
        n = draw(st.integers(1, len(shape)))
        length = draw(st.integers(1, 5))
        index = tuple(np.array(draw(st.lists(st.integers(-shape[i], shape[i] - 1), min_size=length,
                                             max_size=length))) for i in range(n))
    return shape, index


@given(shape_index=shape_and_index(), seed=st.integers(0, 2**31))
def test_indexing_matches_numpy_and_repeated_elements_get_every_gradient(shape_index, seed):
    shape, index = shape_index
    x = leaf(seed, shape, "any")
    out = x[index]
    np.testing.assert_array_equal(out.data, x.data[index])
    assert mg.gradcheck(lambda t: t[index] * 1.0, [x])
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    x.grad = None
    x[index].backward(dout)
    expected = np.zeros(shape)
    np.add.at(expected, index, dout)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-14)


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3),
       seed=st.integers(1, 2**31))
def test_binary_ops_match_pytorch(shapes, seed):
    torch = pytest.importorskip("torch")
    a, b = leaf(seed, shapes.input_shapes[0], "positive"), leaf(seed + 1, shapes.input_shapes[1], "away")
    ta, tb = (torch.tensor(t.data, requires_grad=True) for t in (a, b))
    dout = np.random.default_rng(seed).standard_normal(shapes.result_shape)
    ours, theirs = (a * b - a / b + a**b).sigmoid(), (ta * tb - ta / tb + ta**tb).sigmoid()
    ours.backward(dout)
    theirs.backward(torch.tensor(dout))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-12)
