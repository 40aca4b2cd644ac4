"""Which implementation of the fused kernels runs: the one module that loads the compiled modules.

- ``kernels_for(x)``: the module whose fused kernels run on the array ``x``: for a CuPy array the
  CUDA module ``_C_cuda`` when it is built and a GPU is usable, for a NumPy array the C++ module
  ``_C`` when it is built; otherwise the NumPy/CuPy reference in ``minigrad.kernels``. All three
  have the same functions with the same signatures and the same behaviour on bad input;
- ``backend_info()``: what is active and why; ``set_backend``, ``get_backend``, ``set_num_threads``.

Environment variables (read, never set):
- ``MINIGRAD_BACKEND=numpy|cpp|auto`` picks the kernels (``set_backend`` does the same at run time):
  'numpy' is the reference on either device, 'cpp' and 'auto' the compiled modules where built;
- ``MINIGRAD_NO_EXT=1`` never loads a compiled module (the pure NumPy/CuPy reference);
- ``MINIGRAD_REQUIRE_EXT=1`` makes a missing compiled module an import error, so a build that
  silently fell back to NumPy cannot pass CI.
"""

import importlib.util
import os

import numpy as np

from minigrad import kernels
from minigrad.backend import get_cupy

BACKENDS = ("auto", "numpy", "cpp")


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# The compiled modules: each may be missing (not built), and then the reference stands in.
_C = _C_CUDA = None
if _env_flag("MINIGRAD_NO_EXT"):
    _C_REASON = _C_CUDA_REASON = "MINIGRAD_NO_EXT=1 is set"
else:
    try:
        from minigrad import _C
    except ImportError as e:
        if _env_flag("MINIGRAD_REQUIRE_EXT"):
            raise ImportError(f"MINIGRAD_REQUIRE_EXT=1 but minigrad._C could not be imported ({e}); "
                              "build it with `pip install -e .` or unset MINIGRAD_REQUIRE_EXT") from e
        _C_REASON = f"minigrad._C is not built ({e}); run `pip install -e .` to build it"
    else:
        _C_REASON = "minigrad._C is built"
    try:  # importing it needs no GPU: its CUDA runtime is linked statically
        from minigrad import _C_cuda as _C_CUDA
    except ImportError as e:
        _C_CUDA_REASON = f"minigrad._C_cuda is not built ({e}); it is built when CMake finds nvcc at install time"
    else:
        _C_CUDA_REASON = (f"minigrad._C_cuda is built (CUDA runtime {_C_CUDA.runtime_version()}, "
                          f"sm {_C_CUDA.architectures})")

_backend = os.environ.get("MINIGRAD_BACKEND", "auto").strip().lower() or "auto"
if _backend not in BACKENDS:
    raise ValueError(f"MINIGRAD_BACKEND={_backend!r} is not one of {BACKENDS}")
if _backend == "cpp" and _C is None:
    raise ImportError(f"MINIGRAD_BACKEND=cpp but the C++ kernels are unavailable: {_C_REASON}")


def set_backend(name):
    """Choose the kernels: 'cpp' (minigrad._C on the CPU), 'numpy' (the reference, on CPU and GPU alike)
    or 'auto' (the compiled modules where built). On a GPU, 'cpp' and 'auto' both use _C_cuda when usable."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: use one of {BACKENDS}")
    if name == "cpp" and _C is None:
        raise RuntimeError(f"backend 'cpp' is unavailable: {_C_REASON}")
    _backend = name


def get_backend():
    """The CPU kernels in use now: 'cpp' or 'numpy'."""
    return "cpp" if _backend in ("auto", "cpp") and _C is not None else "numpy"


def _cuda_kernels_usable():
    """True when _C_cuda is built and its runtime sees a device (probed once, inside the module)."""
    return _C_CUDA is not None and _C_CUDA.device_count() > 0


def kernels_for(x):
    """The module whose fused kernels run on the array x (same function names and signatures in each)."""
    if isinstance(x, np.ndarray):
        return _C if get_backend() == "cpp" else kernels
    return _C_CUDA if _backend != "numpy" and _cuda_kernels_usable() else kernels


def _cuda_status():
    """(cuda_available, why): CuPy importable and its runtime counting at least one device."""
    if importlib.util.find_spec("cupy") is None:
        return False, "CuPy is not installed: pip install -e '.[cuda]'"
    try:
        count = get_cupy().cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy raises CUDARuntimeError without a driver, ImportError for a broken install
        return False, f"CuPy cannot reach a GPU ({type(e).__name__}: {e})"
    if count == 0:
        return False, "CuPy sees no CUDA device"
    return True, f"CuPy sees {count} CUDA device(s)"


def backend_info():
    """A dict saying which array module and which kernels are active, and why."""
    info = {
        "array_module": "numpy",
        "numpy_version": np.__version__,
        "cpu_kernels": get_backend(),
        "requested_backend": _backend,
        "extension_built": _C is not None,
        "extension_reason": _C_REASON,
        "num_threads": _C.get_num_threads() if _C is not None else 1,
        "cupy_installed": importlib.util.find_spec("cupy") is not None,
        "cuda_built": _C_CUDA is not None,
        "cuda_built_reason": _C_CUDA_REASON,
    }
    info["cuda_available"], info["cuda_reason"] = _cuda_status()
    if not info["cuda_available"]:
        info["cuda_kernels"] = "none (no usable GPU)"
    elif _backend != "numpy" and _cuda_kernels_usable():
        info["cuda_kernels"] = "cuda"
    else:
        why = "backend forced to 'numpy'" if _backend == "numpy" else (
            _C_CUDA_REASON if _C_CUDA is None else f"_C_cuda sees no device: {_C_CUDA.device_reason()}")
        info["cuda_kernels"] = f"cupy reference ({why})"
    if info["cpu_kernels"] == "numpy":
        info["why"] = (
            "backend forced to 'numpy'" if _backend == "numpy" else f"C++ kernels unavailable: {_C_REASON}"
        )
    else:
        info["why"] = "C++ kernels built and selected" if _backend == "cpp" else "C++ kernels built (auto)"
    return info


def retain_freed_memory():
    """Ask malloc to keep freed large blocks for reuse (glibc); True when it took the setting.

    Each training step frees and reallocates the same activations; by default glibc returns every
    block of 128 KiB or more to the OS and pays page faults for it again next step. A process-wide
    setting: train_char.py and the benchmarks call it; importing minigrad never does.
    """
    return bool(_C is not None and _C.retain_freed_memory())


def set_num_threads(n):
    """Threads for the C++ kernels (BLAS keeps its own setting: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS)."""
    if _C is None:
        raise RuntimeError(f"set_num_threads needs the C++ kernels: {_C_REASON}")
    _C.set_num_threads(int(n))
