"""python -m minigrad.gradcheck: every case of minigrad.opcheck against finite differences, as a table.

    python -m minigrad.gradcheck                 # every op, functional and layer, float64
    python -m minigrad.gradcheck --op gelu       # one op (repeatable)
"""

import argparse

import numpy as np

from minigrad import opcheck
from minigrad.gradcheck import gradient_comparison, tolerance_excess


def main(argv=None):
    """Run every case of minigrad.opcheck (each registered op, functional composite and layer) and print,
    per op, the worst errors of its backward against finite differences, worst first.
    Relative error: |a - n| / max(|a|, |n|, atol); "of tol": |a - n| / (atol + rtol |n|), > 1 fails.
    Returns the exit status: 0 when every case passes, 1 otherwise."""
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
    raise SystemExit(main())
