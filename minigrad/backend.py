"""The one module that knows NumPy from CuPy: which array module owns an array, and moving arrays.

- ``get_array_module(x)``: ``numpy`` or ``cupy``, whichever owns the array ``x``;
- ``device_of(x)``, ``to_device(x, device)``: 'cpu' (NumPy) or 'cuda' (CuPy);
- ``add_at(target, index, values)``: ``target[index] += values`` with repeated indices adding up.

Which compiled kernels run on those arrays is ``minigrad.dispatch``'s business.
"""

import importlib
import importlib.util

import numpy as np

_cupy = None  # imported on first need: importing CuPy is slow and needs no GPU until first use


def get_cupy():
    """The cupy module, imported on first call; RuntimeError with the fix when it is not installed."""
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
    cupy = get_cupy()  # imported here when the first CuPy array arrives from outside minigrad
    return cupy if isinstance(x, cupy.ndarray) else np


def device_of(x):
    """'cpu' or 'cuda' for a raw array."""
    return "cpu" if get_array_module(x) is np else "cuda"


def to_device(x, device):
    """Copy a raw array to 'cpu' (NumPy) or 'cuda' (CuPy); returns x itself when it is already there."""
    if device == "cpu":
        return np.asarray(x) if get_array_module(x) is np else x.get()
    if device == "cuda":
        return get_cupy().asarray(x)
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")


def add_at(target, index, values):
    """target[index] += values in place, adding up repeated indices (NumPy's ufunc.at, CuPy's scatter_add)."""
    if get_array_module(target) is np:
        np.add.at(target, index, values)
    else:
        importlib.import_module("cupyx").scatter_add(target, index, values)
