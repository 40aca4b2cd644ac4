"""CuPy's array API on host memory, so that minigrad's GPU path runs on the CPU emulator (build.py).

`ndarray` wraps a NumPy array and behaves as a CuPy array does wherever minigrad could tell the two
apart: it publishes __cuda_array_interface__ (a host pointer, which the emulated _C_cuda reads), it
refuses implicit conversion to NumPy (np.asarray(x) raises TypeError, as in CuPy: call .get()), a
ufunc refuses a NumPy array among its operands, reductions return 0-d arrays, and cupy.asarray of
host data copies it. Its methods and the module's functions are NumPy's, restricted to names CuPy has
too (METHODS, FUNCTIONS; tests/test_cuda_emulator.py checks them against CuPy where it is installed).
What it cannot show: where a CuPy function accepts or returns something other than NumPy's.

module() is the stand-in for `import cupy`, cupyx_module() for `import cupyx`; test_cuda.py puts them
in sys.modules (and in minigrad.backend) while a test runs on the emulated device.
"""

import importlib.machinery
import types

import numpy as np

# The ndarray methods and module functions minigrad and its tests call (all exist in CuPy 14).
METHODS = {"all", "any", "argmax", "astype", "copy", "cumsum", "dot", "fill", "item", "max", "mean", "min",
           "ravel", "reshape", "squeeze", "std", "sum", "swapaxes", "tolist", "transpose", "var", "view"}
# minigrad's own calls of xp.<name> are checked against this list by tests/test_cuda_emulator.py.
FUNCTIONS = {"abs", "all", "allclose", "any", "arange", "argmax", "argmin", "array_equal", "ascontiguousarray",
             "broadcast_to", "concatenate", "cumsum", "exp", "expand_dims", "full", "full_like",
             "isfinite", "isnan", "log", "logaddexp", "matmul", "max", "maximum", "mean", "ones", "ones_like",
             "sign", "split", "sqrt", "stack", "sum", "tanh", "tri", "triu", "where", "zeros", "zeros_like"}
CONSTANTS = {"bool_", "e", "float16", "float32", "float64", "inf", "int32", "int64", "int8", "nan", "newaxis",
             "pi", "uint8"}


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._array
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x):
    if isinstance(x, (np.ndarray, np.generic)):  # a reduction gives a 0-d array, as in CuPy
        return ndarray(np.asarray(x))
    if isinstance(x, (list, tuple)):
        return type(x)(_wrap(v) for v in x)
    return x


