"""Every registered op and every functional, checked against central differences in float64."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad.opcheck import CASES, all_cases


def test_every_registered_op_has_a_gradcheck_case():
    missing = sorted(set(mg.REGISTRY) - set(CASES))
    assert not missing, f"ops without a gradient-check case in minigrad/opcheck.py: {missing}"


# The functionals whose forward and backward run a fused kernel: checked on each CPU backend.
FUSED = {"cross_entropy", "layer_norm", "gelu", "scaled_dot_product_attention", "self_attention", "embedding"}


def _cases_on_backends():
    for name, label, fn, make_inputs in all_cases():
        for backend in ("numpy", "cpp") if name in FUSED else ("auto",):
            yield pytest.param(name, fn, make_inputs, backend, id=f"{name}-{label}-{backend}")


@pytest.mark.parametrize("name, fn, make_inputs, kernel_backend", list(_cases_on_backends()), indirect=["kernel_backend"])
def test_gradcheck(name, fn, make_inputs, kernel_backend):
    assert mg.gradcheck(fn, make_inputs(np.random.default_rng(0)))


class WrongSoftmaxBackward(mg.Function):
    """softmax with a plausible but wrong backward (dout * y): the sum-seeded check cannot see it."""

    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y

    def backward(self, dout):
        return dout * self.y


def test_gradcheck_catches_a_wrong_softmax_backward(rng):
    x = mg.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match=r"input 0 at index \(\d+, \d+\): numeric .* vs analytic"):
        mg.gradcheck(WrongSoftmaxBackward.apply, [x])


def test_gradcheck_catches_a_nan_backward(rng):
    class NanBackward(mg.Function):
        def forward(self, x):
            return x * 2

        def backward(self, dout):
            return dout * np.nan

    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(NanBackward.apply, [mg.Tensor(rng.standard_normal(3), requires_grad=True)])


def test_gradcheck_names_the_input_and_checks_a_sample(rng):
    class HalfWrong(mg.Function):  # right for a, wrong for b
        def forward(self, a, b):
            self.a, self.b = a, b
            return a * b

        def backward(self, dout):
            return dout * self.b, dout * self.b

    a = mg.Tensor(rng.standard_normal(50), requires_grad=True)
    b = mg.Tensor(rng.standard_normal(50), requires_grad=True, name="b")
    with pytest.raises(mg.GradcheckError, match=r"input 1 \(b\)"):
        mg.gradcheck(HalfWrong.apply, [a, b], max_elements=10)


def test_gradcheck_rejects_float32_and_inputs_without_grad():
    with pytest.raises(TypeError, match="float64"):
        mg.gradcheck(lambda x: x * 2, [mg.Tensor(np.ones(3, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="requires grad"):
        mg.gradcheck(lambda x: x * 2, [mg.Tensor(np.ones(3))])


def test_gradcheck_of_a_user_function(rng):
    """The public tool on a student's own composite: a two-layer MLP with a softmax head."""
    x = mg.Tensor(rng.standard_normal((5, 3)))
    w1 = mg.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w2 = mg.Tensor(rng.standard_normal((2, 4)), requires_grad=True)
    assert mg.gradcheck(lambda w1, w2: F.softmax(F.linear(F.linear(x, w1).tanh(), w2)), [w1, w2])
