// What both binding modules, _C (NumPy arrays) and _C_cuda (CuPy arrays), check before a kernel runs,
// written once.
//
// Each array argument becomes an ArrayView: its pointer, shape and dtype, whether it is read-only, and
// the Python object it came from. Only two pieces differ between the modules, declared here and defined
// in bindings.cpp and bindings_cuda.cpp: view() (from a NumPy array, or from __cuda_array_interface__)
// and empty() (a new NumPy array, or cupy.empty). Then one function per kernel checks every argument
// and returns the views with the kernel's dimensions, so that each binding is "check, then call"; and
// def_kernels gives both modules' bindings one set of Python names, arguments and docstrings.
// A failed check is a one-line TypeError or ValueError that names the function and the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace minigrad::bindings {

namespace py = pybind11;
using Shape = std::vector<int64_t>;

// The dtypes the kernels take; any other is `other` (and named in the message that refuses it).
enum class Dtype { float32, float64, int64, other };

// NumPy's name of one of the kernels' dtypes, for allocating an output.
inline const char* numpy_name(Dtype d) {
    return d == Dtype::float32 ? "float32" : d == Dtype::float64 ? "float64" : "int64";
}

// One array argument (or an output): where its numbers are, their shape and dtype, and where it came from.
struct ArrayView {
    py::object obj = py::none();  // the array (it keeps the memory alive; an output is returned as it), or None
    void* ptr = nullptr;          // its first element: host memory for _C, device memory for _C_cuda
    Shape shape;
    Dtype dtype = Dtype::other;
    std::string dtype_name;  // as NumPy names it: "float32", "int32", ...
    int64_t itemsize = 0;
    bool readonly = false;
    const char* fn = "";  // the kernel it was passed to and the argument's name, for messages
    std::string name;

    bool is_none() const { return obj.is_none(); }
    int64_t size() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
    template <class T>
    T* data() const {
        return static_cast<T*>(ptr);
    }
};

// Calls body(float{}) or body(double{}), as the float dtype d says: a binding's body calls the kernel
// for T = the type of its argument.
template <class Body>
auto with_float_type(Dtype d, Body&& body) {
    return d == Dtype::float32 ? body(float{}) : body(double{});
}

// --- the two module-specific pieces -------------------------------------------------------------

// obj as a view, through make_view below; a TypeError when it is not an array of the module's kind.
ArrayView view(const py::handle& obj, const char* fn, const std::string& name);
// A new C-contiguous array: NumPy's, or from CuPy's memory pool.
ArrayView empty(const Shape& shape, Dtype dtype);

// --- building a view ----------------------------------------------------------------------------

// A shape as Python prints it: "(2, 3)", "(4,)", "()".
inline std::string shape_str(const Shape& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + (s.size() == 1 ? ",)" : ")");
}

inline py::type_error type_error(const ArrayView& a, const std::string& what) {
    return py::type_error(std::string(a.fn) + ": " + a.name + " " + what);
}
inline py::value_error value_error(const ArrayView& a, const std::string& what) {
    return py::value_error(std::string(a.fn) + ": " + a.name + " " + what);
}

// What a module reads off an array for make_view: strides in bytes (empty when the array says it is
// C-contiguous), and its dtype as NumPy describes one: kind ('f', 'i', 'u', 'b', ...), item size in
// bytes, byte order ('<', '>', '|' or '=').
struct ArrayFacts {
    void* ptr;
    Shape shape, strides;
    char kind;
    int64_t itemsize;
    char byteorder;
    bool readonly;
};

inline bool native_byte_order(char byteorder) {
    const uint16_t one = 1;
    char first_byte;
    std::memcpy(&first_byte, &one, 1);  // 1 on a little-endian machine
    return byteorder == '=' || byteorder == '|' || byteorder == (first_byte ? '<' : '>');
}

