"""What the kernel tests share: the implementations of the fused kernels and where each one's arrays
live, one set of tolerances, and the helpers (tests/conftest.py makes fixtures of them).

The implementations, all with the functions of minigrad.kernels (KERNEL_NAMES) and their signatures:
- "reference": minigrad.kernels on NumPy arrays, the definition the others are held to;
- "cpp": minigrad._C on NumPy arrays;
- "cuda": minigrad._C_cuda on CuPy arrays, on a GPU (marker `gpu`; skipped, with the reason, without one);
- "cuda_emulated": minigrad._C_cuda's own code built against the CPU emulator in tests/cuda_emulator, on
  host_cupy's arrays (marker `cuda_emulator`; every machine with a C++ compiler);
- "cupy_reference": minigrad.kernels on CuPy arrays, on a GPU (the fallback when _C_cuda is not built).
"""

import importlib.util
import sys

import numpy as np
import pytest

from minigrad import kernels as ref

KERNEL_NAMES = ["layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward", "attention_forward",
                "attention_backward", "self_attention_forward", "self_attention_backward", "crossentropy_forward",
                "crossentropy_backward", "embedding_backward", "adamw_update", "global_norm"]

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 1e-5}  # as rtol and atol: |ours - ref| <= tol (1 + |ref|)


def randn(rng, shape, dtype, scale=1.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)  # an array even when 0-d


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

IMPLEMENTATIONS = {
    "reference": pytest.param("reference", id="reference"),
    "cpp": pytest.param("cpp", id="cpp"),
    "cuda": pytest.param("cuda", marks=needs_gpu, id="cuda"),
    "cuda_emulated": pytest.param("cuda_emulated", marks=pytest.mark.cuda_emulator, id="cuda_emulated"),
    "cupy_reference": pytest.param("cupy_reference", marks=needs_gpu, id="cupy_reference"),
}


class Implementation:
    """One implementation of the fused kernels and its arrays: `impl.kernels.f(*impl.arrays(x, y))`."""

    def __init__(self, name, kernels, on_device):
        self.name, self.kernels, self.on_device = name, kernels, on_device
        self.compiled = kernels is not ref

    def array(self, a):
        """The NumPy array a as this implementation's array (a copy on the device)."""
        return sys.modules["cupy"].asarray(a) if self.on_device else a

    def arrays(self, *arrays):
        return [None if a is None else self.array(a) for a in arrays]

    def host(self, a):
        """An output as a NumPy array; it must be this implementation's kind of array."""
        kind = sys.modules["cupy"].ndarray if self.on_device else np.ndarray
        assert isinstance(a, kind), f"a {type(a).__name__}, not a {kind.__module__}.{kind.__name__}"
        return a.get() if self.on_device else a

    def close(self, ours, reference, dtype):
        """Each output against the reference's (NumPy arrays): same shape and dtype, within TOL[dtype]."""
        ours = ours if isinstance(ours, (tuple, list)) else (ours,)
        reference = reference if isinstance(reference, (tuple, list)) else (reference,)
        assert len(ours) == len(reference)
        for i, (a, b) in enumerate(zip(ours, reference)):
            a, b = self.host(a), np.asarray(b)
            assert a.shape == b.shape, f"output {i}: shape {a.shape} vs {b.shape}"
            assert a.dtype == dtype, f"output {i}: dtype {a.dtype}, expected {np.dtype(dtype)}"
            np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"output {i}")

    def byte_range(self, a):
        """[first, last) address of a's memory."""
        if self.on_device:
            start = a.__cuda_array_interface__["data"][0]
            return start, start + a.nbytes
        return np.lib.array_utils.byte_bounds(a)


class FakeDeviceArray:
    """Only a __cuda_array_interface__ (version 3) describing a NumPy array: its shape, dtype, strides,
    writeability and (host) address. For the checks _C_cuda makes before any device work, on any machine
    where it is built: every call that passes one must raise before a kernel could read it."""

    def __init__(self, a):
        self.host = a  # keeps the address valid and distinct from the others'
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, not a.flags.writeable),
            "strides": None if a.flags.c_contiguous else a.strides, "version": 3}
