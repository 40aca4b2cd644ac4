"""The GPU path. On a GPU with CuPy: every kernel of minigrad._C_cuda (and the CuPy run of the reference,
the fallback when _C_cuda is not built) against the NumPy reference; float64 gradchecks and training on
cpu and cuda. On every machine: the CUDA module imports where it was built, checks its arguments, raises
"no CUDA device is usable" without a GPU; backend_info() reports the GPU path; CMake's MINIGRAD_CUDA switch;
and every kernel test once more on _C_cuda built against the CPU emulator in tests/cuda_emulator (marker
`cuda_emulator`), in two thread orders. Tests that need a GPU carry the `gpu` marker and skip, with the
reason, where there is none."""

import importlib.util
import inspect
import math
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import backend, dispatch
from minigrad import kernels as ref

import cuda_emulator
from cuda_emulator import host_cupy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C_CUDA = dispatch._C_CUDA
KERNEL_NAMES = ["layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward", "attention_forward",
                "attention_backward", "self_attention_forward", "self_attention_backward", "crossentropy_forward",
                "crossentropy_backward", "adamw_update", "global_norm"]


def _gpu_skip_reason():
    """None where CuPy is installed and sees a GPU, else why not."""
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install -e '.[cuda]')"
    import cupy

    try:
        return None if cupy.cuda.is_available() else "CuPy sees no CUDA device"
    except Exception as e:  # a broken driver or CUDA install
        return f"CuPy cannot reach a GPU ({type(e).__name__}: {e})"


GPU_SKIP = _gpu_skip_reason()
needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(GPU_SKIP is not None, reason=str(GPU_SKIP))]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_gpu),
                        pytest.param("cuda (emulated)", marks=pytest.mark.cuda_emulator)])
def device(request):
    """'cpu', 'cuda' on a GPU, or 'cuda' on the emulated GPU (emulate_the_gpu)."""
    if request.param == "cuda (emulated)":
        emulate_the_gpu(request)
        return "cuda"
    return request.param


@pytest.fixture(params=[pytest.param("gpu", marks=needs_gpu), pytest.param("emulated", marks=pytest.mark.cuda_emulator)])
def cuda_kind(request):
    """Device 'cuda' on a GPU, or on the emulated one: 'gpu' or 'emulated'."""
    if request.param == "emulated":
        emulate_the_gpu(request)
    return request.param


def cuda_module_or_skip():
    """minigrad._C_cuda where it is built and a GPU is usable, else a skip that says why."""
    if GPU_SKIP is not None:
        pytest.skip(GPU_SKIP)
    if C_CUDA is None:
        pytest.skip(dispatch._C_CUDA_REASON)
    if C_CUDA.device_count() == 0:
        pytest.skip(f"CuPy sees a GPU but _C_cuda's runtime does not: {C_CUDA.device_reason()}")
    return C_CUDA


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


class OnDevice:
    """The kernels under test and how to hand them arrays: `on.kernels.f(*on.arrays(x, y))`."""

    def __init__(self, kernels, array):
        self.kernels, self.array = kernels, array

    def arrays(self, *arrays):
        return [None if a is None else self.array(a) for a in arrays]


def emulate_the_gpu(request):
    """Until the test ends, CuPy is host_cupy (its API on host memory) and _C_cuda the emulated build:
    device 'cuda' runs minigrad's GPU path on this CPU. Returns the emulated _C_cuda."""
    module = request.getfixturevalue("emulated_cuda")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setitem(sys.modules, "cupy", host_cupy.module())
    monkeypatch.setitem(sys.modules, "cupyx", host_cupy.cupyx_module())
    monkeypatch.setattr(backend, "_cupy", None)  # imported on first need, as CuPy is (it finds host_cupy)
    monkeypatch.setattr(dispatch, "_C_CUDA", module)
    monkeypatch.setattr(dispatch, "_C_CUDA_REASON", "minigrad._C_cuda is emulated on the CPU (tests/cuda_emulator)")
    return module


def _on_device(request, name):
    if name == "emulated":
        return OnDevice(emulate_the_gpu(request), host_cupy.asarray)
    if GPU_SKIP is not None:
        pytest.skip(GPU_SKIP)
    kernels = ref if name == "cupy reference" else cuda_module_or_skip()
    import cupy

    return OnDevice(kernels, cupy.asarray)


PLACES = {"ext": pytest.param("_C_cuda", marks=needs_gpu, id="ext"),
          "cupy_ref": pytest.param("cupy reference", marks=needs_gpu, id="cupy_ref"),
          "emulated": pytest.param("emulated", marks=pytest.mark.cuda_emulator, id="emulated")}


@pytest.fixture(params=PLACES.values())
def on(request):
    """Where the kernels run: _C_cuda on the GPU, the reference run by CuPy (the fallback when _C_cuda is
    not built), or _C_cuda's own code on the CPU emulator (every machine with a C++ compiler)."""
    return _on_device(request, request.param)


