"""mg.gradcheck: the engine's backward against central finite differences, in float64."""

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


# --- the command line: python -m minigrad.gradcheck ----------------------------------------------


def main(argv=None):
    """Run every case of minigrad.opcheck (each registered op, functional composite and layer) and print,
    per op, the worst errors of its backward against finite differences, worst first.
    Relative error: |a - n| / max(|a|, |n|, atol); "of tol": |a - n| / (atol + rtol |n|), > 1 fails.
    Returns the exit status: 0 when every case passes, 1 otherwise."""
    import argparse

    from minigrad import opcheck  # NOTE: imported here, not at the top: opcheck imports this module

    parser = argparse.ArgumentParser(prog="python -m minigrad.gradcheck", description=main.__doc__.split("\n")[0])
    parser.add_argument("--op", action="append", help="check only this op (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and the upstream gradient")
    args = parser.parse_args(argv)
    atol, rtol = 1e-5, 1e-3  # gradcheck's defaults

    per_op, failures = {}, []  # op -> [cases, max abs err, max rel err, max of tol, failed]
    for name, label, fn, make_inputs in opcheck.all_cases():
        if args.op and name not in args.op:
            continue
        row = per_op.setdefault(name, [0, 0.0, 0.0, 0.0, False])
        row[0] += 1
        try:
            comparisons = gradient_comparison(fn, make_inputs(np.random.default_rng(args.seed)), seed=args.seed)
        except Exception as e:  # a case that cannot run fails too, with its reason
            row[3:] = np.inf, True
            failures.append(f"{name} [{label}]: {type(e).__name__}: {e}")
            continue
        for i, _, numeric, analytic in comparisons:
            finite = np.isfinite(numeric) & np.isfinite(analytic)  # a NaN or Inf counts as an infinite error
            diff = np.where(finite, np.abs(analytic - numeric), np.inf)
            rel = np.where(finite, diff / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol), np.inf)
            of_tol = np.where(finite, diff / (atol + rtol * np.abs(numeric)), np.inf)
            failed = bool(np.any(tolerance_excess(numeric, analytic, atol, rtol) > 0))
            if failed:
                failures.append(f"{name} [{label}]: input {i}: worst |analytic - numeric| = {diff.max():.3e}")
            row[1:] = max(row[1], diff.max()), max(row[2], rel.max()), max(row[3], of_tol.max()), row[4] or failed
    if not per_op:
        known = sorted({name for name, *_ in opcheck.all_cases()})
        parser.error(f"no case for op {args.op}; the ops are: {', '.join(known)}")

    width = max(len("op"), *(len(name) for name in per_op))
    header = f"{'op':<{width}}  {'cases':>5}  {'max abs err':>11}  {'max rel err':>11}  {'of tol':>9}  status"
    print(header)
    print("-" * len(header))
    for name, (cases, abs_err, rel_err, of_tol, failed) in sorted(per_op.items(), key=lambda kv: (not kv[1][4], -kv[1][2])):
        status = "FAIL" if failed else "ok"  # failures first, then the largest relative error
        print(f"{name:<{width}}  {cases:>5}  {abs_err:>11.2e}  {rel_err:>11.2e}  {of_tol:>9.2e}  {status}")
    n_cases = sum(row[0] for row in per_op.values())
    print("-" * len(header))
    print(f"{n_cases} cases, {len(per_op)} ops, float64, eps=1e-6, atol={atol}, rtol={rtol}: "
          + ("all pass" if not failures else f"{len(failures)} FAILED"))
    for line in failures:
        print("FAIL " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    # NOTE: `python -m` runs this file as a second module, __main__, beside the minigrad.gradcheck that
    # `import minigrad` already loaded; call that module's main so one GradcheckError class is in play.
    from minigrad.gradcheck import main as _package_main

    raise SystemExit(_package_main())
