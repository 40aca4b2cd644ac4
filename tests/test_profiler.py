"""mg.profile: per-op call counts and times for forward and backward, and the table."""

import io

import numpy as np

import minigrad as mg
import minigrad.functional as F
from minigrad import tensor
from minigrad.profiler import OpStats


def run_mlp(rng, steps):
    w1 = mg.Tensor(rng.standard_normal((8, 4)), requires_grad=True)
    w2 = mg.Tensor(rng.standard_normal((3, 8)), requires_grad=True)
    x, y = rng.standard_normal((5, 4)), np.array([0, 1, 2, 1, 0])
    for _ in range(steps):
        loss = F.cross_entropy(F.linear(F.linear(x, w1).tanh(), w2), y)
        loss.backward()


def test_counts_every_forward_and_backward_per_op(rng):
    with mg.profile() as prof:
        run_mlp(rng, steps=3)
    s = prof.stats
    assert set(s) == {"Linear", "Tanh", "CrossEntropy"}
    assert (s["Linear"].forward_calls, s["Linear"].backward_calls) == (6, 6)
    assert (s["Tanh"].forward_calls, s["Tanh"].backward_calls) == (3, 3)
    assert (s["CrossEntropy"].forward_calls, s["CrossEntropy"].backward_calls) == (3, 3)
    assert all(st.forward_time > 0 and st.backward_time > 0 for st in s.values())
    assert sum(st.total_time for st in s.values()) <= prof.wall_time


def test_ops_outside_the_graph_count_forward_only(rng):
    x = mg.Tensor(rng.standard_normal(4))  # requires no grad: no backward will run
    with mg.profile() as prof:
        (x.exp() + 1).sum()
    assert {name: (st.forward_calls, st.backward_calls) for name, st in prof.stats.items()} == {
        "Exp": (1, 0), "Add": (1, 0), "Sum": (1, 0)}


def test_profiler_is_off_outside_the_block_and_restored_on_error(rng):
    with mg.profile() as prof:
        pass
    assert tensor._active_profiler is None
    run_mlp(rng, steps=1)
    assert prof.stats == {}
    try:
        with mg.profile():
            raise KeyError("boom")
    except KeyError:
        pass
    assert tensor._active_profiler is None


def test_nested_profile_records_alone_then_hands_back(rng):
    x = mg.Tensor(0.5 + rng.random(3), requires_grad=True)
    with mg.profile() as outer:
        x.exp()
        with mg.profile() as inner:
            x.tanh()
        x.log()
    assert set(inner.stats) == {"Tanh"}
    assert set(outer.stats) == {"Exp", "Log"}


def test_entering_again_adds_up(rng):
    prof = mg.profile()
    for _ in range(3):
        with prof:
            run_mlp(rng, steps=1)
        run_mlp(rng, steps=1)  # between the blocks: not recorded
    assert (prof.stats["Tanh"].forward_calls, prof.stats["Tanh"].backward_calls) == (3, 3)


def test_table_is_sorted_by_total_time():
    prof = mg.profile()
    prof.stats = {"Cheap": OpStats(2, 0.001, 2, 0.001),
                  "Dear": OpStats(1, 0.010, 1, 0.020)}
    prof.wall_time = 0.05
    out = io.StringIO()
    prof.table(file=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["op", "fwd", "calls", "fwd", "ms", "bwd", "calls", "bwd", "ms", "total", "ms", "share"]
    assert lines[2].split() == ["Dear", "1", "10.000", "1", "20.000", "30.000", "93.8%"]
    assert lines[3].split() == ["Cheap", "2", "1.000", "2", "1.000", "2.000", "6.2%"]
    assert "32.000 ms of 50.000 ms" in lines[-1]