@pytest.fixture(params=[PLACES["ext"], PLACES["emulated"]])
def cuda_on(request):
    """As `on`, for the CUDA kernels only (not the reference)."""
    return _on_device(request, request.param)


@pytest.fixture(params=[PLACES["ext"], PLACES["cupy_ref"]])
def gpu_on(request):
    """As `on`, on a real GPU only."""
    return _on_device(request, request.param)


DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 1e-5}  # as rtol and atol: |ours - ref| <= tol (1 + |ref|)


def close(ours, reference, dtype):
    """Each output, a device array, against the NumPy reference's: same shape and dtype, within tolerance."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    reference = reference if isinstance(reference, tuple) else (reference,)
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference)):
        assert isinstance(a, sys.modules["cupy"].ndarray), f"output {i} is a {type(a).__name__}, not on the device"
        a, b = a.get(), np.asarray(b)
        assert a.shape == b.shape, f"output {i}: shape {a.shape} vs {b.shape}"
        assert a.dtype == dtype, f"output {i}: dtype {a.dtype}, expected {np.dtype(dtype)}"
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"output {i}")


def randn(rng, shape, dtype, scale=1.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)


# --- every kernel against the NumPy reference, on the GPU and the emulator ---------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (3, 5), (2, 3, 7), (17,), (64, 129, 64), (8, 384)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm(on, shape, dtype, with_bias):
    rng = np.random.default_rng(0)
    C = shape[-1]
    x = randn(rng, shape, dtype, scale=3.0) + dtype(2.0)  # a mean far from 0: the variance must not cancel
    weight, dout = randn(rng, C, dtype), randn(rng, shape, dtype)
    bias = randn(rng, C, dtype) if with_bias else None
    out, mean, rstd = on.kernels.layernorm_forward(*on.arrays(x, weight, bias), 1e-5)
    close((out, mean, rstd), ref.layernorm_forward(x, weight, bias, 1e-5), dtype)
    dx, dweight, dbias = on.kernels.layernorm_backward(*on.arrays(dout, x, weight), mean, rstd)
    close(dx, ref.layernorm_backward(dout, x, weight, mean.get(), rstd.get())[0], dtype)
    # NOTE: dweight and dbias sum over every row; the float32 reference errs by ~1e-4 at 8256 rows, so
    # they are held to the reference run in float64 on the same inputs.
    as64 = (a.astype(np.float64) for a in (dout, x, weight, mean.get(), rstd.get()))
    close((dweight, dbias), tuple(g.astype(dtype) for g in ref.layernorm_backward(*as64)[1:]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7, 13), (3, 1000), (64, 128, 256)])
def test_gelu(on, shape, dtype):
    rng = np.random.default_rng(1)
    x, dout = randn(rng, shape, dtype, scale=4.0), randn(rng, shape, dtype)
    close(on.kernels.gelu_forward(*on.arrays(x)), ref.gelu_forward(x), dtype)
    close(on.kernels.gelu_backward(*on.arrays(dout, x)), ref.gelu_backward(dout, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 128, 256), (5, 0)])
def test_gelu_with_bias(on, shape, dtype):
    rng = np.random.default_rng(2)
    x, dout, bias = randn(rng, shape, dtype, scale=4.0), randn(rng, shape, dtype), randn(rng, shape[-1:], dtype)
    close(on.kernels.gelu_forward(*on.arrays(x, bias)), ref.gelu_forward(x, bias), dtype)
    close(on.kernels.gelu_backward(*on.arrays(dout, x, bias)), ref.gelu_backward(dout, x, bias), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_far_from_zero(on, dtype):
    x = np.array([-1e4, -40.0, -10.0, -3.0, -1e-8, -0.0, 0.0, 1e-8, 3.0, 10.0, 40.0, 1e4], dtype=dtype)
    dout = np.linspace(-1, 1, x.size).astype(dtype)
    with np.errstate(over="ignore"):  # the reference's x^3 overflows in float32 at 1e4: its answer stays right
        close(on.kernels.gelu_forward(*on.arrays(x)), ref.gelu_forward(x), dtype)
        close(on.kernels.gelu_backward(*on.arrays(dout, x)), ref.gelu_backward(dout, x), dtype)


# (B, NH, T, hs): T = 1, one head, odd sizes, a 3-D (B, T, hs), the seed model's head, a T above 128 threads.
ATTN_SHAPES = [(1, 1, 1, 1), (2, 1, 1, 4), (1, 1, 5, 3), (2, 3, 17, 5), (4, 9, 8), (3, 2, 64, 16), (1, 2, 300, 64)]
# scale 30: scores in the hundreds, where softmax must subtract the max (float64 only: in float32 an ulp
# of a score of 500 is 3e-5, so the rounding of q k^T alone moves probabilities by more than 1e-5).
ATTN_DTYPE_SCALES = [(np.float64, 1.0), (np.float64, 30.0), (np.float32, 1.0)]


@pytest.mark.parametrize("dtype, scale", ATTN_DTYPE_SCALES)
@pytest.mark.parametrize("shape", ATTN_SHAPES)
@pytest.mark.parametrize("is_causal", [True, False])
def test_attention(on, shape, dtype, is_causal, scale):
    rng = np.random.default_rng(2)
    q, k, v, dout = (randn(rng, shape, dtype, s) for s in (scale, scale, 1.0, 1.0))
    out, probs = on.kernels.attention_forward(*on.arrays(q, k, v), is_causal)
    close((out, probs), ref.attention_forward(q, k, v, is_causal), dtype)
    if is_causal:  # the future is exactly zero, not merely small
        assert not np.triu(probs.get(), k=1).any()
    grads = on.kernels.attention_backward(*on.arrays(dout, q, k, v), probs)
    close(grads, ref.attention_backward(dout, q, k, v, probs.get()), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, NH, hs", [(1, 1, 1, 1), (2, 64, 4, 16), (3, 17, 3, 5), (1, 300, 2, 64)])
@pytest.mark.parametrize("is_causal", [True, False])
def test_self_attention(on, B, T, NH, hs, dtype, is_causal):
    """The heads read and written where they lie in qkv (B, T, 3C) and out (B, T, C)."""
    rng = np.random.default_rng(4)
    qkv, dout = randn(rng, (B, T, 3 * NH * hs), dtype), randn(rng, (B, T, NH * hs), dtype)
    out, probs = on.kernels.self_attention_forward(*on.arrays(qkv), NH, is_causal)
    close((out, probs), ref.self_attention_forward(qkv, NH, is_causal), dtype)
    dqkv = on.kernels.self_attention_backward(*on.arrays(dout, qkv), probs, NH, is_causal)
    close(dqkv, ref.self_attention_backward(dout, qkv, probs.get(), NH, is_causal), dtype)
    bias = randn(rng, (3 * NH * hs,), dtype)
    out, probs = on.kernels.self_attention_forward(*on.arrays(qkv), NH, is_causal, *on.arrays(bias))
    close((out, probs), ref.self_attention_forward(qkv, NH, is_causal, bias), dtype)
    dqkv = on.kernels.self_attention_backward(*on.arrays(dout, qkv), probs, NH, is_causal, *on.arrays(bias))
    close(dqkv, ref.self_attention_backward(dout, qkv, probs.get(), NH, is_causal, bias), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, V", [(1, 1), (1, 65), (37, 65), (5, 1000), (300, 65), (4096, 65)])
@pytest.mark.parametrize("scale", [1.0, 1e4])  # 1e4: logits of +-1e4, where exp overflows without the shift
def test_crossentropy(on, N, V, dtype, scale):
    rng = np.random.default_rng(3)
    logits, targets = randn(rng, (N, V), dtype, scale), rng.integers(0, V, N)
    loss, probs = on.kernels.crossentropy_forward(*on.arrays(logits, targets))
    assert loss.shape == ()
    close((loss, probs), ref.crossentropy_forward(logits, targets), dtype)
    dlogits = on.kernels.crossentropy_backward(0.37, probs, *on.arrays(targets))
    close(dlogits, ref.crossentropy_backward(0.37, probs.get(), targets), dtype)


def test_crossentropy_bad_target_gives_nan_not_a_stray_read(cuda_on):
    """_C_cuda does not check target values on the host (that needs a sync): one out of [0, V) gives NaN."""
    on = cuda_on
    logits, targets = on.arrays(np.zeros((3, 4), np.float32), np.array([0, 9, 1]))
    loss, _ = on.kernels.crossentropy_forward(logits, targets)
    assert math.isnan(float(loss))


PARAM_SHAPES = [(65, 16), (32, 16), (48, 16), (48,), (16,), (), (300_000,)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_update_and_global_norm(on, dtype):
    rng = np.random.default_rng(4)
    params = [randn(rng, s, dtype) for s in PARAM_SHAPES]
    ms = [randn(rng, s, dtype, 0.1) for s in PARAM_SHAPES]
    vs = [np.asarray(np.abs(randn(rng, s, dtype, 0.1))) for s in PARAM_SHAPES]
    ours = [on.arrays(*arrays) for arrays in (params, ms, vs)]
    for step in (1, 2, 3):
        grads = [randn(rng, s, dtype) for s in PARAM_SHAPES]
        norm = on.kernels.global_norm(on.arrays(*grads))
        assert isinstance(norm, float)
        np.testing.assert_allclose(norm, ref.global_norm(grads), rtol=TOL[dtype])
        hyper = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, step=step)
        assert on.kernels.adamw_update(ours[0], on.arrays(*grads), ours[1], ours[2], **hyper) is None  # in place
        ref.adamw_update(params, grads, ms, vs, **hyper)
    for got, reference in zip(ours, (params, ms, vs)):
        close(tuple(got), tuple(reference), dtype)


def _every_kernel_once(on, dtype):
    """Each kernel's outputs, as NumPy arrays, on fixed inputs sized so that threads own several items."""
    rng = np.random.default_rng(5)
    k, outputs = on.kernels, {}
    x, w, b, dout = randn(rng, (40, 384), dtype), randn(rng, 384, dtype), randn(rng, 384, dtype), randn(rng, (40, 384), dtype)
    outputs["layernorm_forward"] = out, mean, rstd = k.layernorm_forward(*on.arrays(x, w, b), 1e-5)
    outputs["layernorm_backward"] = k.layernorm_backward(*on.arrays(dout, x, w), mean, rstd)
    outputs["gelu_forward"] = k.gelu_forward(*on.arrays(x, b))
    outputs["gelu_backward"] = k.gelu_backward(*on.arrays(dout, x, b))
    qkv, dout, bias = randn(rng, (2, 130, 48), dtype), randn(rng, (2, 130, 16), dtype), randn(rng, 48, dtype)
    for causal in (True, False):
        outputs[f"self_attention_forward {causal}"] = out, probs = k.self_attention_forward(
            *on.arrays(qkv), 2, causal, *on.arrays(bias))
        outputs[f"self_attention_backward {causal}"] = k.self_attention_backward(
            *on.arrays(dout, qkv), probs, 2, causal, *on.arrays(bias))
    logits, targets = randn(rng, (50, 1000), dtype, 3.0), rng.integers(0, 1000, 50)
    outputs["crossentropy_forward"] = loss, probs = k.crossentropy_forward(*on.arrays(logits, targets))
    outputs["crossentropy_backward"] = k.crossentropy_backward(0.5, probs, *on.arrays(targets))
    params, grads = on.arrays(*(randn(rng, s, dtype) for s in PARAM_SHAPES)), on.arrays(*(randn(rng, s, dtype) for s in PARAM_SHAPES))
    ms, vs = on.arrays(*(np.zeros(s, dtype) for s in PARAM_SHAPES)), on.arrays(*(np.zeros(s, dtype) for s in PARAM_SHAPES))
    outputs["global_norm"] = (np.array(k.global_norm(grads)),)
    k.adamw_update(params, grads, ms, vs, 3e-3, 0.9, 0.95, 1e-8, 0.1, 1)
    outputs["adamw_update"] = (*params, *ms, *vs)
    return {name: [a if isinstance(a, np.ndarray) else a.get() for a in arrays] for name, arrays in outputs.items()}