// NumPy's name of a dtype: "float32", "int64", "bool", ...
inline std::string dtype_name(char kind, int64_t itemsize) {
    const std::string bits = std::to_string(8 * itemsize);
    switch (kind) {
        case 'f': return "float" + bits;
        case 'i': return "int" + bits;
        case 'u': return "uint" + bits;
        case 'c': return "complex" + bits;
        case 'b': return "bool";
        default: return std::string("a dtype of kind '") + kind + "'";
    }
}

// The view of an array described by `a`, which must be C-contiguous and aligned. Its dtype is read by
// value, kind and size, never by the identity of a dtype object: an array that went through pickle,
// or targets of np.longlong (int64 on LP64 systems, a dtype object of its own), are accepted.
inline ArrayView make_view(const py::handle& obj, const ArrayFacts& a, const char* fn, const std::string& name) {
    ArrayView v;
    v.obj = py::reinterpret_borrow<py::object>(obj);
    v.ptr = a.ptr;
    v.shape = a.shape;
    v.dtype_name = dtype_name(a.kind, a.itemsize);
    v.itemsize = a.itemsize;
    v.readonly = a.readonly;
    v.fn = fn;
    v.name = name;
    if (!native_byte_order(a.byteorder))
        v.dtype_name += " (non-native byte order)";
    else if (v.dtype_name == "float32")
        v.dtype = Dtype::float32;
    else if (v.dtype_name == "float64")
        v.dtype = Dtype::float64;
    else if (v.dtype_name == "int64")
        v.dtype = Dtype::int64;
    // C-contiguous: each stride the product of the later axes' lengths (an axis of length 1 may have any,
    // and an empty array any at all, as NumPy says).
    if (v.size() > 0 && !a.strides.empty()) {
        int64_t expected = a.itemsize;
        for (size_t i = a.shape.size(); i-- > 0;) {
            if (a.shape[i] != 1 && a.strides[i] != expected)
                throw value_error(v, "must be C-contiguous; pass a contiguous copy (ascontiguousarray)");
            expected *= a.shape[i];
        }
    }
    // NOTE: vectorised loops may assume each element sits at a multiple of its size.
    if (a.itemsize > 0 && reinterpret_cast<std::uintptr_t>(a.ptr) % a.itemsize != 0)
        throw value_error(v, "is not aligned in memory; pass " + name + ".copy()");
    return v;
}

// obj as a view, or an empty view (is_none()) for None.
inline ArrayView view_or_none(const py::handle& obj, const char* fn, const std::string& name) {
    return obj.is_none() ? ArrayView{} : view(obj, fn, name);
}

// The arrays of a Python list, named name[0], name[1], ...
inline std::vector<ArrayView> view_list(const py::list& list, const char* fn, const std::string& name) {
    std::vector<ArrayView> views;
    for (size_t i = 0; i < list.size(); ++i) views.push_back(view(list[i], fn, name + "[" + std::to_string(i) + "]"));
    return views;
}

// --- the checks every kernel shares -------------------------------------------------------------

// The dtype a kernel runs in: float32 or float64.
inline void check_float(const ArrayView& a) {
    if (a.dtype != Dtype::float32 && a.dtype != Dtype::float64)
        throw type_error(a, "must be float32 or float64, got " + a.dtype_name);
}

inline void check_shape(const ArrayView& a, const Shape& shape) {
    if (a.shape != shape) throw value_error(a, "has shape " + shape_str(a.shape) + ", expected " + shape_str(shape));
}

// a has the dtype of `like` (a float array already checked) and the given shape.
inline void check_like(const ArrayView& a, const ArrayView& like, const Shape& shape) {
    if (a.dtype != like.dtype)
        throw type_error(a, "has dtype " + a.dtype_name + " but " + like.name + " has " + like.dtype_name +
                                "; pass arrays of one dtype");
    check_shape(a, shape);
}

inline void check_min_ndim(const ArrayView& a, size_t ndim, const char* layout) {
    if (a.shape.size() < ndim)
        throw value_error(a, "must be " + std::string(layout) + ", got shape " + shape_str(a.shape));
}

