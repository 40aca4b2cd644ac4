"""mg.profile: count and time every op's forward and backward, per Function class.

    with mg.profile() as prof:
        loss = model(x, y)
        loss.backward()
    prof.table()          # the sorted table on stdout

While a profile is open, ``tensor._active_profiler`` points at it and ``Function.apply`` and the
backward loop hand it each ``forward``/``backward`` call to time; closed, the engine pays one
``is None`` check per call. Only the op's own ``forward``/``backward`` is timed: the engine's
bookkeeping (lifting inputs, unbroadcasting, summing gradients) shows as the gap between the ops'
total and the block's wall time.

NOTE: on a GPU, CuPy launches kernels asynchronously, so the times there are launch times unless
something synchronizes inside the op; the call counts are exact everywhere.
"""

import sys
import time
from dataclasses import dataclass

from minigrad import tensor


@dataclass
class OpStats:
    """Calls and seconds spent in one Function class's forward and backward."""

    forward_calls: int = 0
    forward_time: float = 0.0
    backward_calls: int = 0
    backward_time: float = 0.0

    @property
    def total_time(self):
        return self.forward_time + self.backward_time


class profile:
    """Context manager recording each op's forward and backward call count and time.

    ``stats``: Function class name -> OpStats; ``wall_time``: seconds the block ran.
    Entering the same profile again adds to it, so a training loop can wrap only its step:
    ``prof = mg.profile()`` once, ``with prof:`` around each step, ``prof.table()`` at the end.
    Profiles do not nest: an inner one records alone until it closes.
    """

    def __init__(self):
        self.stats = {}
        self.wall_time = 0.0

    def __enter__(self):
        self._previous, tensor._active_profiler = tensor._active_profiler, self
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_time += time.perf_counter() - self._start
        tensor._active_profiler = self._previous

    def record(self, fn_class, phase, method, *args, **kwargs):
        """Call method(*args, **kwargs) (a forward or backward of fn_class) and book its time."""
        start = time.perf_counter()
        out = method(*args, **kwargs)
        elapsed = time.perf_counter() - start
        stats = self.stats.setdefault(fn_class.__name__, OpStats())
        if phase == "forward":
            stats.forward_calls += 1
            stats.forward_time += elapsed
        else:
            stats.backward_calls += 1
            stats.backward_time += elapsed
        return out

    def format_table(self):
        """The table as text, the most expensive op (forward + backward time) first."""
        rows = sorted(self.stats.items(), key=lambda item: item[1].total_time, reverse=True)
        ops_time = sum(s.total_time for _, s in rows)
        width = max([len("op")] + [len(name) for name, _ in rows])
        header = f"{'op':<{width}}  {'fwd calls':>9}  {'fwd ms':>9}  {'bwd calls':>9}  {'bwd ms':>9}  {'total ms':>9}  {'share':>6}"
        lines = [header, "-" * len(header)]
        for name, s in rows:
            share = s.total_time / ops_time if ops_time > 0 else 0.0
            lines.append(
                f"{name:<{width}}  {s.forward_calls:>9}  {s.forward_time * 1e3:>9.3f}  {s.backward_calls:>9}  "
                f"{s.backward_time * 1e3:>9.3f}  {s.total_time * 1e3:>9.3f}  {share:>6.1%}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"ops: {ops_time * 1e3:.3f} ms of {self.wall_time * 1e3:.3f} ms in the profiled block "
            "(the rest is the engine, Python and your own code)"
        )
        return "\n".join(lines)

    def table(self, file=None):
        """Print the sorted table (to stdout unless file is given)."""
        print(self.format_table(), file=sys.stdout if file is None else file)
