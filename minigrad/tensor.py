"""Tensor, the Function base class, and the reverse-mode engine (backward).

A Tensor wraps a raw array (NumPy, or CuPy on a GPU). Applying a Function to Tensors runs its
``forward`` on the raw arrays and, when a gradient is wanted, records the Function in the output's
``_ctx``: that record is the tape. ``Tensor.backward`` walks it in reverse topological order,
calls each Function's ``backward`` and sums each returned gradient back to its input's shape
(undoing broadcasting here, once, for every op).
"""

import inspect

import numpy as np

from minigrad.backend import device_of, get_array_module, to_device

_grad_enabled = True
_active_profiler = None  # a minigrad.profiler.profile while one is open; off, it costs one `is None` per call


class no_grad:
    """Context manager (and decorator) under which ops record no graph: ``with mg.no_grad(): ...``"""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


def is_grad_enabled():
    return _grad_enabled


def _as_array(data, dtype=None):
    """A raw array from data. Python floats become float32; float64 arrays stay float64."""
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    keep_float64 = getattr(data, "dtype", None) == np.float64
    array = xp.asarray(data)
    if array.dtype.kind == "f" and array.dtype != np.float32 and not keep_float64:
        array = array.astype(np.float32)
    return array


class Tensor:
    """An array with an optional gradient. ``grad`` has the shape of ``data`` once backward reaches it."""

    __slots__ = ("data", "grad", "requires_grad", "name", "_ctx", "_hooks", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator
    __hash__ = object.__hash__  # __eq__ compares elementwise; identity stays the hash

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.name = name
        self._ctx = None  # the Function that made this tensor, None for a leaf
        self._hooks = None
        self._retains_grad = False

    @classmethod
    def _from_op(cls, data, requires_grad):
        """The output of an op: data is already a raw array of the right dtype."""
        t = cls.__new__(cls)
        t.data, t.requires_grad, t.grad, t.name = data, requires_grad, None, None
        t._ctx, t._hooks, t._retains_grad = None, None, False
        return t

    # --- what it is ---

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def numel(self):
        """The number of elements (NumPy's .size, which minigrad keeps: PyTorch's size() is .shape here)."""
        return self.data.size

    def dim(self):
        """The number of axes (ndim)."""
        return self.data.ndim

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def item(self):
        return self.data.item()

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when it lives there)."""
        return to_device(self.data, "cpu")

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._from_op(self.data, False)

    def to(self, device):
        """This tensor on 'cpu' or 'cuda'; itself when already there, else a copy that is a new leaf."""
        if self.device == device:
            return self
        return Tensor(to_device(self.data, device), requires_grad=self.requires_grad)

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype {self.data.dtype}")
        self.requires_grad = flag
        return self

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor too after backward."""
        self._retains_grad = True

    def register_hook(self, fn):
        """fn(grad) is called when backward reaches this tensor; a non-None return replaces the gradient."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(fn)

    # --- the engine ---

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's .grad that requires grad.

        grad defaults to 1 for a one-element tensor. The graph is freed afterwards unless
        retain_graph=True.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element output, got shape {self.shape}; "
                    "pass grad= of the output's shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = to_device(_as_array(grad, self.data.dtype), self.device)  # a NumPy grad moves to the GPU
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape}, the output has {self.shape}")

        grads = {id(self): grad}  # id(tensor) -> the sum of the gradients reaching it so far
        for t in reversed(_topological_order(self)):  # each tensor after every op that used it
            g = grads.pop(id(t), None)
            if g is None:
                continue
            for hook in t._hooks or ():
                replaced = hook(g)
                if replaced is not None:
                    g = _hook_result(replaced, t)
            fn = t._ctx
            if fn is None or t._retains_grad:
                # NOTE: a copy on first store: g may be shared with another input (add returns dout twice),
                # and .grad is later changed in place (clipping, zeroing)
                t.grad = _as_grad(g.copy() if t.grad is None else t.grad + g, t.data)
            if fn is None:
                continue
            if fn.inputs is None:
                raise RuntimeError(
                    "backward through a graph that was already freed; "
                    "pass retain_graph=True to the first backward() to walk it twice"
                )
            if _active_profiler is None:
                input_grads = fn.backward(g)
            else:
                input_grads = _active_profiler.record(type(fn), "backward", fn.backward, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for inp, ig in zip(fn.inputs, input_grads):
                if ig is not None and inp is not None and inp.requires_grad:
                    ig = _unbroadcast(ig, inp.data.shape)
                    if id(inp) in grads:
                        ig = grads[id(inp)] + ig  # the chain rule: the gradients of every path add up
                    grads[id(inp)] = _as_grad(ig, inp.data)
            if not retain_graph:
                fn.free()


def _topological_order(root):
    """Tensors that require grad, each after all of its inputs (iterative DFS: no recursion limit)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        fn = t._ctx
        if fn is not None and fn.inputs is not None:
            for inp in fn.inputs:
                if inp is not None and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


