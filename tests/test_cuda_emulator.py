"""The CUDA emulator (tests/cuda_emulator) itself: it runs a correct kernel right in either thread order,
and it catches what would go wrong on a GPU: a read without the barrier before it, a full-warp shuffle
in a partial warp or after lanes returned, a deadlock, a launch configuration CUDA refuses. The kernels
are in cuda_emulator/selftest.cu; test_cuda.py runs minigrad's own kernels on the emulator."""

import os
import subprocess
import sys

import numpy as np
import pytest

import cuda_emulator

HERE = os.path.dirname(os.path.abspath(__file__))
ORDERS = ["forward", "reverse"]

pytestmark = [pytest.mark.cuda_emulator,
              pytest.mark.skipif(sys.platform == "win32", reason="the CUDA emulator's fibers need Linux or macOS"),
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
])
def test_undefined_behaviour_is_an_error(selftest, case, message, order):
    out = run(selftest, case, order)
    assert message in out and out.startswith("error: "), out


@pytest.mark.parametrize("case", ["too_many_threads", "empty_grid"])
def test_a_launch_cuda_refuses_is_reported_by_cuda_get_last_error(selftest, case):
    assert run(selftest, case, "forward") == "launch: cudaErrorInvalidConfiguration"


def test_every_launch_is_rewritten():
    text, count = cuda_emulator.translate("k<<<grid_for(n, 256), 256, 0, s>>>(out,\n    f(x), n);")
    assert count == 1
    assert text == "::minigrad_emu::launch([&] { k(out,\n    f(x), n); }, grid_for(n, 256), 256, 0, s);"
    with pytest.raises(ValueError, match="cannot rewrite"):
        cuda_emulator.translate("k<T><<<1, 32>>>(x);")


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


def test_host_cupy_only_offers_names_cupy_has():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the names cannot be checked against it")
    import cupyx

    from cuda_emulator import host_cupy

    module_names = host_cupy.FUNCTIONS | host_cupy.CONSTANTS | {"ndarray", "array", "asarray", "asnumpy", "empty",
                                                                 "get_array_module"}
    assert sorted(n for n in module_names if not hasattr(cupy, n)) == []
    assert sorted(n for n in host_cupy.METHODS | {"get", "T", "shape", "dtype", "flags"}
                  if not hasattr(cupy.ndarray, n)) == []
    assert hasattr(cupy.cuda, "get_current_stream") and hasattr(cupy.cuda.runtime, "getDeviceCount")
    assert hasattr(cupyx, "scatter_add")
