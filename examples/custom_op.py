"""Write your own differentiable op, then let mg.gradcheck judge its backward.

    python examples/custom_op.py

An op is a Function subclass with forward and backward side by side, on raw NumPy arrays
(see minigrad/ops.py for the library's own, e.g. Exp and Tanh). The library's ops add
@register("name") on top, which makes them Tensor methods and puts them in the registry that
python -m minigrad.gradcheck walks; a Function of your own works without it.
"""

import numpy as np

import minigrad as mg


class Softplus(mg.Function):
    """y = log(1 + e^x), a smooth relu; dy/dx = 1 / (1 + e^-x) = sigmoid(x)."""

    def forward(self, x):
        # NOTE: log(1 + e^x) overflows for x > 709; max(x, 0) + log1p(e^-|x|) is the same value and never does.
        self.x = x  # keep what backward needs
        self.y = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
        return self.y

    def backward(self, dout):  # one gradient per input: the chain rule's dout * dy/dx
        # NOTE: sigmoid(x) = e^x / (1 + e^x) = e^(x - y), and x - y <= 0, so this exp cannot overflow.
        return dout * np.exp(self.x - self.y)


class SoftplusWrongBackward(Softplus):
    """A plausible slip: sigmoid(x) (1 - sigmoid(x)) is the derivative of sigmoid, not of softplus."""

    def backward(self, dout):
        sigmoid = np.exp(self.x - self.y)
        return dout * sigmoid * (1 - sigmoid)


def softplus(x):
    return Softplus.apply(x)


def main():
    rng = np.random.default_rng(0)

    # 1. use it like any op: it joins the graph, and backward calls our backward
    x = mg.Tensor(np.array([-800.0, -2.0, 0.0, 3.0, 800.0]), requires_grad=True)
    y = softplus(x)
    y.sum().backward()
    print("x           ", x.data)
    print("softplus(x) ", y.data)
    print("dy/dx       ", x.grad)

    # 2. gradcheck: float64 inputs, central differences against our backward, random upstream gradient
    x = mg.Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    print("gradcheck(Softplus):", mg.gradcheck(softplus, [x]))

    # 3. it also works inside a composite, next to the library's ops
    w = mg.Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    print("gradcheck(softplus(x) @ w.T):", mg.gradcheck(lambda x, w: softplus(x) @ w.T, [x, w]))

    # 4. and it catches a wrong backward, naming the input and element
    try:
        mg.gradcheck(SoftplusWrongBackward.apply, [x])
        raise SystemExit("gradcheck missed the wrong backward")
    except mg.GradcheckError as e:
        print("wrong backward caught:", e)


if __name__ == "__main__":
    main()
