"""mg.gradcheck: the engine's backward against central finite differences, in float64.

``python -m minigrad.gradcheck`` (``__main__.py`` beside this file) checks every op and layer.
"""

import numpy as np

from minigrad.backend import to_device
from minigrad.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """A backward disagrees with finite differences; the message names the input and element."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_elements=None, seed=0):
    """Check fn's backward for every input Tensor that requires grad.

    With a random upstream gradient dout (fixed by seed), L(x) = sum(fn(*inputs) * dout); each
    checked element x_i gets the numeric derivative (L(x_i + eps) - L(x_i - eps)) / (2 eps),
    compared with the analytic dL/dx_i from backward: |analytic - numeric| <= atol + rtol |numeric|.
    A random dout matters: the gradient of sum(softmax(x)) is zero whatever the backward says.

    inputs: a list of Tensors (float64 where they require grad) and other values passed through.
    max_elements: check at most this many randomly chosen elements of each input (None: all).
    Returns True, or raises GradcheckError naming the input, the worst element, both values.
    """
    for i, positions, numeric, analytic in gradient_comparison(fn, inputs, eps, max_elements, seed):
        excess = tolerance_excess(numeric, analytic, atol, rtol)
        if excess.size == 0:  # an empty input: no element to check
            continue
        worst = int(np.argmax(excess))
        if excess[worst] > 0:
            x = inputs[i]
            index = np.unravel_index(positions[worst], x.shape)
            name = f" ({x.name})" if x.name else ""
            raise GradcheckError(
                f"gradcheck: input {i}{name} at index {tuple(int(j) for j in index)}: "
                f"numeric {numeric[worst]:.10g} vs analytic {analytic[worst]:.10g} (tolerance atol={atol}, rtol={rtol})"
            )
    return True


def tolerance_excess(numeric, analytic, atol, rtol):
    """|analytic - numeric| - (atol + rtol |numeric|) per element: > 0 fails; a NaN or Inf is +inf."""
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    return np.where(np.isfinite(numeric) & np.isfinite(analytic), excess, np.inf)


def gradient_comparison(fn, inputs, eps=1e-6, max_elements=None, seed=0):
    """The numbers gradcheck compares: for each input i that requires grad, a tuple
    (i, positions, numeric, analytic) of the checked flat positions and both derivatives there."""
    rng = np.random.default_rng(seed)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; create them with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 so eps={eps} is meaningful")
        inputs[i].grad = None

    out = fn(*inputs)
    dout = rng.standard_normal(out.shape)
    out.backward(dout)

    def objective():
        with no_grad():
            return float((fn(*inputs).numpy() * dout).sum())

    results = []
    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else to_device(x.grad, "cpu")
        x.data = x.data.copy()  # contiguous and our own, so that flat below is a view of it
        flat = x.data.reshape(-1)  # writing flat[p] perturbs x
        positions = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            positions = rng.choice(flat.size, size=max_elements, replace=False)
        numeric = np.empty(len(positions))
        for j, p in enumerate(positions):
            original = float(flat[p])
            flat[p] = original + eps
            plus = objective()
            flat[p] = original - eps
            minus = objective()
            flat[p] = original
            numeric[j] = (plus - minus) / (2 * eps)
        results.append((i, positions, numeric, analytic.reshape(-1)[positions].astype(np.float64)))
    return results
