"""Tensor.register_hook: called with the gradient when backward reaches the tensor; may replace it."""

import numpy as np
import pytest

import minigrad as mg


def test_hook_sees_the_gradient_reaching_a_non_leaf():
    x = mg.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    h = x * 2.0  # dL/dh = 3 h^2 for L = sum(h^3)
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))
    (h * h * h).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 3 * (2.0 * np.array([1.0, 2.0, 3.0])) ** 2)
    np.testing.assert_allclose(x.grad, 2 * seen[0])  # the hook returned None: the gradient flows on unchanged


def test_a_returned_replacement_is_what_flows_on():
    x = mg.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    h = x * 3.0
    h.register_hook(lambda g: g * 0 + np.array([10.0, 20.0]))
    (h * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 * np.array([10.0, 20.0]))


def test_hooks_on_a_leaf_chain_in_order_and_change_its_grad():
    x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    calls = []
    x.register_hook(lambda g: calls.append(("first", g.copy())) or g * 2)
    x.register_hook(lambda g: calls.append(("second", g.copy())))
    (x * x).sum().backward()
    assert [name for name, _ in calls] == ["first", "second"]
    np.testing.assert_allclose(calls[1][1], 2 * calls[0][1])  # the second hook sees the first's replacement
    np.testing.assert_allclose(x.grad, 2 * (2 * np.array([1.0, 2.0])))


def test_hook_sees_the_summed_gradient_of_every_use():
    x = mg.Tensor(np.array([1.5]), requires_grad=True)
    h = x * 1.0
    seen = []
    h.register_hook(seen.append)
    (h * 2.0 + h * 5.0).sum().backward()
    assert len(seen) == 1 and seen[0].tolist() == [7.0]  # called once, with both uses added


def test_hook_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.Tensor([1.0]).register_hook(print)


@pytest.mark.parametrize("replacement, what", [(np.ones(3), "shape"), (np.ones((2, 1)), "shape"),
                                               (np.ones(2, np.float32), "dtype"), ([1.0, 2.0], "not an array")])
def test_a_replacement_unlike_the_gradient_is_refused(replacement, what):
    """A hook's result of another shape or dtype would leave .grad unlike its tensor (or be summed back
    silently): one line that says so, on a leaf and on a non-leaf alike."""
    for make in (lambda x: x, lambda x: x * 1.0):
        x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
        h = make(x)
        h.register_hook(lambda g: replacement)
        with pytest.raises(ValueError, match=r"a hook returned .* as the gradient of a tensor of shape \(2,\) and dtype "
                                             r"float64 on cpu"):
            (h * 2.0).sum().backward()