@pytest.mark.cuda_emulator
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_kernels_give_the_same_bits_whatever_order_threads_run_in(request, monkeypatch, dtype):
    """Every kernel with each block's threads run lowest index first, then highest first: a kernel that reads
    what another thread writes without a barrier between reads it too early in one of the two orders."""
    on = _on_device(request, "emulated")
    monkeypatch.setenv("MINIGRAD_CUDA_EMULATOR_ORDER", "forward")
    forward = _every_kernel_once(on, dtype)
    monkeypatch.setenv("MINIGRAD_CUDA_EMULATOR_ORDER", "reverse")
    reverse = _every_kernel_once(on, dtype)
    assert forward.keys() == reverse.keys()
    for name, arrays in forward.items():
        for i, (a, b) in enumerate(zip(arrays, reverse[name])):
            assert not np.isnan(a).any(), f"{name} output {i} was not written everywhere"
            np.testing.assert_array_equal(b, a, err_msg=f"{name} output {i}")


def test_kernels_run_on_cupys_current_stream(gpu_on):
    """Work queued on a non-blocking stream, then a kernel, then only that stream is awaited: a kernel
    launched on another stream could read x before it is written."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        x = cupy.zeros(1 << 22, dtype=cupy.float32)
        for _ in range(20):  # keep the stream busy
            x = cupy.sin(x) + 1.0
        out = gpu_on.kernels.gelu_forward(x)
        x_host = x.get(stream=stream)
        stream.synchronize()
        np.testing.assert_allclose(out.get(stream=stream), ref.gelu_forward(x_host), rtol=1e-5, atol=1e-5)


def test_kernels_for_picks_cuda_for_cupy_arrays(cuda_kind):
    import cupy

    x = cupy.ones(3)
    C_CUDA = dispatch._C_CUDA  # on the emulated GPU, the emulated build
    usable = C_CUDA is not None and C_CUDA.device_count() > 0
    before = mg.backend_info()["requested_backend"]
    try:
        mg.set_backend("auto")
        assert dispatch.kernels_for(x) is (C_CUDA if usable else ref)
        mg.set_backend("numpy")  # the reference on every device
        assert dispatch.kernels_for(x) is ref
    finally:
        mg.set_backend(before)


def test_bad_arguments_on_the_device(cuda_on):
    module, x = cuda_on.kernels, cuda_on.array(np.zeros((4, 8)))
    cases = [
        (lambda: module.gelu_forward(x.T), ValueError, "x must be C-contiguous"),
        (lambda: module.gelu_forward(x[:, ::2]), ValueError, "x must be C-contiguous"),
        (lambda: module.gelu_forward(x.astype(np.int32)), TypeError, "x must be float32 or float64, got int32"),
        (lambda: module.gelu_backward(x.astype(np.float32), x), TypeError, "dout has dtype float32 but x has float64"),
        (lambda: module.gelu_forward(np.zeros(3)), TypeError, "x must be a CuPy array"),
        (lambda: module.layernorm_forward(x, cuda_on.array(np.zeros(7)), None, 1e-5), ValueError,
         "weight has shape (7,), expected (8,)"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as info:
            call()
        assert message in str(info.value), str(info.value)


# --- through the engine, on cpu and cuda --------------------------------------------------------


def _tensor(rng, shape, device, scale=1.0):
    return mg.Tensor(scale * rng.standard_normal(shape), requires_grad=True).to(device)


def test_gradcheck_layer_norm(device):
    rng = np.random.default_rng(7)
    x, w, b = _tensor(rng, (2, 3, 5), device, 2.0), _tensor(rng, 5, device), _tensor(rng, 5, device)
    assert x.device == device and x.dtype == np.float64
    assert mg.gradcheck(lambda x, w, b: F.layer_norm(x, w, b), [x, w, b])


def test_gradcheck_gelu(device):
    rng = np.random.default_rng(8)
    assert mg.gradcheck(F.gelu, [_tensor(rng, (3, 7), device, 3.0)])
    assert mg.gradcheck(lambda x, b: F.gelu(x, bias=b), [_tensor(rng, (2, 3, 7), device, 3.0), _tensor(rng, 7, device)])


@pytest.mark.parametrize("is_causal", [True, False])
def test_gradcheck_attention(device, is_causal):
    rng = np.random.default_rng(9)
    q, k, v = (_tensor(rng, (2, 2, 5, 3), device) for _ in range(3))
    assert mg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal), [q, k, v])


@pytest.mark.parametrize("is_causal", [True, False])
def test_gradcheck_self_attention(device, is_causal):
    rng = np.random.default_rng(10)
    assert mg.gradcheck(lambda qkv: F.self_attention(qkv, 2, is_causal), [_tensor(rng, (2, 5, 12), device)])
    assert mg.gradcheck(lambda qkv, b: F.self_attention(qkv, 2, is_causal, bias=b),
                        [_tensor(rng, (2, 5, 12), device), _tensor(rng, 12, device)])


def test_gradcheck_cross_entropy(device):
    rng = np.random.default_rng(10)
    logits = _tensor(rng, (2, 3, 7), device, 2.0)
    targets = mg.Tensor(rng.integers(0, 7, (2, 3))).to(device)
    assert mg.gradcheck(lambda z: F.cross_entropy(z, targets), [logits])


def test_every_gradcheck_case_of_an_op_on_the_device(device):
    """minigrad/opcheck.py's cases of every op and functional (not the layers: those are above), their
    tensors moved to the device; on cpu, tests/test_gradcheck.py runs them."""
    if device == "cpu":
        pytest.skip("tests/test_gradcheck.py runs them on the CPU")
    from minigrad import opcheck

    checked = 0
    for name, label, fn, make_inputs in opcheck.all_cases():
        if name in opcheck.LAYERS:
            continue
        inputs = []
        for x in make_inputs(np.random.default_rng(0)):
            if isinstance(x, mg.Tensor):
                x, on_cpu = x.to(device), x
                x.requires_grad = on_cpu.requires_grad  # the moved copy is a new leaf
                assert x.device == device, f"{name} [{label}]"
            inputs.append(x)
        assert mg.gradcheck(fn, inputs), f"{name} [{label}]"
        checked += 1
    assert checked >= 70


def test_gradcheck_tiny_gpt(device):
    """Every parameter of a one-layer GPT in float64 (a sample of elements of each), on the device."""
    config = mg.GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8)
    model = mg.GPT(config, seed=3).to(device, dtype=np.float64)
    rng = np.random.default_rng(11)
    idx, targets = rng.integers(0, 7, (2, 6)), rng.integers(0, 7, (2, 6))
    params = model.parameters()

    def loss_of(*ps):
        return model(idx, targets)[1]

    assert all(p.device == device for p in params)
    assert mg.gradcheck(loss_of, params, max_elements=6)


def test_mixing_devices_is_a_clear_error(cuda_kind):
    a, b = mg.Tensor(np.ones(3)).to("cuda"), mg.Tensor(np.ones(3))
    with pytest.raises(RuntimeError, match="different devices"):
        a + b
    assert a.to("cpu").device == "cpu" and np.array_equal(a.numpy(), b.numpy())


def _train(device, dtype, steps=6):
    """Losses of `steps` AdamW steps with clipping of a tiny GPT, from seed 0, on the same batches."""
    config = mg.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = mg.GPT(config, seed=0).to(device, dtype=dtype)
    params = model.parameters()
    opt = model.configure_optimizer(lr=3e-3, weight_decay=0.1)
    rng = np.random.default_rng(12)
    losses, norms = [], []
    for _ in range(steps):
        idx = rng.integers(0, 11, (4, 8))
        targets = (idx + 1) % 11  # a pattern the model can learn
        _, loss = model(mg.Tensor(idx).to(device), mg.Tensor(targets).to(device))
        opt.zero_grad()
        loss.backward()
        norms.append(mg.clip_grad_norm_(params, 1.0))
        opt.step()
        losses.append(loss.item())
    return np.array(losses), np.array(norms), {name: p.numpy() for name, p in model.named_parameters()}


# The GPU adds in other orders than the CPU, so the runs differ by rounding only: 1e-4 in float32, 1e-9 in
# float64. NOTE: the parameters are compared in float64 only. The key bias of c_attn has a gradient that is
# mathematically zero (softmax ignores a shift shared by a row) and in float32 is rounding noise of ~1e-9,
# near AdamW's eps: its update m/(sqrt(v)+eps) is then O(1) with either sign. The loss cannot see that bias.
TRAIN_TOL = {np.float32: 1e-4, np.float64: 1e-9}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_on_cpu_and_cuda_agree(cuda_kind, dtype):
    cpu_losses, cpu_norms, cpu_params = _train("cpu", dtype)
    gpu_losses, gpu_norms, gpu_params = _train("cuda", dtype)
    assert cpu_losses[-1] < cpu_losses[0]  # it learns
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=TRAIN_TOL[dtype])
    np.testing.assert_allclose(gpu_norms, cpu_norms, rtol=TRAIN_TOL[dtype])
    for name, p in cpu_params.items() if dtype == np.float64 else ():
        np.testing.assert_allclose(gpu_params[name], p, rtol=TRAIN_TOL[dtype], atol=TRAIN_TOL[dtype], err_msg=name)


# On a GPU: 300 iterations, down to half of ln(vocab). On the emulator, whose kernels run thousands of
# times slower, 30 iterations of a smaller batch at a higher learning rate: the loss must fall by a third.
TRAIN_CHAR_RUNS = {"gpu": (["--max-iters", "300", "--eval-interval", "100", "--batch-size", "16", "--block-size", "32",
                            "--lr-decay-iters", "300", "--warmup-iters", "20", "--eval-iters", "5"], 0.5),
                   "emulated": (["--max-iters", "30", "--eval-interval", "15", "--batch-size", "4", "--block-size", "16",
                                 "--lr-decay-iters", "30", "--warmup-iters", "3", "--eval-iters", "2",
                                 "--lr", "1e-2", "--min-lr", "1e-3"], 2 / 3)}


def test_train_char_on_cuda_learns(cuda_kind, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(ROOT)
    import train_char

    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(rng.choice(["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran\n"], 6000)))
    out_dir = tmp_path / "out"
    run, fall_to = TRAIN_CHAR_RUNS[cuda_kind]
    code = train_char.main(["--data", str(corpus), "--out-dir", str(out_dir), "--device", "cuda", "--n-layer", "2",
                            "--n-head", "2", "--n-embd", "32", "--sample-len", "40", *run])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = (out_dir / "metrics.csv").read_text().splitlines()[1:]
    vals = [float(r.split(",")[2]) for r in rows]
    vocab = len(set(corpus.read_text()))
    assert (out_dir / "ckpt.npz").exists()
    assert abs(vals[0] - math.log(vocab)) < 0.1 and vals[-1] < fall_to * math.log(vocab), vals


# --- what is checked on every machine -----------------------------------------------------------


def test_train_char_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    if mg.backend_info()["cuda_available"]:
        pytest.skip("this machine has a usable GPU")
    monkeypatch.syspath_prepend(ROOT)
    import train_char

    code = train_char.main(["--device", "cuda", "--out-dir", str(tmp_path), "--max-iters", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda needs CuPy and an NVIDIA GPU" in err, err


def test_backend_info_reports_the_gpu_path():
    info = mg.backend_info()
    for key in ("cuda_built", "cuda_available"):
        assert isinstance(info[key], bool), key
    for key in ("cuda_built_reason", "cuda_reason", "cuda_kernels"):
        assert isinstance(info[key], str) and info[key], key
    assert info["cuda_built"] == (C_CUDA is not None)
    assert info["cuda_available"] == (GPU_SKIP is None)
    if importlib.util.find_spec("cupy") is None:
        assert "CuPy is not installed" in info["cuda_reason"]


requires_module = pytest.mark.skipif(C_CUDA is None, reason=dispatch._C_CUDA_REASON)


@requires_module
def test_cuda_module_has_every_kernel_with_the_reference_signature():
    import minigrad._C_cuda as module

    assert module is C_CUDA
    for name in KERNEL_NAMES:
        first_line = getattr(C_CUDA, name).__doc__.splitlines()[0]  # "name(x: object, ...) -> ..."
        names = [a.split(":")[0].strip() for a in first_line[len(name) + 1 : first_line.index(")")].split(",")]
        assert names == list(inspect.signature(getattr(ref, name)).parameters), name
    assert C_CUDA.runtime_version() >= 12000
    assert "80" in C_CUDA.architectures and "90" in C_CUDA.architectures and "native" not in C_CUDA.architectures


class FakeDeviceArray:
    """Only a __cuda_array_interface__ (version 3), pointing at address 0: for the checks that come
    before any device work. Never handed to a kernel on a machine with a GPU."""

    def __init__(self, shape, typestr="<f8", strides=None, readonly=False):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (0, readonly),
                                         "strides": strides, "version": 3}


def _bad_calls():
    A = FakeDeviceArray
    x, w, rows = A((4, 8)), A((8,)), A((4,))
    q, probs = A((2, 2, 5, 3)), A((2, 2, 5, 5))
    logits, t = A((4, 6)), A((4,), "<i8")
    return [
        (lambda: C_CUDA.layernorm_forward(np.zeros((4, 8)), w, None, 1e-5), TypeError, "x must be a CuPy array (an object with __cuda_array_interface__), got ndarray"),
        (lambda: C_CUDA.layernorm_forward(A((4, 8), "<i8"), w, None, 1e-5), TypeError, "x must be float32 or float64, got int64"),
        (lambda: C_CUDA.layernorm_forward(x, A((8,), "<f4"), None, 1e-5), TypeError, "weight has dtype float32 but x has float64"),
        (lambda: C_CUDA.layernorm_forward(x, A((7,)), None, 1e-5), ValueError, "weight has shape (7,), expected (8,)"),
        (lambda: C_CUDA.layernorm_forward(x, w, A((9,)), 1e-5), ValueError, "bias has shape (9,), expected (8,)"),
        (lambda: C_CUDA.layernorm_forward(A((8, 4), strides=(8, 32)), A((4,)), None, 1e-5), ValueError, "x must be C-contiguous"),
        (lambda: C_CUDA.layernorm_forward(A(()), w, None, 1e-5), ValueError, "x must be (..., C)"),
        (lambda: C_CUDA.layernorm_forward(A((3, 0)), A((0,)), None, 1e-5), ValueError, "empty last axis"),
        (lambda: C_CUDA.layernorm_backward(x, x, w, A((5,)), rows), ValueError, "mean has shape (5,), expected (4,)"),
        (lambda: C_CUDA.layernorm_backward(x, x, w, rows, A((4,), "<f4")), TypeError, "rstd has dtype float32"),
        (lambda: C_CUDA.gelu_forward(A((3,), "<f2")), TypeError, "x must be float32 or float64, got float16"),
        (lambda: C_CUDA.gelu_forward(A((4, 2), strides=(32, 16))), ValueError, "x must be C-contiguous"),
        (lambda: C_CUDA.gelu_backward(A((3,)), A((4,))), ValueError, "dout has shape (3,), expected (4,)"),
        (lambda: C_CUDA.gelu_forward(A((4, 3)), A((4,))), ValueError, "bias has shape (4,), expected (3,)"),
        (lambda: C_CUDA.gelu_forward(A(()), A((1,))), ValueError, "x must be (..., C) with a bias, got shape ()"),
        (lambda: C_CUDA.gelu_backward(A((4, 3)), A((4, 3)), A((3,), "<f4")), TypeError, "bias has dtype float32"),
        (lambda: C_CUDA.attention_forward(q, q, A((2, 2, 5, 4)), True), ValueError, "v has shape (2, 2, 5, 4), expected (2, 2, 5, 3)"),
        (lambda: C_CUDA.attention_forward(q, A((2, 2, 5, 3), "<f4"), q, True), TypeError, "k has dtype float32 but q has float64"),
        (lambda: C_CUDA.attention_forward(A((5,)), A((5,)), A((5,)), True), ValueError, "q must be (B, NH, T, hs)"),
        (lambda: C_CUDA.attention_forward(A((2, 5, 0)), A((2, 5, 0)), A((2, 5, 0)), True), ValueError, "head size 0"),
        (lambda: C_CUDA.attention_backward(q, q, q, q, A((2, 2, 5, 4))), ValueError, "probs has shape (2, 2, 5, 4), expected (2, 2, 5, 5)"),
        (lambda: C_CUDA.self_attention_forward(A((2, 5, 8)), 2, True), ValueError, "qkv must be (B, T, 3C)"),
        (lambda: C_CUDA.self_attention_forward(A((2, 5, 12)), 2, True, A((4,))), ValueError, "bias has shape (4,), expected (12,)"),
        (lambda: C_CUDA.self_attention_forward(A((2, 5, 12)), 3, True), ValueError, "n_head must be >= 1 and divide C = 4, got 3"),
        (lambda: C_CUDA.self_attention_backward(A((2, 5, 4)), A((2, 5, 12)), A((2, 2, 5, 4)), 2, True), ValueError, "probs has shape (2, 2, 5, 4), expected (2, 2, 5, 5)"),
        (lambda: C_CUDA.crossentropy_forward(logits, A((4,), "<i4")), TypeError, "targets must be int64, got int32"),
        (lambda: C_CUDA.crossentropy_forward(logits, A((3,), "<i8")), ValueError, "targets has shape (3,), expected (4,)"),
        (lambda: C_CUDA.crossentropy_forward(A((2, 3, 4)), t), ValueError, "logits must be a non-empty (N, V) array"),
        (lambda: C_CUDA.crossentropy_backward(1.0, A((0, 4)), A((0,), "<i8")), ValueError, "probs must be a non-empty (N, V) array"),
        (lambda: C_CUDA.adamw_update([x], [x], [x], [], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), ValueError, "must have one length, got 1, 1, 1, 0"),
        (lambda: C_CUDA.adamw_update([x], [A((8, 4))], [x], [x], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), ValueError, "grads[0] has shape (8, 4), expected (4, 8)"),
        (lambda: C_CUDA.adamw_update([x], [x], [x], [x], 1e-3, 0.9, 0.95, 1e-8, 0.1, 0), ValueError, "step must be >= 1, got 0"),
        (lambda: C_CUDA.adamw_update([A((3,), readonly=True)], [A((3,))], [A((3,))], [A((3,))], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), ValueError, "params[0] is read-only"),
        (lambda: C_CUDA.global_norm([A((3,)), "g"]), TypeError, "grads[1] must be a CuPy array"),
    ]


@requires_module
def test_bad_arguments_raise_a_clear_error_before_any_device_work():
    for call, error, message in _bad_calls():
        with pytest.raises(error) as info:
            call()
        text = str(info.value)
        assert message in text and "\n" not in text, text


@requires_module
def test_without_a_device_every_kernel_raises_runtime_error():
    """Valid arguments on a machine whose CUDA runtime sees no device: RuntimeError, never a crash."""
    if C_CUDA.device_count() > 0:
        pytest.skip("this machine has a usable CUDA device")
    assert C_CUDA.device_reason()
    A = FakeDeviceArray
    x, w, rows, q, t = A((4, 8), "<f4"), A((8,), "<f4"), A((4,), "<f4"), A((1, 2, 5, 3), "<f4"), A((4,), "<i8")
    calls = {
        "layernorm_forward": lambda: C_CUDA.layernorm_forward(x, w, None, 1e-5),
        "layernorm_backward": lambda: C_CUDA.layernorm_backward(x, x, w, rows, rows),
        "gelu_forward": lambda: C_CUDA.gelu_forward(x),
        "gelu_backward": lambda: C_CUDA.gelu_backward(x, x),
        "attention_forward": lambda: C_CUDA.attention_forward(q, q, q, True),
        "attention_backward": lambda: C_CUDA.attention_backward(q, q, q, q, A((1, 2, 5, 5), "<f4")),
        "self_attention_forward": lambda: C_CUDA.self_attention_forward(A((1, 5, 12), "<f4"), 2, True),
        "self_attention_backward": lambda: C_CUDA.self_attention_backward(A((1, 5, 4), "<f4"), A((1, 5, 12), "<f4"),
                                                                          A((1, 2, 5, 5), "<f4"), 2, True),
        "crossentropy_forward": lambda: C_CUDA.crossentropy_forward(x, t),
        "crossentropy_backward": lambda: C_CUDA.crossentropy_backward(1.0, x, t),
        "adamw_update": lambda: C_CUDA.adamw_update([x], [x], [x], [x], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1),
        "global_norm": lambda: C_CUDA.global_norm([x, w]),
    }
    assert sorted(calls) == sorted(KERNEL_NAMES)
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=f"^{name}: no CUDA device is usable .*use device 'cpu' instead$"):
            call()


# --- CMake's MINIGRAD_CUDA switch (configure only: a few seconds) --------------------------------


def _configure(tmp_path, *defines):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not on PATH")
    pybind11 = pytest.importorskip("pybind11")
    args = [cmake, "-S", ROOT, "-B", str(tmp_path / "build"), f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}", *defines]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_cmake_off_configures_the_cpu_module_only(tmp_path):
    result = _configure(tmp_path, "-DMINIGRAD_CUDA=OFF")
    assert result.returncode == 0, result.stderr
    assert "MINIGRAD_CUDA=OFF, building the CPU module _C only" in result.stdout
    targets = subprocess.run([shutil.which("cmake"), "--build", str(tmp_path / "build"), "--target", "help"],
                             capture_output=True, text=True).stdout
    assert "_C:" in targets or "_C\n" in targets or " _C" in targets, targets
    assert "_C_cuda" not in targets


def test_cmake_rejects_a_bad_minigrad_cuda_value(tmp_path):
    result = _configure(tmp_path, "-DMINIGRAD_CUDA=maybe")
    assert result.returncode != 0
    assert "MINIGRAD_CUDA must be AUTO, ON or OFF, got 'maybe'" in result.stderr