// Integer indices (cross-entropy's targets, the embedding's ids): int64, of the given shape.
inline void check_indices_dtype(const ArrayView& ids, const Shape& shape) {
    if (ids.dtype != Dtype::int64)
        throw type_error(ids, "must be int64, got " + ids.dtype_name + "; pass " + ids.name + ".astype('int64')");
    check_shape(ids, shape);
}

// Every value of ids, read from `values` (host memory: the array itself in _C, a copy in _C_cuda), in
// [0, n); else a ValueError naming the first one outside (its position in C order).
inline void check_index_values(const int64_t* values, const ArrayView& ids, int64_t n) {
    for (int64_t i = 0; i < ids.size(); ++i)
        if (values[i] < 0 || values[i] >= n)
            throw py::value_error(std::string(ids.fn) + ": " + ids.name + "[" + std::to_string(i) + "] = " +
                                  std::to_string(values[i]) + " is outside [0, " + std::to_string(n) + ")");
}

// --- one check per kernel: the views and the kernel's dimensions ---------------------------------

// x (..., C) with C >= 1, float32 or float64: its N rows of C, and the shape (...) of one number per row.
struct Rows {
    int64_t N, C;
    Shape rows;
};
inline Rows rows_of(const ArrayView& x) {
    check_min_ndim(x, 1, "(..., C)");
    check_float(x);
    const int64_t C = x.shape.back();
    if (C == 0) throw value_error(x, "has an empty last axis " + shape_str(x.shape));
    return {x.size() / C, C, Shape(x.shape.begin(), x.shape.end() - 1)};
}

struct LayerNormArgs {
    ArrayView x, weight, bias, dout, mean, rstd;  // the forward's (bias may be None), then the backward's
    Rows dims;
};
inline LayerNormArgs check_layernorm_forward(const py::handle& x, const py::handle& weight, const py::handle& bias) {
    const char* fn = "layernorm_forward";
    LayerNormArgs a{view(x, fn, "x"), view(weight, fn, "weight"), view_or_none(bias, fn, "bias")};
    a.dims = rows_of(a.x);
    check_like(a.weight, a.x, {a.dims.C});
    if (!a.bias.is_none()) check_like(a.bias, a.x, {a.dims.C});
    return a;
}
inline LayerNormArgs check_layernorm_backward(const py::handle& dout, const py::handle& x, const py::handle& weight,
                                              const py::handle& mean, const py::handle& rstd) {
    const char* fn = "layernorm_backward";
    LayerNormArgs a{view(x, fn, "x"), view(weight, fn, "weight"), {}, view(dout, fn, "dout"), view(mean, fn, "mean"),
                    view(rstd, fn, "rstd")};
    a.dims = rows_of(a.x);
    check_like(a.dout, a.x, a.x.shape);
    check_like(a.weight, a.x, {a.dims.C});
    check_like(a.mean, a.x, a.dims.rows);
    check_like(a.rstd, a.x, a.dims.rows);
    return a;
}

struct GeluArgs {
    ArrayView x, dout;  // dout: the backward's
};
inline GeluArgs check_gelu_forward(const py::handle& x) {
    GeluArgs a{view(x, "gelu_forward", "x")};
    check_float(a.x);
    return a;
}
inline GeluArgs check_gelu_backward(const py::handle& dout, const py::handle& x) {
    const char* fn = "gelu_backward";
    GeluArgs a{view(x, fn, "x"), view(dout, fn, "dout")};
    check_float(a.x);
    check_like(a.dout, a.x, a.x.shape);
    return a;
}