def _hook_result(replaced, t):
    """What a hook returned to replace t's gradient: an array of t's shape, dtype and device, else a ValueError."""
    g = replaced.data if isinstance(replaced, Tensor) else replaced
    shape, dtype = getattr(g, "shape", None), getattr(g, "dtype", None)
    if shape != t.shape or dtype != t.dtype or device_of(g) != t.device:
        raise ValueError(f"a hook returned {type(g).__name__} of shape {shape} and dtype {dtype} as the gradient of a "
                         f"tensor of shape {t.shape} and dtype {t.dtype} on {t.device}; return an array like the "
                         "gradient it was given, or None to keep that one")
    return g


def _as_grad(grad, x):
    """grad as an array of x's dtype: a float32 input gets a float32 gradient whatever the other operand.
    NOTE: arithmetic on 0-d NumPy arrays returns NumPy scalars; this makes them 0-d arrays again."""
    return get_array_module(x).asarray(grad, dtype=x.dtype)


def _unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, so it has the given shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


# --- Function and the registry ------------------------------------------------------------------

REGISTRY = {}  # op name -> Function subclass; tests check that each one has a gradient check


def register(name, method=True):
    """Class decorator: add the op to REGISTRY and, unless method=False, as the Tensor method `name`."""

    def decorate(cls):
        cls.name = name
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # drop self
        named = sum(1 for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty)
        variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
        cls.n_inputs = None if named == 0 and variadic else named  # None: every positional is an input
        REGISTRY[name] = cls
        if method:
            setattr(Tensor, name, lambda self, *args, **kwargs: cls.apply(self, *args, **kwargs))
        return cls

    return decorate


class Function:
    """One differentiable op. Subclasses write forward and backward on raw arrays, side by side:

    - ``forward(self, x, y, ..., *params, **options)``: the positional parameters without a
      default are the inputs (Tensors, arrays or Python numbers, or None), or, when there are none,
      all of ``*xs``; the rest are plain parameters. It
      returns the output array and keeps on ``self`` what backward needs.
    - ``backward(self, dout)``: one gradient (or None) per input, each of the output's broadcast
      shape or the input's own shape: the engine sums broadcast gradients back.
    """

    name = None  # set by @register; an unregistered Function (a student's own) works as well
    inputs = None
    n_inputs = None

    @classmethod
    def apply(cls, *args, **params):
        n = len(args) if cls.n_inputs is None else cls.n_inputs
        inputs = _lift_inputs(args[:n], cls.name or cls.__name__)
        fn = cls()
        arrays = [None if t is None else t.data for t in inputs]
        if _active_profiler is None:
            out = fn.forward(*arrays, *args[n:], **params)
        else:
            out = _active_profiler.record(cls, "forward", fn.forward, *arrays, *args[n:], **params)
        if isinstance(out, np.generic):  # NumPy reductions return scalars; keep every .data an array
            out = np.asarray(out)
        # an integer or bool result (a cast, a comparison) carries no gradient
        needs_grad = _grad_enabled and out.dtype.kind == "f" and any(t is not None and t.requires_grad for t in inputs)
        result = Tensor._from_op(out, needs_grad)
        if needs_grad:
            fn.inputs = inputs
            fn.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)
            result._ctx = fn
        return result

    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def free(self):
        """Drop the inputs and every saved array, so memory returns right after backward."""
        self.__dict__.clear()


def _lift_inputs(args, op_name):
    """Inputs as Tensors: numbers and arrays take the dtype of the first floating Tensor among them."""
    like = next((a for a in args if isinstance(a, Tensor) and a.data.dtype.kind == "f"), None)
    device = next((a.device for a in args if isinstance(a, Tensor)), None)
    inputs = []
    for a in args:
        if a is None or isinstance(a, Tensor):
            if a is not None and a.device != device:
                raise RuntimeError(
                    f"{op_name}: inputs are on different devices ({device} and {a.device}); "
                    "move them with .to(device) first"
                )
            inputs.append(a)
            continue
        dtype = like.data.dtype if like is not None and _is_floating_like(a) else None
        array = _as_array(a, dtype)
        if device is not None and device_of(array) != device:
            array = to_device(array, device)
        inputs.append(Tensor._from_op(array, False))
    return tuple(inputs)


def _is_floating_like(a):
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    return kind == "f" or (kind is None and isinstance(a, (float, int)) and not isinstance(a, bool))
