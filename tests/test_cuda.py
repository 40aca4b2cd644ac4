"""The GPU path beyond the kernels (tests/test_kernels.py holds every kernel of _C_cuda, on a GPU and on
the CPU emulator, to the reference): float64 gradchecks and training on cpu and cuda, CuPy's current
stream, kernels_for on CuPy arrays; and on every machine: the CUDA module imports where it was built and
raises "no CUDA device is usable" without a GPU, backend_info() reports the GPU path, CMake's MINIGRAD_CUDA
switch. Device 'cuda' is a GPU (marker `gpu`, skipped with the reason where there is none) or the emulated
GPU of tests/cuda_emulator (marker `cuda_emulator`)."""

import importlib.util
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from conftest import cuda_module_or_skip
from kernel_cases import GPU_SKIP, KERNEL_NAMES, FakeDeviceArray, needs_gpu
from minigrad import dispatch
from minigrad import kernels as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C_CUDA = dispatch._C_CUDA


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_gpu),
                        pytest.param("cuda (emulated)", marks=pytest.mark.cuda_emulator)])
def device(request):
    """'cpu', 'cuda' on a GPU, or 'cuda' on the emulated GPU (the fixture emulated_gpu)."""
    if request.param == "cuda (emulated)":
        request.getfixturevalue("emulated_gpu")
        return "cuda"
    return request.param


@pytest.fixture(params=[pytest.param("gpu", marks=needs_gpu), pytest.param("emulated", marks=pytest.mark.cuda_emulator)])
def cuda_kind(request):
    """Device 'cuda' on a GPU, or on the emulated one: 'gpu' or 'emulated'."""
    if request.param == "emulated":
        request.getfixturevalue("emulated_gpu")
    return request.param


@pytest.fixture(params=["cuda", "cupy_reference"])
def gpu_kernels(request):
    """The kernels on a real GPU: _C_cuda, or the reference run by CuPy."""
    if GPU_SKIP is not None:
        pytest.skip(GPU_SKIP)
    return cuda_module_or_skip() if request.param == "cuda" else ref


@pytest.mark.gpu
def test_kernels_run_on_cupys_current_stream(gpu_kernels):
    """Work queued on a non-blocking stream, then a kernel, then only that stream is awaited: a kernel
    launched on another stream could read x before it is written."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        x = cupy.zeros(1 << 22, dtype=cupy.float32)
        for _ in range(20):  # keep the stream busy
            x = cupy.sin(x) + 1.0
        out = gpu_kernels.gelu_forward(x)
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


@pytest.mark.parametrize("is_causal", [True, False])
def test_gradcheck_attention(device, is_causal):
    rng = np.random.default_rng(9)
    q, k, v = (_tensor(rng, (2, 2, 5, 3), device) for _ in range(3))
    assert mg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), [q, k, v])


@pytest.mark.parametrize("is_causal", [True, False])
def test_gradcheck_self_attention(device, is_causal):
    rng = np.random.default_rng(10)
    assert mg.gradcheck(lambda qkv: F.self_attention(qkv, 2, is_causal), [_tensor(rng, (2, 5, 12), device)])


def test_gradcheck_cross_entropy(device):
    rng = np.random.default_rng(10)
    logits = _tensor(rng, (2, 3, 7), device, 2.0)
    targets = mg.Tensor(rng.integers(0, 7, (2, 3))).to(device)
    assert mg.gradcheck(lambda z: F.cross_entropy(z, targets), [logits])


def test_gradcheck_embedding(device):
    rng = np.random.default_rng(12)
    ids = mg.Tensor(np.array([[3, 0, 3], [1, 1, 4]])).to(device)
    assert mg.gradcheck(lambda w: F.embedding(ids, w), [_tensor(rng, (6, 4), device)])


def test_ids_and_targets_out_of_range_are_one_line_errors_on_the_device(device):
    """F.embedding's forward and the cross-entropy kernel's check, with the arrays on the device."""
    weight, logits = _tensor(np.random.default_rng(13), (3, 2), device), mg.Tensor(np.zeros((2, 5))).to(device)
    with pytest.raises(ValueError, match=r"^embedding: idx\[1\] = -1 is outside \[0, 3\)$"):
        F.embedding(mg.Tensor(np.array([0, -1])).to(device), weight)
    with pytest.raises(ValueError, match=r"^crossentropy_forward: targets\[0\] = 7 is outside \[0, 5\)$"):
        F.cross_entropy(logits, mg.Tensor(np.array([7, 0])).to(device))


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
def test_cuda_module_imports_with_its_architectures():
    import minigrad._C_cuda as module

    assert module is C_CUDA
    assert C_CUDA.runtime_version() >= 12000
    assert "80" in C_CUDA.architectures and "90" in C_CUDA.architectures and "native" not in C_CUDA.architectures


@requires_module
def test_without_a_device_every_kernel_raises_runtime_error():
    """Valid arguments on a machine whose CUDA runtime sees no device: RuntimeError, never a crash."""
    if C_CUDA.device_count() > 0:
        pytest.skip("this machine has a usable CUDA device")
    assert C_CUDA.device_reason()
    z, f32 = np.zeros, np.float32
    x, w, rows, q, lse = (FakeDeviceArray(z(s, f32)) for s in ((4, 8), 8, 4, (1, 2, 5, 3), (1, 2, 5)))
    t = FakeDeviceArray(z(4, np.int64))
    qkv, dout = FakeDeviceArray(z((1, 5, 12), f32)), FakeDeviceArray(z((1, 5, 4), f32))
    p, g, m, v = (FakeDeviceArray(z(3, f32)) for _ in range(4))
    calls = {
        "layernorm_forward": lambda: C_CUDA.layernorm_forward(x, w, None, 1e-5),
        "layernorm_backward": lambda: C_CUDA.layernorm_backward(x, x, w, rows, rows),
        "gelu_forward": lambda: C_CUDA.gelu_forward(x),
        "gelu_backward": lambda: C_CUDA.gelu_backward(x, x),
        "attention_forward": lambda: C_CUDA.attention_forward(q, q, q, True),
        "attention_backward": lambda: C_CUDA.attention_backward(q, q, q, q, lse, True),
        "self_attention_forward": lambda: C_CUDA.self_attention_forward(qkv, 2, True),
        "self_attention_backward": lambda: C_CUDA.self_attention_backward(dout, qkv, FakeDeviceArray(z((1, 2, 5), f32)),
                                                                          2, True),
        "crossentropy_forward": lambda: C_CUDA.crossentropy_forward(x, t),
        "crossentropy_backward": lambda: C_CUDA.crossentropy_backward(1.0, x, t),
        "embedding_backward": lambda: C_CUDA.embedding_backward(x, t, 10),
        "adamw_update": lambda: C_CUDA.adamw_update([p], [g], [m], [v], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1),
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