// q, k, v (..., T, hs) with hs >= 1: BH heads (the product of the leading axes) of T rows; lse (..., T).
struct AttentionArgs {
    ArrayView q, k, v, dout, lse;  // dout, lse: the backward's
    int64_t BH, T, hs;
    Shape lse_shape;
};
inline AttentionArgs check_attention(const char* fn, const py::handle& q, const py::handle& k, const py::handle& v) {
    AttentionArgs a{view(q, fn, "q"), view(k, fn, "k"), view(v, fn, "v")};
    check_min_ndim(a.q, 2, "(B, NH, T, hs)");
    check_float(a.q);
    a.T = a.q.shape[a.q.shape.size() - 2], a.hs = a.q.shape.back();
    if (a.hs == 0) throw value_error(a.q, "has head size 0, shape " + shape_str(a.q.shape));
    a.BH = a.T ? a.q.size() / (a.T * a.hs) : 0;
    a.lse_shape = Shape(a.q.shape.begin(), a.q.shape.end() - 1);
    check_like(a.k, a.q, a.q.shape);
    check_like(a.v, a.q, a.q.shape);
    return a;
}
inline AttentionArgs check_attention_forward(const py::handle& q, const py::handle& k, const py::handle& v) {
    return check_attention("attention_forward", q, k, v);
}
inline AttentionArgs check_attention_backward(const py::handle& dout, const py::handle& q, const py::handle& k,
                                              const py::handle& v, const py::handle& lse) {
    const char* fn = "attention_backward";
    AttentionArgs a = check_attention(fn, q, k, v);
    a.dout = view(dout, fn, "dout"), a.lse = view(lse, fn, "lse");
    check_like(a.dout, a.q, a.q.shape);
    check_like(a.lse, a.q, a.lse_shape);
    return a;
}

// qkv (B, T, 3C) as c_attn makes it, C = NH * hs: out and dout (B, T, C), lse (B, NH, T).
struct SelfAttentionArgs {
    ArrayView qkv, dout, lse;  // dout, lse: the backward's
    int64_t B, T, C, NH, hs;
};
inline SelfAttentionArgs check_self_attention(const char* fn, const py::handle& qkv, int64_t n_head) {
    SelfAttentionArgs a{view(qkv, fn, "qkv")};
    const Shape& s = a.qkv.shape;
    if (s.size() != 3 || s[2] % 3 != 0)
        throw value_error(a.qkv, "must be (B, T, 3C), q, k and v side by side, got shape " + shape_str(s));
    check_float(a.qkv);
    a.B = s[0], a.T = s[1], a.C = s[2] / 3, a.NH = n_head;
    if (n_head < 1 || a.C == 0 || a.C % n_head != 0)
        throw py::value_error(std::string(fn) + ": n_head must be >= 1 and divide C = " + std::to_string(a.C) +
                              ", got " + std::to_string(n_head));
    a.hs = a.C / n_head;
    return a;
}
inline SelfAttentionArgs check_self_attention_forward(const py::handle& qkv, int64_t n_head) {
    return check_self_attention("self_attention_forward", qkv, n_head);
}
inline SelfAttentionArgs check_self_attention_backward(const py::handle& dout, const py::handle& qkv,
                                                       const py::handle& lse, int64_t n_head) {
    const char* fn = "self_attention_backward";
    SelfAttentionArgs a = check_self_attention(fn, qkv, n_head);
    a.dout = view(dout, fn, "dout"), a.lse = view(lse, fn, "lse");
    check_like(a.dout, a.qkv, {a.B, a.T, a.C});
    check_like(a.lse, a.qkv, {a.B, a.NH, a.T});
    return a;
}

// logits (or probs) (N, V) with N, V >= 1, targets int64 (N,). Their values are checked where the
// memory is: check_index_values in _C, on the device in _C_cuda.
struct CrossEntropyArgs {
    ArrayView rows, targets;  // rows: the forward's logits, the backward's probs
    int64_t N, V;
};
inline CrossEntropyArgs check_crossentropy(const char* fn, const char* rows_name, const py::handle& rows,
                                           const py::handle& targets) {
    CrossEntropyArgs a{view(rows, fn, rows_name), view(targets, fn, "targets")};
    if (a.rows.shape.size() != 2 || a.rows.shape[0] == 0 || a.rows.shape[1] == 0)
        throw value_error(a.rows, "must be a non-empty (N, V) array, got shape " + shape_str(a.rows.shape));
    check_float(a.rows);
    a.N = a.rows.shape[0], a.V = a.rows.shape[1];
    check_indices_dtype(a.targets, {a.N});
    return a;
}
inline CrossEntropyArgs check_crossentropy_forward(const py::handle& logits, const py::handle& targets) {
    return check_crossentropy("crossentropy_forward", "logits", logits, targets);
}
inline CrossEntropyArgs check_crossentropy_backward(const py::handle& probs, const py::handle& targets) {
    return check_crossentropy("crossentropy_backward", "probs", probs, targets);
}

