"""The CUDA emulator (tests/cuda_emulator) itself: it runs a correct kernel right in either thread order,
and it catches what would go wrong on a GPU: a read without the barrier before it, a full-warp shuffle
in a partial warp or after lanes returned, a deadlock, a launch configuration CUDA refuses. The kernels
are in cuda_emulator/selftest.cu; test_cuda.py runs minigrad's own kernels on the emulator."""

import os
import subprocess
import sys

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
