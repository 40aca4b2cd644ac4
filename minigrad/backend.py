"""The one module that knows NumPy from CuPy and which compiled kernels exist.

Everything else asks this module:
- ``get_array_module(x)``: ``numpy`` or ``cupy``, whichever owns the array ``x``;
- ``kernels_for(x)``: the implementation of the fused kernels to run on ``x``: for a CuPy array
  the CUDA module ``_C_cuda`` when it is built and a GPU is usable, for a NumPy array the C++
  module ``_C`` when it is built; otherwise the NumPy/CuPy reference in ``minigrad.kernels``;
- ``backend_info()``: what is active and why.

Environment variables:
- ``MINIGRAD_BACKEND=numpy|cpp|auto`` picks the kernels (``set_backend`` does the same at run time):
  'numpy' is the reference on either device, 'cpp' and 'auto' the compiled modules where built;
- ``MINIGRAD_NO_EXT=1`` never loads a compiled module (the pure NumPy/CuPy reference);
- ``MINIGRAD_REQUIRE_EXT=1`` makes a missing compiled module an import error, so a build that
  silently fell back to NumPy cannot pass CI.
"""

import importlib
import importlib.util
import os

import numpy as np

BACKENDS = ("auto", "numpy", "cpp")


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _load_cpu_extension():
    """Returns (module or None, the reason in words)."""
    if _env_flag("MINIGRAD_NO_EXT"):
        return None, "MINIGRAD_NO_EXT=1 is set"
    try:
        from minigrad import _C
    except ImportError as e:
        if _env_flag("MINIGRAD_REQUIRE_EXT"):
            raise ImportError(
                f"MINIGRAD_REQUIRE_EXT=1 but minigrad._C could not be imported ({e}); "
                "build it with `pip install -e .` or unset MINIGRAD_REQUIRE_EXT"
            ) from e
        return None, f"minigrad._C is not built ({e}); run `pip install -e .` to build it"
    return _C, "minigrad._C is built"


_C, _C_REASON = _load_cpu_extension()


def _load_cuda_extension():
    """Returns (module or None, the reason in words). Importing it needs no GPU (its CUDA runtime is static)."""
    if _env_flag("MINIGRAD_NO_EXT"):
        return None, "MINIGRAD_NO_EXT=1 is set"
    try:
        _C_cuda = importlib.import_module("minigrad._C_cuda")
    except ImportError as e:
        return None, f"minigrad._C_cuda is not built ({e}); it is built when CMake finds nvcc at install time"
    return _C_cuda, f"minigrad._C_cuda is built (CUDA runtime {_C_cuda.runtime_version()}, sm {_C_cuda.architectures})"


_C_CUDA, _C_CUDA_REASON = _load_cuda_extension()


def _initial_backend():
    name = os.environ.get("MINIGRAD_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"MINIGRAD_BACKEND={name!r} is not one of {BACKENDS}")
    if name == "cpp" and _C is None:
        raise ImportError(f"MINIGRAD_BACKEND=cpp but the C++ kernels are unavailable: {_C_REASON}")
    return name


_backend = _initial_backend()

# --- the array module ---------------------------------------------------------------------------

_cupy = None  # imported on first need: importing CuPy is slow and needs no GPU until first use


def _get_cupy():
    global _cupy
    if _cupy is None:
        if importlib.util.find_spec("cupy") is None:
            raise RuntimeError("device 'cuda' needs CuPy: pip install -e '.[cuda]'")
        _cupy = importlib.import_module("cupy")
    return _cupy


def get_array_module(x):
    """numpy for a NumPy array (or anything not on a GPU), cupy for a CuPy array."""
    if isinstance(x, np.ndarray) or (_cupy is None and type(x).__module__.partition(".")[0] != "cupy"):
        return np
    cupy = _get_cupy()  # imported here when the first CuPy array arrives from outside minigrad
    return cupy if isinstance(x, cupy.ndarray) else np


def device_of(x):
    """'cpu' or 'cuda' for a raw array."""
    return "cpu" if get_array_module(x) is np else "cuda"


def to_device(x, device):
    """Copy a raw array to 'cpu' (NumPy) or 'cuda' (CuPy); returns x itself when it is already there."""
    if device == "cpu":
        return np.asarray(x) if get_array_module(x) is np else x.get()
    if device == "cuda":
        return _get_cupy().asarray(x)
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")


def scatter_add(target, index, values):
    """target[index] += values, adding up repeated indices (NumPy's ufunc.at or CuPy's scatter_add)."""
    xp = get_array_module(target)
    if xp is not np:
        importlib.import_module("cupyx").scatter_add(target, index, values)
    elif isinstance(index, np.ndarray) and index.dtype.kind in "iu" and index.size > 0:
        _add_rows_at(target, index, values)
    else:
        np.add.at(target, index, values)


_ONE_HOT_MAX_ROWS = 256  # measured on a (8192, 64) batch: one-hot 1.1 ms vs sort 3.1 at 65 rows, 2.9 vs 3.8 at 256
_ONE_HOT_MAX_SIZE = 1 << 22  # rows x indices: at most 16 MiB of float32 for the one-hot matrix


def _add_rows_at(target, index, values):
    """target[index] += values for an integer array picking rows of target (an embedding's backward).

    The same sum as np.add.at, much faster on a (8192, 64) batch. For a target of few rows (a
    character vocabulary) as one matrix product, target += H values with H[r, i] = 1 where index i
    picks row r (one-hot); for more rows: sort the rows by index, add each run of equal indices with
    np.add.reduceat, then add the run sums in, each row once.
    """
    n = target.shape[0]
    if index.min() < -n or index.max() >= n:
        raise IndexError(f"scatter_add: row indices must lie in [-{n}, {n}), got {index.min()}..{index.max()}")
    rows = np.where(index < 0, index + n, index).reshape(-1)  # -1 and n-1 are one row
    # NOTE: only finite values: in a product 0 * inf is NaN, and an inf would reach every row, not its own
    if n <= _ONE_HOT_MAX_ROWS and n * rows.size <= _ONE_HOT_MAX_SIZE and values.dtype.kind == "f" \
            and np.isfinite(values).all():
        one_hot = np.zeros((n, rows.size), values.dtype)
        one_hot[rows, np.arange(rows.size)] = 1
        target += (one_hot @ values.reshape(rows.size, -1)).reshape(target.shape)
        return
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    run_sums = np.add.reduceat(values.reshape(rows.size, *target.shape[1:])[order], starts, axis=0)
    target[sorted_rows[starts]] += run_sums


# --- the fused kernels --------------------------------------------------------------------------


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
        if get_backend() == "cpp":
            return _C
    elif _backend != "numpy" and _cuda_kernels_usable():
        return _C_CUDA
    from minigrad import kernels  # the reference; works on NumPy and CuPy arrays alike

    return kernels


def _cuda_status():
    """(cuda_available, why): CuPy importable and its runtime counting at least one device."""
    if importlib.util.find_spec("cupy") is None:
        return False, "CuPy is not installed: pip install -e '.[cuda]'"
    try:
        count = _get_cupy().cuda.runtime.getDeviceCount()
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
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset (OpenBLAS's own: 28)"),
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
    block of 128 KiB or more to the OS and pays page faults for it again next step. train_char.py
    calls this once at start; a library import never changes the process's allocator by itself.
    """
    return bool(_C is not None and _C.retain_freed_memory())


def set_num_threads(n):
    """Threads for the C++ kernels (BLAS keeps its own setting: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS)."""
    if _C is None:
        raise RuntimeError(f"set_num_threads needs the C++ kernels: {_C_REASON}")
    _C.set_num_threads(int(n))