// dout (..., C), ids int64 (...) of its leading shape, V = num_embeddings >= 0 rows of dweight (V, C).
// The ids' values are checked as cross-entropy's targets are.
struct EmbeddingArgs {
    ArrayView dout, ids;
    int64_t N, C, V;
};
inline EmbeddingArgs check_embedding_backward(const py::handle& dout, const py::handle& ids, int64_t num_embeddings) {
    const char* fn = "embedding_backward";
    EmbeddingArgs a{view(dout, fn, "dout"), view(ids, fn, "ids")};
    check_min_ndim(a.dout, 1, "(..., C)");
    check_float(a.dout);
    check_indices_dtype(a.ids, Shape(a.dout.shape.begin(), a.dout.shape.end() - 1));
    a.N = a.ids.size(), a.C = a.dout.shape.back(), a.V = num_embeddings;
    if (num_embeddings < 0)
        throw py::value_error(std::string(fn) + ": num_embeddings must be >= 0, got " + std::to_string(num_embeddings));
    return a;
}

// The lists of an AdamW step, array by array of one dtype and shape. None of the arrays it writes
// (params, ms, vs) may share memory with another of its arrays: it would read what it just wrote.
struct AdamWArgs {
    std::vector<ArrayView> params, grads, ms, vs;
};
inline AdamWArgs check_adamw_update(const py::list& params, const py::list& grads, const py::list& ms,
                                    const py::list& vs, int64_t step) {
    const char* fn = "adamw_update";
    if (step < 1) throw py::value_error(std::string(fn) + ": step must be >= 1, got " + std::to_string(step));
    if (grads.size() != params.size() || ms.size() != params.size() || vs.size() != params.size())
        throw py::value_error(std::string(fn) + ": params, grads, ms, vs must have one length, got " +
                              std::to_string(params.size()) + ", " + std::to_string(grads.size()) + ", " +
                              std::to_string(ms.size()) + ", " + std::to_string(vs.size()));
    AdamWArgs a{view_list(params, fn, "params"), view_list(grads, fn, "grads"), view_list(ms, fn, "ms"),
                view_list(vs, fn, "vs")};
    std::vector<const ArrayView*> written, all;
    for (size_t i = 0; i < a.params.size(); ++i) {
        check_float(a.params[i]);
        for (const ArrayView* other : {&a.grads[i], &a.ms[i], &a.vs[i]})
            check_like(*other, a.params[i], a.params[i].shape);
        for (const ArrayView* out : {&a.params[i], &a.ms[i], &a.vs[i]}) {
            if (out->readonly) throw value_error(*out, "is read-only; pass a writeable array");
            written.push_back(out);
        }
        all.insert(all.end(), {&a.params[i], &a.grads[i], &a.ms[i], &a.vs[i]});
    }
    // Each pair of a written array and another, their bytes [begin, end) compared (a few thousand pairs
    // for a GPT: microseconds).
    const auto begin = [](const ArrayView* x) { return reinterpret_cast<std::uintptr_t>(x->ptr); };
    const auto end = [&](const ArrayView* x) { return begin(x) + x->size() * x->itemsize; };
    for (const ArrayView* out : written)
        for (const ArrayView* other : all)
            if (other != out && out->size() > 0 && other->size() > 0 && begin(out) < end(other) &&
                begin(other) < end(out))
                throw value_error(*out, "shares memory with " + other->name + "; pass separate arrays");
    return a;
}

inline std::vector<ArrayView> check_global_norm(const py::list& grads) {
    std::vector<ArrayView> g = view_list(grads, "global_norm", "grads");
    for (const ArrayView& a : g) check_float(a);
    return g;
}

// --- the kernels: each binding file defines them, def_kernels declares them to Python -------------

