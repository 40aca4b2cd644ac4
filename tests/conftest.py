import importlib.util
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

import cuda_emulator
import minigrad as mg
from cuda_emulator import host_cupy
from kernel_cases import GPU_SKIP, IMPLEMENTATIONS, Implementation
from minigrad import backend, dispatch
from minigrad import kernels as ref


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def write_corpus(path, n_words):
    """A small synthetic text at path (n_words seeded draws from 9 words); returns the path as a str."""
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran\n"]
    path.write_text("".join(np.random.default_rng(0).choice(words, n_words)))
    return str(path)


@pytest.fixture
def make_corpus(tmp_path):
    """make_corpus(n_words) -> the path of write_corpus's text, in the test's folder."""
    return lambda n_words: write_corpus(tmp_path / "corpus.txt", n_words)


@pytest.fixture(scope="module")
def module_corpus(tmp_path_factory):
    """The path of write_corpus's text of 6,000 words, made once per test module."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", 6000)


@pytest.fixture
def kernel_backend(request):
    """Runs the test with the CPU kernels forced to request.param ('numpy' or 'cpp'), then restores the choice."""
    name = request.param
    info = mg.backend_info()
    if name == "cpp" and not info["extension_built"]:
        pytest.skip(f"the C++ kernels are unavailable: {info['extension_reason']}")
    mg.set_backend(name)
    yield name
    mg.set_backend(info["requested_backend"])


HOLD_THE_LOCK = """import sys, time
sys.path.insert(0, sys.argv[1])
import train_char
with train_char.lock_out_dir(sys.argv[2]):
    print("holding", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def hold_lock():
    """hold_lock(out_dir) -> the pid of a child process holding train_char.py's lock on out_dir (as a run in
    it would) until the test ends."""
    holders = []

    def hold(out_dir):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        holders.append(subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, root, out_dir], stdout=subprocess.PIPE,
                                        text=True))
        assert holders[-1].stdout.readline() == "holding\n"
        return holders[-1].pid

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


# --- the GPU, real or emulated ------------------------------------------------------------------


@pytest.fixture(scope="session")
def emulated_cuda(request, tmp_path_factory):
    """minigrad._C_cuda built against the CPU emulator (tests/cuda_emulator), cached between runs."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the CUDA emulator's fibers are built for Linux")
    if cuda_emulator.compiler() is None:
        pytest.skip("no C++ compiler on PATH for the emulated _C_cuda")
    pytest.importorskip("pybind11", reason="the emulated _C_cuda needs pybind11's headers: pip install -e '.[test]'")
    # MINIGRAD_CUDA_EMULATOR_CXXFLAGS adds compiler flags, e.g. "-fsanitize=address" (with libasan preloaded)
    extra_flags = shlex.split(os.environ.get("MINIGRAD_CUDA_EMULATOR_CXXFLAGS", ""))
    name = "cuda_emulator" + "".join("_" + f.strip("-").replace("=", "_").replace(",", "_") for f in extra_flags)
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: build afresh then
    path = cuda_emulator.build(cache.mkdir(name) if cache else tmp_path_factory.mktemp(name), extra_flags)
    spec = importlib.util.spec_from_file_location("_C_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def emulated_gpu(emulated_cuda, monkeypatch):
    """Until the test ends, CuPy is host_cupy (its API on host memory) and _C_cuda the emulated build:
    device 'cuda' runs minigrad's GPU path on this CPU. Returns the emulated _C_cuda."""
    monkeypatch.setitem(sys.modules, "cupy", host_cupy.module())
    monkeypatch.setitem(sys.modules, "cupyx", host_cupy.cupyx_module())
    monkeypatch.setattr(backend, "_cupy", None)  # imported on first need, as CuPy is (it finds host_cupy)
    monkeypatch.setattr(dispatch, "_C_CUDA", emulated_cuda)
    monkeypatch.setattr(dispatch, "_C_CUDA_REASON", "minigrad._C_cuda is emulated on the CPU (tests/cuda_emulator)")
    return emulated_cuda


@pytest.fixture
def emulated(emulated_gpu):
    """_C_cuda on the CPU emulator, as an Implementation."""
    return Implementation("cuda_emulated", emulated_gpu, on_device=True)


def cuda_module_or_skip():
    """minigrad._C_cuda where it is built and a GPU is usable, else a skip that says why."""
    if GPU_SKIP is not None:
        pytest.skip(GPU_SKIP)
    if dispatch._C_CUDA is None:
        pytest.skip(dispatch._C_CUDA_REASON)
    if dispatch._C_CUDA.device_count() == 0:
        pytest.skip(f"CuPy sees a GPU but _C_cuda's runtime does not: {dispatch._C_CUDA.device_reason()}")
    return dispatch._C_CUDA


def implementation(request, name):
    """The Implementation called `name` (kernel_cases.IMPLEMENTATIONS), or a skip that says why it is missing."""
    if name == "reference":
        return Implementation(name, ref, on_device=False)
    if name == "cpp":
        if dispatch._C is None:
            pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
        return Implementation(name, dispatch._C, on_device=False)
    if name == "cuda_emulated":
        return request.getfixturevalue("emulated")
    if GPU_SKIP is not None:
        pytest.skip(GPU_SKIP)
    return Implementation(name, ref if name == "cupy_reference" else cuda_module_or_skip(), on_device=True)


@pytest.fixture(params=[IMPLEMENTATIONS[n] for n in ("cpp", "cuda", "cuda_emulated", "cupy_reference")])
def impl(request):
    """Each implementation that is held to the reference."""
    return implementation(request, request.param)


@pytest.fixture(params=list(IMPLEMENTATIONS.values()))
def every_impl(request):
    """Each implementation, the reference too: for what every one must do alike (bad indices, empty
    batches, the causal mask)."""
    return implementation(request, request.param)


@pytest.fixture(params=[IMPLEMENTATIONS[n] for n in ("cpp", "cuda", "cuda_emulated")])
def compiled(request):
    """Each compiled module, on its own arrays."""
    return implementation(request, request.param)
