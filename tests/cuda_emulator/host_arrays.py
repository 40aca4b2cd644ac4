"""Host memory posing as device memory, for the emulated _C_cuda (see build.py).

HostArray wraps a NumPy array and publishes its pointer, shape and strides as __cuda_array_interface__,
the way a CuPy array does. host_cupy() is the part of CuPy's API that csrc/bindings_cuda.cpp calls
(cupy.empty and cupy.cuda.get_current_stream), to be put in sys.modules["cupy"] while the emulated
module runs; cupy.empty fills float arrays with NaN, so an output a kernel fails to write shows.
"""

import types

import numpy as np


class HostArray:
    """A NumPy array (a view of it, strides and all) seen through __cuda_array_interface__ version 3."""

    def __init__(self, array):
        self.array = array

    @property
    def __cuda_array_interface__(self):
        a = self.array
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, not a.flags.writeable),
                "strides": None if a.flags.c_contiguous else a.strides, "version": 3}

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    T = property(lambda self: HostArray(self.array.T))

    def __getitem__(self, index):
        return HostArray(self.array[index])

    def astype(self, dtype):
        return HostArray(self.array.astype(dtype))

    def get(self):
        """A NumPy copy, as cupy.ndarray.get() gives."""
        return self.array.copy()

    def __float__(self):
        return float(self.array)


def asarray(a):
    """A HostArray holding a C-contiguous copy of a (None stays None)."""
    return None if a is None else HostArray(np.array(a, order="C"))


def _empty(shape, dtype):
    dtype = np.dtype(dtype)
    return HostArray(np.full(shape, np.nan, dtype) if dtype.kind == "f" else np.empty(shape, dtype))


def host_cupy():
    """A stand-in module named cupy with empty() and cuda.get_current_stream().ptr (stream 0)."""
    module = types.ModuleType("cupy")
    module.empty = _empty
    stream = types.SimpleNamespace(ptr=0)
    module.cuda = types.SimpleNamespace(get_current_stream=lambda: stream)
    return module