py::tuple layernorm_forward(const py::object& x, const py::object& weight, const py::object& bias, double eps);
py::tuple layernorm_backward(const py::object& dout, const py::object& x, const py::object& weight,
                             const py::object& mean, const py::object& rstd);
py::object gelu_forward(const py::object& x);
py::object gelu_backward(const py::object& dout, const py::object& x);
py::tuple attention_forward(const py::object& q, const py::object& k, const py::object& v, bool is_causal);
py::tuple attention_backward(const py::object& dout, const py::object& q, const py::object& k, const py::object& v,
                             const py::object& lse, bool is_causal);
py::tuple self_attention_forward(const py::object& qkv, int64_t n_head, bool is_causal);
py::object self_attention_backward(const py::object& dout, const py::object& qkv, const py::object& lse,
                                   int64_t n_head, bool is_causal);
py::tuple crossentropy_forward(const py::object& logits, const py::object& targets);
py::object crossentropy_backward(double dloss, const py::object& probs, const py::object& targets);
py::object embedding_backward(const py::object& dout, const py::object& ids, int64_t num_embeddings);
void adamw_update(const py::list& params, const py::list& grads, const py::list& ms, const py::list& vs, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step);
double global_norm(const py::list& grads);

// The kernels under the names, argument names and order of minigrad.kernels, with their shapes.
inline void def_kernels(py::module_& m) {
    m.def("layernorm_forward", &layernorm_forward, py::arg("x"), py::arg("weight"), py::arg("bias").none(true),
          py::arg("eps"), "x (..., C), weight, bias (C,) or None -> (out (..., C), mean (...), rstd (...))");
    m.def("layernorm_backward", &layernorm_backward, py::arg("dout"), py::arg("x"), py::arg("weight"),
          py::arg("mean"), py::arg("rstd"), "-> (dx (..., C), dweight (C,), dbias (C,))");
    m.def("gelu_forward", &gelu_forward, py::arg("x"), "tanh-GELU of x, any shape");
    m.def("gelu_backward", &gelu_backward, py::arg("dout"), py::arg("x"), "-> dx = gelu'(x) dout, the shape of x");
    m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("is_causal"),
          "q, k, v (B, NH, T, hs) -> (out (B, NH, T, hs), lse (B, NH, T): each score row's log-sum-exp)");
    m.def("attention_backward", &attention_backward, py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("lse"), py::arg("is_causal"), "-> (dq, dk, dv), each (B, NH, T, hs), P rebuilt from q, k and lse");
    m.def("self_attention_forward", &self_attention_forward, py::arg("qkv"), py::arg("n_head"), py::arg("is_causal"),
          "qkv (B, T, 3C), q, k, v side by side, heads side by side in each -> (out (B, T, C), heads side by side; "
          "lse (B, NH, T))");
    m.def("self_attention_backward", &self_attention_backward, py::arg("dout"), py::arg("qkv"), py::arg("lse"),
          py::arg("n_head"), py::arg("is_causal"), "-> dqkv (B, T, 3C)");
    m.def("crossentropy_forward", &crossentropy_forward, py::arg("logits"), py::arg("targets"),
          "logits (N, V), targets int64 (N,) in [0, V) -> (mean loss as a 0-d array, probs (N, V))");
    m.def("crossentropy_backward", &crossentropy_backward, py::arg("dloss"), py::arg("probs"), py::arg("targets"),
          "-> dlogits (N, V) = dloss (probs - onehot(targets)) / N");
    m.def("embedding_backward", &embedding_backward, py::arg("dout"), py::arg("ids"), py::arg("num_embeddings"),
          "dout (..., C), ids int64 (...) in [0, num_embeddings) -> dweight (num_embeddings, C), the rows of dout "
          "summed by id");
    m.def("adamw_update", &adamw_update, py::arg("params"), py::arg("grads"), py::arg("ms"), py::arg("vs"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step"),
          "One AdamW step, in place on every array of the lists params, ms and vs");
    m.def("global_norm", &global_norm, py::arg("grads"), "sqrt(sum of every g^2) as a float");
}

}  // namespace minigrad::bindings