def _no_host_arrays(args, what):
    """TypeError for a NumPy array among args (looking into lists, tuples and dicts), as CuPy raises."""
    for a in args.values() if isinstance(args, dict) else args:
        if isinstance(a, np.ndarray):
            raise TypeError(f"Unsupported type {type(a)} in {what}: CuPy does not mix NumPy arrays with "
                            "its own (move it with cupy.asarray)")
        if isinstance(a, (list, tuple, dict)):
            _no_host_arrays(a, what)


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    """A NumPy array posing as a CuPy array (see the module's docstring)."""

    __slots__ = ("_array",)
    __module__ = "cupy"  # where CuPy's ndarray says it is from (minigrad.backend looks)

    def __init__(self, array):
        self._array = array

    @property
    def __cuda_array_interface__(self):
        a = self._array
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, not a.flags.writeable),
                "strides": None if a.flags.c_contiguous else a.strides, "version": 3}

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _no_host_arrays([inputs, kwargs], f"the ufunc {ufunc.__name__}")
        outs = kwargs.get("out")
        if outs is not None:  # x += y: the result is x itself, not a new array on x's memory
            _no_host_arrays(outs, f"the ufunc {ufunc.__name__}")
            kwargs["out"] = _unwrap(outs)
            getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
            return outs[0] if len(outs) == 1 else outs
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ not in FUNCTIONS:
            return NotImplemented  # NumPy then raises TypeError, as CuPy does for a function it lacks
        _no_host_arrays([args, kwargs], f"numpy.{func.__name__}")
        return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    itemsize = property(lambda self: self._array.itemsize)
    nbytes = property(lambda self: self._array.nbytes)
    strides = property(lambda self: self._array.strides)
    flags = property(lambda self: self._array.flags)
    T = property(lambda self: ndarray(self._array.T))

    def __getattr__(self, name):
        if name not in METHODS:
            raise AttributeError(f"cupy.ndarray has no attribute {name!r} in tests/cuda_emulator/host_cupy.py: "
                                 "if CuPy's ndarray has it, add it to METHODS")
        method = getattr(self._array, name)

        def call(*args, **kwargs):
            _no_host_arrays([args, kwargs], f"cupy.ndarray.{name}")
            return _wrap(method(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

        return call

    def __getitem__(self, index):
        return _wrap(self._array[_unwrap(index)])

    def __setitem__(self, index, value):
        basic = all(isinstance(i, (int, slice, type(Ellipsis), type(None)))
                    for i in (index if isinstance(index, tuple) else (index,)))
        if basic and isinstance(value, np.ndarray) and value.ndim > 0:  # CuPy fills from scalars only here
            raise ValueError("cupy.ndarray: setting a slice from a NumPy array is not supported: cupy.asarray it first")
        self._array[_unwrap(index)] = _unwrap(value)

    def __len__(self):
        return len(self._array)

    def __iter__(self):
        return (_wrap(row) for row in self._array)

    def __float__(self):
        return float(self._array)

    def __int__(self):
        return int(self._array)

    def __bool__(self):
        return bool(self._array)

    def __repr__(self):
        return repr(self._array).replace("array(", "cupy.ndarray(", 1)

    def get(self, stream=None):
        """A NumPy copy, as cupy.ndarray.get() gives."""
        return self._array.copy()


def asarray(a, dtype=None, order=None):
    """a on the device: itself when it is there already (of that dtype), else a copy."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def empty(shape, dtype=float, order="C"):
    """Memory as CuPy's pool hands it out: not zeroed (here NaN for floats, so an unwritten output shows)."""
    dtype = np.dtype(dtype)
    return ndarray(np.full(shape, np.nan, dtype, order) if dtype.kind == "f" else np.empty(shape, dtype, order))


def empty_like(a, dtype=None):
    return empty(a.shape, a.dtype if dtype is None else dtype)


def _function(name):
    numpy_function = getattr(np, name)

    def function(*args, **kwargs):
        _no_host_arrays(args, f"cupy.{name}")
        return _wrap(numpy_function(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    function.__name__ = name
    return function


_STREAM = types.SimpleNamespace(ptr=0)


_MODULES = {}


def module():
    """A module named cupy: the functions above, FUNCTIONS and CONSTANTS, and a cuda namespace with one device."""
    if "cupy" in _MODULES:
        return _MODULES["cupy"]
    cupy = _MODULES["cupy"] = types.ModuleType("cupy", "CuPy's API on host memory (tests/cuda_emulator/host_cupy.py)")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    for name in FUNCTIONS:
        setattr(cupy, name, _function(name))
    for name in CONSTANTS:
        setattr(cupy, name, getattr(np, name))
    for f in (ndarray, asarray, empty, empty_like):
        setattr(cupy, f.__name__, f)
    cupy.cuda = types.SimpleNamespace(is_available=lambda: True, get_current_stream=lambda: _STREAM,
                                      runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return cupy


def _scatter_add(a, slices, value):
    """cupyx.scatter_add: a[slices] += value, adding up repeated indices."""
    np.add.at(a._array, _unwrap(slices), _unwrap(value))


def cupyx_module():
    cupyx = types.ModuleType("cupyx", "cupyx.scatter_add on host memory (tests/cuda_emulator/host_cupy.py)")
    cupyx.__spec__ = importlib.machinery.ModuleSpec("cupyx", None)
    cupyx.scatter_add = _scatter_add
    return cupyx
