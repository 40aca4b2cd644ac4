"""The CUDA emulator (tests/cuda_emulator) itself: it runs a correct kernel right in either thread order,
and it catches what would go wrong on a GPU: a read without the barrier before it, a full-warp shuffle
in a partial warp or after lanes returned, a deadlock, a launch configuration CUDA refuses. The kernels
are in cuda_emulator/selftest.cu; test_cuda.py runs minigrad's own kernels on the emulator."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import cuda_emulator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = pathlib.Path(HERE).parent
ORDERS = ["forward", "reverse"]

pytestmark = [pytest.mark.cuda_emulator,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CUDA emulator's fibers are built for Linux"),
              pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler on PATH")]


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    return cuda_emulator.build_program(os.path.join(HERE, "cuda_emulator", "selftest.cu"),
                                       tmp_path_factory.mktemp("cuda_emulator"))


def run(program, case, order):
    env = dict(os.environ, MINIGRAD_CUDA_EMULATOR_ORDER=order)
    result = subprocess.run([str(program), case], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ints(text):
    return [int(v) for v in text.split()]


ROTATED = [100 + (t + 1) % 64 for t in range(64)]


@pytest.mark.parametrize("order", ORDERS)
def test_a_correct_kernel_gives_the_same_result_in_either_order(selftest, order):
    assert ints(run(selftest, "rotate", order)) == ROTATED
    assert ints(run(selftest, "warp_sum", order)) == [496] * 64


@pytest.mark.parametrize("order", ORDERS)
def test_a_missing_barrier_changes_the_result(selftest, order):
    assert ints(run(selftest, "rotate_without_barrier", order)) != ROTATED


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case, message", [
    ("warp_sum_in_a_partial_warp", "error: CUDA emulator: __shfl_xor_sync with a full mask in warp 1, but the "
                                   "block of 48 threads has only 16 lanes in it"),
    ("warp_sum_after_lanes_returned", "but some of its lanes have returned"),
    ("deadlock", "error: CUDA emulator: deadlock in block (0, 0, 0): 32 threads wait at __syncthreads, 32 at a "
                 "warp shuffle, 0 have returned"),
    ("divergent_syncthreads", "wait at different __syncthreads calls, "),
])
def test_undefined_behaviour_is_an_error(selftest, case, message, order):
    out = run(selftest, case, order)
    assert message in out and out.startswith("error: "), out


def test_the_lowest_thread_that_can_run_runs_first(selftest):
    """Warp 0 arrives at its shuffle, is released at once and finishes before warp 1 starts."""
    first, second = list(range(32)), list(range(32, 64))
    expected = first + [1000 + t for t in first] + second + [1000 + t for t in second]
    assert ints(run(selftest, "schedule", "forward")) == expected
    last, next_to_last = second[::-1], first[::-1]
    expected = last + [1000 + t for t in last] + next_to_last + [1000 + t for t in next_to_last]
    assert ints(run(selftest, "schedule", "reverse")) == expected


def test_arguments_are_evaluated_once_and_an_error_leaves_the_emulator_usable(selftest):
    assert ints(run(selftest, "arguments_evaluated_once", "forward"))[:2] == [1, 496]
    assert ints(run(selftest, "a_launch_after_an_error", "forward")) == [496] * 64


@pytest.mark.parametrize("case", ["too_many_threads", "empty_grid"])
def test_a_launch_cuda_refuses_is_reported_by_cuda_get_last_error(selftest, case):
    assert run(selftest, case, "forward") == "launch: cudaErrorInvalidConfiguration"


def test_every_launch_is_rewritten():
    text, count = cuda_emulator.translate("k<<<grid_for(n, 256), 256, 0, s>>>(out,\n    f(x), n);")
    assert count == 1
    assert text == ("::minigrad_emu::launch([&](auto&... a) { k(a...); }, std::make_tuple(out,\n    f(x), n), "
                    "grid_for(n, 256), 256, 0, s);")
    text, count = cuda_emulator.translate("k<<<1, 32>>>(x) ;\nother(y);")  # the next statement stays outside
    assert count == 1 and text.endswith("}, std::make_tuple(x), 1, 32);\nother(y);")
    for bad in ("k<T><<<1, 32>>>(x);", "k<<<1, 32>>>(x)\nother(y);"):
        with pytest.raises(ValueError, match="cannot rewrite"):
            cuda_emulator.translate(bad)
    for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):  # every launch of the real kernels
        source = cu.read_text()
        assert cuda_emulator.translate(source)[1] == source.count("<<<"), cu.name


# --- host_cupy: CuPy's API on host memory, for minigrad's GPU path on the emulator ----------------


def test_host_cupy_behaves_like_cupy_where_minigrad_could_tell():
    from cuda_emulator import host_cupy

    cupy, host = host_cupy.module(), np.arange(6.0).reshape(2, 3)
    x = cupy.asarray(host)
    host[0, 0] = 99.0  # asarray of host data is a copy, as a transfer to the GPU is
    assert x.get()[0, 0] == 0.0 and isinstance(x.get(), np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="does not mix NumPy arrays"):
        x + host
    total = x.sum()
    assert isinstance(total, cupy.ndarray) and total.shape == () and float(total) == 15.0
    y = x
    y += 1.0  # in place: the same array
    assert y is x and x.get()[0, 0] == 1.0
    assert isinstance(cupy.exp(x), cupy.ndarray) and isinstance(x.T[0], cupy.ndarray)
    assert x.__cuda_array_interface__["data"][0] == x._array.ctypes.data
    with pytest.raises(AttributeError, match="add it to METHODS"):
        x.nonzero()
    for call in (lambda: cupy.concatenate([x, host]), lambda: np.concatenate([x, host]), lambda: x.dot(host.T)):
        with pytest.raises(TypeError, match="does not mix NumPy arrays"):
            call()
    with pytest.raises(ValueError, match="from a NumPy array is not supported"):
        x[0] = host[1]
    assert np.isnan(cupy.empty_like(x).get()).all()


def test_host_cupy_only_offers_names_cupy_has():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the names cannot be checked against it")
    import cupyx

    from cuda_emulator import host_cupy

    module_names = host_cupy.FUNCTIONS | host_cupy.CONSTANTS | {"ndarray", "asarray", "empty", "empty_like"}
    assert sorted(n for n in module_names if not hasattr(cupy, n)) == []
    assert sorted(n for n in host_cupy.METHODS | {"get", "T", "shape", "dtype", "flags"}
                  if not hasattr(cupy.ndarray, n)) == []
    assert hasattr(cupy.cuda, "get_current_stream") and hasattr(cupy.cuda.runtime, "getDeviceCount")
    assert hasattr(cupyx, "scatter_add")


def test_host_cupy_offers_every_function_minigrad_calls():
    """Each `xp.<name>` in minigrad/*.py (xp being NumPy or CuPy), so the emulated GPU path never
    stops at a function missing from the stand-in; with CuPy installed, the test above checks them."""
    import re

    from cuda_emulator import host_cupy

    cupy = host_cupy.module()
    used = set()
    for path in (ROOT / "minigrad").glob("*.py"):
        used |= set(re.findall(r"\bxp\.(\w+)", path.read_text()))
        used |= set(re.findall(r"get_array_module\([^()]*\)\.(\w+)", path.read_text()))
    assert used, "the scan found no xp.<name> at all"
    assert sorted(n for n in used if not hasattr(cupy, n)) == []
