// minigrad._C: argument checks and pointer extraction only; the arithmetic lives in csrc/cpu/.
//
// Every array argument is taken as it is, never converted: a wrong dtype, a view that is not
// C-contiguous or a shape that does not match raises a one-line TypeError/ValueError naming the
// function and the argument. Outputs are fresh arrays; the GIL is released while the kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings_checks.h"
#include "cpu/adamw.h"
#include "cpu/attention.h"
#include "cpu/crossentropy.h"
#include "cpu/gelu.h"
#include "cpu/layernorm.h"
#include "cpu/memory.h"
#include "cpu/threads.h"

namespace py = pybind11;
using Shape = std::vector<py::ssize_t>;

namespace {

// --- argument checks ----------------------------------------------------------------------------

using minigrad::bindings::shape_str;

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// obj as a NumPy array that is C-contiguous and aligned, or a TypeError/ValueError.
py::array as_array(const py::handle& obj, const char* fn, const std::string& name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(fn) + ": " + name + " must be a NumPy array, got " +
                             py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(fn) + ": " + name + " must be C-contiguous; pass np.ascontiguousarray(" +
                              name + ")");
    // NOTE: vectorised loops may assume each element sits at a multiple of its size.
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(fn) + ": " + name + " is not aligned in memory; pass " + name + ".copy()");
    return a;
}

// An output the kernel writes in place must be writeable.
void check_writeable(const py::array& a, const char* fn, const std::string& name) {
    if (!a.writeable()) throw py::value_error(std::string(fn) + ": " + name + " is read-only; pass a writeable array");
}

enum class Dtype { f32, f64 };

// The dtype the kernel runs in: that of `a`, which must be float32 or float64.
Dtype float_dtype(const py::array& a, const char* fn, const std::string& name) {
    if (a.dtype().is(py::dtype::of<float>())) return Dtype::f32;
    if (a.dtype().is(py::dtype::of<double>())) return Dtype::f64;
    throw py::type_error(std::string(fn) + ": " + name + " must be float32 or float64, got " + dtype_str(a));
}

// Every floating input shares the dtype of the first.
void check_same_dtype(const py::array& a, const py::array& like, const char* fn, const std::string& name,
                      const std::string& like_name) {
    if (!a.dtype().is(like.dtype()))
        throw py::type_error(std::string(fn) + ": " + name + " has dtype " + dtype_str(a) + " but " + like_name +
                             " has " + dtype_str(like) + "; pass arrays of one dtype");
}

void check_shape(const py::array& a, const Shape& expected, const char* fn, const std::string& name) {
    if (shape_of(a) != expected)
        throw py::value_error(std::string(fn) + ": " + name + " has shape " + shape_str(shape_of(a)) + ", expected " +
                              shape_str(expected));
}

void check_min_ndim(const py::array& a, py::ssize_t ndim, const char* fn, const std::string& name,
                    const char* layout) {
    if (a.ndim() < ndim)
        throw py::value_error(std::string(fn) + ": " + name + " must be " + layout + ", got shape " +
                              shape_str(shape_of(a)));
}

// Targets: int64, 1-D of length N, every value in [0, V).
void check_targets(const py::array& targets, int64_t N, int64_t V, const char* fn) {
    if (!targets.dtype().is(py::dtype::of<int64_t>()))
        throw py::type_error(std::string(fn) + ": targets must be int64, got " + dtype_str(targets) +
                             "; pass targets.astype(np.int64)");
    check_shape(targets, {static_cast<py::ssize_t>(N)}, fn, "targets");
    const auto* t = static_cast<const int64_t*>(targets.data());
    for (int64_t n = 0; n < N; ++n)
        if (t[n] < 0 || t[n] >= V)
            throw py::value_error(std::string(fn) + ": targets[" + std::to_string(n) + "] = " + std::to_string(t[n]) +
                                  " is outside [0, " + std::to_string(V) + ")");
}

template <class T>
const T* in(const py::array& a) {
    return static_cast<const T*>(a.data());
}

template <class T>
T* out(py::array& a) {
    return static_cast<T*>(a.mutable_data());
}

template <class T>
py::array empty(const Shape& shape) {
    return py::array_t<T>(shape);
}

// Calls body.template operator()<float>() or <double>() for the dtype d.
template <class Body>
auto dispatch(Dtype d, Body&& body) {
    return d == Dtype::f32 ? body(float{}) : body(double{});
}

// --- LayerNorm ----------------------------------------------------------------------------------

py::tuple layernorm_forward(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj, double eps) {
    const char* fn = "layernorm_forward";
    py::array x = as_array(x_obj, fn, "x"), w = as_array(w_obj, fn, "weight");
    check_min_ndim(x, 1, fn, "x", "(..., C)");
    const Dtype d = float_dtype(x, fn, "x");
    Shape xs = shape_of(x);
    const int64_t C = xs.back(), N = C ? x.size() / C : 0;
    if (C == 0) throw py::value_error(std::string(fn) + ": x has an empty last axis " + shape_str(xs));
    check_same_dtype(w, x, fn, "weight", "x");
    check_shape(w, {C}, fn, "weight");
    py::array b;
    if (!b_obj.is_none()) {
        b = as_array(b_obj, fn, "bias");
        check_same_dtype(b, x, fn, "bias", "x");
        check_shape(b, {C}, fn, "bias");
    }
    const Shape rows(xs.begin(), xs.end() - 1);
    return dispatch(d, [&](auto zero) {
        using T = decltype(zero);
        py::array o = empty<T>(xs), mean = empty<T>(rows), rstd = empty<T>(rows);
        const T* bias = b_obj.is_none() ? nullptr : in<T>(b);
        {
            py::gil_scoped_release release;
            minigrad::layernorm_forward(out<T>(o), out<T>(mean), out<T>(rstd), in<T>(x), in<T>(w), bias, N, C,
                                        static_cast<T>(eps));
        }
        return py::make_tuple(o, mean, rstd);
    });
}

py::tuple layernorm_backward(const py::object& dout_obj, const py::object& x_obj, const py::object& w_obj,
                             const py::object& mean_obj, const py::object& rstd_obj) {
    const char* fn = "layernorm_backward";
    py::array x = as_array(x_obj, fn, "x");
    check_min_ndim(x, 1, fn, "x", "(..., C)");
    const Dtype d = float_dtype(x, fn, "x");
    Shape xs = shape_of(x);
    const int64_t C = xs.back(), N = C ? x.size() / C : 0;
    if (C == 0) throw py::value_error(std::string(fn) + ": x has an empty last axis " + shape_str(xs));
    const Shape rows(xs.begin(), xs.end() - 1);
    py::array dout = as_array(dout_obj, fn, "dout"), w = as_array(w_obj, fn, "weight");
    py::array mean = as_array(mean_obj, fn, "mean"), rstd = as_array(rstd_obj, fn, "rstd");
    for (auto [a, name, shape] : {std::tuple{&dout, "dout", xs}, {&w, "weight", Shape{C}}, {&mean, "mean", rows},
                                  {&rstd, "rstd", rows}}) {
        check_same_dtype(*a, x, fn, name, "x");
        check_shape(*a, shape, fn, name);
    }
    return dispatch(d, [&](auto zero) {
        using T = decltype(zero);
        py::array dx = empty<T>(xs), dw = empty<T>({C}), db = empty<T>({C});
        {
            py::gil_scoped_release release;
            minigrad::layernorm_backward(out<T>(dx), out<T>(dw), out<T>(db), in<T>(dout), in<T>(x), in<T>(w),
                                         in<T>(mean), in<T>(rstd), N, C);
        }
        return py::make_tuple(dx, dw, db);
    });
}

// --- GELU ---------------------------------------------------------------------------------------

// GELU's optional bias: none, or (C,) for x (..., C) of its dtype; returns the array (empty for none)
// and C (x.size() for none: all of x as one row).
std::pair<py::array, int64_t> gelu_bias(const py::object& b_obj, const py::array& x, const char* fn) {
    if (b_obj.is_none()) return {py::array(), x.size()};
    check_min_ndim(x, 1, fn, "x", "(..., C) with a bias");
    const int64_t C = x.shape(x.ndim() - 1);
    py::array b = as_array(b_obj, fn, "bias");
    check_same_dtype(b, x, fn, "bias", "x");
    check_shape(b, {C}, fn, "bias");
    return {b, C};
}

py::array gelu_forward(const py::object& x_obj, const py::object& b_obj) {
    const char* fn = "gelu_forward";
    py::array x = as_array(x_obj, fn, "x");
    const Dtype d = float_dtype(x, fn, "x");
    const auto bias_and_row = gelu_bias(b_obj, x, fn);  // (not a structured binding: lambdas capture it)
    const auto& b = bias_and_row.first;
    const int64_t C = bias_and_row.second;
    return dispatch(d, [&](auto zero) {
        using T = decltype(zero);
        py::array o = empty<T>(shape_of(x));
        const T* bias = b_obj.is_none() ? nullptr : in<T>(b);
        {
            py::gil_scoped_release release;
            minigrad::gelu_forward(out<T>(o), in<T>(x), bias, x.size(), C);
        }
        return o;
    });
}

py::array gelu_backward(const py::object& dout_obj, const py::object& x_obj, const py::object& b_obj) {
    const char* fn = "gelu_backward";
    py::array x = as_array(x_obj, fn, "x"), dout = as_array(dout_obj, fn, "dout");
    const Dtype d = float_dtype(x, fn, "x");
    check_same_dtype(dout, x, fn, "dout", "x");
    check_shape(dout, shape_of(x), fn, "dout");
    const auto bias_and_row = gelu_bias(b_obj, x, fn);  // (not a structured binding: lambdas capture it)
    const auto& b = bias_and_row.first;
    const int64_t C = bias_and_row.second;
    return dispatch(d, [&](auto zero) {
        using T = decltype(zero);
        py::array dx = empty<T>(shape_of(x));
        const T* bias = b_obj.is_none() ? nullptr : in<T>(b);
        {
            py::gil_scoped_release release;
            minigrad::gelu_backward(out<T>(dx), in<T>(dout), in<T>(x), bias, x.size(), C);
        }
        return dx;
    });
}

// --- attention ----------------------------------------------------------------------------------

// q, k, v of one shape (..., T, hs) with hs >= 1: returns (BH, T, hs), BH the product of the leading axes.
std::tuple<int64_t, int64_t, int64_t> attention_dims(const py::array& q, const char* fn) {
    check_min_ndim(q, 2, fn, "q", "(B, NH, T, hs)");
    const Shape s = shape_of(q);
    const int64_t T_ = s[s.size() - 2], hs = s.back();
    if (hs == 0) throw py::value_error(std::string(fn) + ": q has head size 0, shape " + shape_str(s));
    return {T_ ? q.size() / (T_ * hs) : 0, T_, hs};
}

py::tuple attention_forward(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                            bool is_causal) {
    const char* fn = "attention_forward";
    py::array q = as_array(q_obj, fn, "q"), k = as_array(k_obj, fn, "k"), v = as_array(v_obj, fn, "v");
    const Dtype d = float_dtype(q, fn, "q");
    const auto [BH, T_, hs] = attention_dims(q, fn);
    const Shape qs = shape_of(q);
    for (auto [a, name] : {std::pair{&k, "k"}, {&v, "v"}}) {
        check_same_dtype(*a, q, fn, name, "q");
        check_shape(*a, qs, fn, name);
    }
    Shape ss = qs;
    ss.back() = 2;  // (..., T, 2)
    return dispatch(d, [&, BH = BH, T_ = T_, hs = hs](auto zero) {
        using T = decltype(zero);
        py::array o = empty<T>(qs), stats = empty<T>(ss);
        {
            py::gil_scoped_release release;
            const auto heads = minigrad::HeadLayout::heads_first(T_, hs);  // (BH, T, hs)
            minigrad::attention_forward(out<T>(o), out<T>(stats), in<T>(q), in<T>(k), in<T>(v), BH, 1, T_, hs, heads,
                                        heads, is_causal);
        }
        return py::make_tuple(o, stats);
    });
}

py::tuple attention_backward(const py::object& dout_obj, const py::object& q_obj, const py::object& k_obj,
                             const py::object& v_obj, const py::object& stats_obj, bool is_causal) {
    const char* fn = "attention_backward";
    py::array q = as_array(q_obj, fn, "q"), k = as_array(k_obj, fn, "k"), v = as_array(v_obj, fn, "v");
    py::array dout = as_array(dout_obj, fn, "dout"), stats = as_array(stats_obj, fn, "stats");
    const Dtype d = float_dtype(q, fn, "q");
    const auto [BH, T_, hs] = attention_dims(q, fn);
    const Shape qs = shape_of(q);
    Shape ss = qs;
    ss.back() = 2;  // (..., T, 2)
    for (auto [a, name, shape] : {std::tuple{&dout, "dout", qs}, {&k, "k", qs}, {&v, "v", qs}, {&stats, "stats", ss}}) {
        check_same_dtype(*a, q, fn, name, "q");
        check_shape(*a, shape, fn, name);
    }
    return dispatch(d, [&, BH = BH, T_ = T_, hs = hs](auto zero) {
        using T = decltype(zero);
        py::array dq = empty<T>(qs), dk = empty<T>(qs), dv = empty<T>(qs);
        {
            py::gil_scoped_release release;
            const auto heads = minigrad::HeadLayout::heads_first(T_, hs);
            minigrad::attention_backward(out<T>(dq), out<T>(dk), out<T>(dv), in<T>(dout), in<T>(q), in<T>(k),
                                         in<T>(v), in<T>(stats), BH, 1, T_, hs, heads, heads, is_causal);
        }
        return py::make_tuple(dq, dk, dv);
    });
}

// The optional bias (3C,) of qkv (B, T, 3C), checked: none, or the array.
std::optional<py::array> qkv_bias(const py::object& b_obj, const py::array& qkv, const char* fn) {
    if (b_obj.is_none()) return std::nullopt;
    py::array b = as_array(b_obj, fn, "bias");
    check_same_dtype(b, qkv, fn, "bias", "qkv");
    check_shape(b, {qkv.shape(2)}, fn, "bias");
    return b;
}

// Its q, k and v parts (C numbers each) for the kernels, or nulls.
template <class T>
minigrad::QKVBias<T> qkv_bias_parts(const std::optional<py::array>& b, int64_t C) {
    if (!b) return {};
    const T* p = in<T>(*b);
    return {p, p + C, p + 2 * C};
}

py::tuple self_attention_forward(const py::object& qkv_obj, int64_t n_head, bool is_causal,
                                 const py::object& b_obj) {
    const char* fn = "self_attention_forward";
    py::array qkv = as_array(qkv_obj, fn, "qkv");
    const Dtype d = float_dtype(qkv, fn, "qkv");
    const auto [B, T_, C, hs] = minigrad::bindings::qkv_dims(shape_of(qkv), n_head, fn);
    const auto b = qkv_bias(b_obj, qkv, fn);
    return dispatch(d, [&, B = B, T_ = T_, C = C, hs = hs](auto zero) {
        using T = decltype(zero);
        py::array o = empty<T>({B, T_, C}), stats = empty<T>({B, n_head, T_, 2});
        const auto bias = qkv_bias_parts<T>(b, C);
        {
            py::gil_scoped_release release;
            const T* q = in<T>(qkv);
            const auto qkv_heads = minigrad::HeadLayout::side_by_side(T_, 3 * C, hs);
            const auto out_heads = minigrad::HeadLayout::side_by_side(T_, C, hs);
            minigrad::attention_forward(out<T>(o), out<T>(stats), q, q + C, q + 2 * C, B, n_head, T_, hs, qkv_heads,
                                        out_heads, is_causal, bias);
        }
        return py::make_tuple(o, stats);
    });
}

py::array self_attention_backward(const py::object& dout_obj, const py::object& qkv_obj, const py::object& stats_obj,
                                 int64_t n_head, bool is_causal, const py::object& b_obj) {
    const char* fn = "self_attention_backward";
    py::array qkv = as_array(qkv_obj, fn, "qkv");
    py::array dout = as_array(dout_obj, fn, "dout"), stats = as_array(stats_obj, fn, "stats");
    const Dtype d = float_dtype(qkv, fn, "qkv");
    const auto [B, T_, C, hs] = minigrad::bindings::qkv_dims(shape_of(qkv), n_head, fn);
    for (auto [a, name, shape] :
         {std::tuple{&dout, "dout", Shape{B, T_, C}}, {&stats, "stats", Shape{B, n_head, T_, 2}}}) {
        check_same_dtype(*a, qkv, fn, name, "qkv");
        check_shape(*a, shape, fn, name);
    }
    const auto b = qkv_bias(b_obj, qkv, fn);
    return dispatch(d, [&, B = B, T_ = T_, C = C, hs = hs](auto zero) {
        using T = decltype(zero);
        py::array dqkv = empty<T>(shape_of(qkv));
        const auto bias = qkv_bias_parts<T>(b, C);
        {
            py::gil_scoped_release release;
            const T* q = in<T>(qkv);
            T* dq = out<T>(dqkv);
            const auto qkv_heads = minigrad::HeadLayout::side_by_side(T_, 3 * C, hs);
            const auto out_heads = minigrad::HeadLayout::side_by_side(T_, C, hs);
            minigrad::attention_backward(dq, dq + C, dq + 2 * C, in<T>(dout), q, q + C, q + 2 * C, in<T>(stats), B,
                                         n_head, T_, hs, qkv_heads, out_heads, is_causal, bias);
        }
        return dqkv;
    });
}

// --- cross-entropy ------------------------------------------------------------------------------

// logits (N, V) with N, V >= 1.
std::pair<int64_t, int64_t> logits_dims(const py::array& logits, const char* fn, const char* name) {
    if (logits.ndim() != 2 || logits.shape(0) == 0 || logits.shape(1) == 0)
        throw py::value_error(std::string(fn) + ": " + name + " must be a non-empty (N, V) array, got shape " +
                              shape_str(shape_of(logits)));
    return {logits.shape(0), logits.shape(1)};
}

py::tuple crossentropy_forward(const py::object& logits_obj, const py::object& targets_obj) {
    const char* fn = "crossentropy_forward";
    py::array logits = as_array(logits_obj, fn, "logits"), targets = as_array(targets_obj, fn, "targets");
    const Dtype d = float_dtype(logits, fn, "logits");
    const auto [N, V] = logits_dims(logits, fn, "logits");
    check_targets(targets, N, V, fn);
    return dispatch(d, [&, N = N, V = V](auto zero) {
        using T = decltype(zero);
        py::array probs = empty<T>({N, V});
        double loss;
        {
            py::gil_scoped_release release;
            loss = minigrad::crossentropy_forward(out<T>(probs), in<T>(logits), in<int64_t>(targets), N, V);
        }
        py::array loss_array = empty<T>({});  // 0-d, like the reference's NumPy scalar
        *out<T>(loss_array) = static_cast<T>(loss);
        return py::make_tuple(loss_array, probs);
    });
}

py::array crossentropy_backward(double dloss, const py::object& probs_obj, const py::object& targets_obj) {
    const char* fn = "crossentropy_backward";
    py::array probs = as_array(probs_obj, fn, "probs"), targets = as_array(targets_obj, fn, "targets");
    const Dtype d = float_dtype(probs, fn, "probs");
    const auto [N, V] = logits_dims(probs, fn, "probs");
    check_targets(targets, N, V, fn);
    return dispatch(d, [&, N = N, V = V](auto zero) {
        using T = decltype(zero);
        py::array dlogits = empty<T>({N, V});
        {
            py::gil_scoped_release release;
            minigrad::crossentropy_backward(out<T>(dlogits), in<T>(probs), in<int64_t>(targets), dloss, N, V);
        }
        return dlogits;
    });
}

// --- the optimizer ------------------------------------------------------------------------------

// The arrays of a Python list, each C-contiguous.
std::vector<py::array> array_list(const py::list& list, const char* fn, const char* name) {
    std::vector<py::array> arrays;
    for (size_t i = 0; i < list.size(); ++i)
        arrays.push_back(as_array(list[i], fn, std::string(name) + "[" + std::to_string(i) + "]"));
    return arrays;
}

void adamw_update(const py::list& params, const py::list& grads, const py::list& ms, const py::list& vs, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step) {
    const char* fn = "adamw_update";
    if (step < 1) throw py::value_error(std::string(fn) + ": step must be >= 1, got " + std::to_string(step));
    if (grads.size() != params.size() || ms.size() != params.size() || vs.size() != params.size())
        throw py::value_error(std::string(fn) + ": params, grads, ms, vs must have one length, got " +
                              std::to_string(params.size()) + ", " + std::to_string(grads.size()) + ", " +
                              std::to_string(ms.size()) + ", " + std::to_string(vs.size()));
    auto p = array_list(params, fn, "params"), g = array_list(grads, fn, "grads");
    auto m = array_list(ms, fn, "ms"), v = array_list(vs, fn, "vs");
    std::vector<Dtype> dtypes;
    for (size_t i = 0; i < p.size(); ++i) {
        const std::string idx = "[" + std::to_string(i) + "]";
        dtypes.push_back(float_dtype(p[i], fn, "params" + idx));
        for (auto [a, name] : {std::pair{&g[i], "grads"}, {&m[i], "ms"}, {&v[i], "vs"}}) {
            check_same_dtype(*a, p[i], fn, name + idx, "params" + idx);
            check_shape(*a, shape_of(p[i]), fn, name + idx);
        }
        for (auto [a, name] : {std::pair{&p[i], "params"}, {&m[i], "ms"}, {&v[i], "vs"}})
            check_writeable(*a, fn, name + idx);
    }
    py::gil_scoped_release release;
    for (size_t i = 0; i < p.size(); ++i)
        dispatch(dtypes[i], [&](auto zero) {
            using T = decltype(zero);
            minigrad::adamw_update(out<T>(p[i]), in<T>(g[i]), out<T>(m[i]), out<T>(v[i]), p[i].size(), lr, beta1,
                                   beta2, eps, weight_decay, step);
            return 0;
        });
}

double global_norm(const py::list& grads) {
    const char* fn = "global_norm";
    auto g = array_list(grads, fn, "grads");
    std::vector<Dtype> dtypes;
    for (size_t i = 0; i < g.size(); ++i) dtypes.push_back(float_dtype(g[i], fn, "grads[" + std::to_string(i) + "]"));
    py::gil_scoped_release release;
    double total = 0.0;
    for (size_t i = 0; i < g.size(); ++i)
        total += dispatch(dtypes[i], [&](auto zero) {
            using T = decltype(zero);
            return minigrad::sum_of_squares(in<T>(g[i]), g[i].size());
        });
    return std::sqrt(total);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "minigrad's fused CPU kernels (private: use minigrad.functional); same names and signatures as "
              "minigrad.kernels";

    m.def("get_num_threads", &minigrad::get_num_threads,
          "Number of threads the CPU kernels use (MINIGRAD_NUM_THREADS, else all hardware threads).");
    m.def(
        "set_num_threads",
        [](int n) {
            if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
            minigrad::set_num_threads(n);
        },
        py::arg("n"), "Set the number of threads the CPU kernels use.");

    m.def("retain_freed_memory", &minigrad::retain_freed_memory,
          "malloc keeps freed large blocks for reuse instead of returning them to the OS; False where unsupported");
    m.def("layernorm_forward", &layernorm_forward, py::arg("x"), py::arg("weight"), py::arg("bias").none(true),
          py::arg("eps"), "x (..., C), weight, bias (C,) or None -> (out (..., C), mean (...), rstd (...))");
    m.def("layernorm_backward", &layernorm_backward, py::arg("dout"), py::arg("x"), py::arg("weight"),
          py::arg("mean"), py::arg("rstd"), "-> (dx (..., C), dweight (C,), dbias (C,))");
    m.def("gelu_forward", &gelu_forward, py::arg("x"), py::arg("bias") = py::none(),
          "tanh-GELU of x + bias: x any shape without a bias, (..., C) with a bias (C,)");
    m.def("gelu_backward", &gelu_backward, py::arg("dout"), py::arg("x"), py::arg("bias") = py::none(),
          "-> dx, the shape of x (gelu'(x + bias) dout)");
    m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("is_causal"),
          "q, k, v (B, NH, T, hs) -> (out (B, NH, T, hs), stats (B, NH, T, 2): each score row's max and 1/sum of exp)");
    m.def("attention_backward", &attention_backward, py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("stats"), py::arg("is_causal") = true,
          "-> (dq, dk, dv), each (B, NH, T, hs); stats and is_causal as returned by and given to the forward");
    m.def("self_attention_forward", &self_attention_forward, py::arg("qkv"), py::arg("n_head"), py::arg("is_causal"),
          py::arg("bias") = py::none(),
          "qkv (B, T, 3C), q, k, v side by side, heads side by side in each, plus bias (3C,) if given -> "
          "(out (B, T, C), heads side by side; stats (B, NH, T, 2))");
    m.def("self_attention_backward", &self_attention_backward, py::arg("dout"), py::arg("qkv"), py::arg("stats"),
          py::arg("n_head"), py::arg("is_causal") = true, py::arg("bias") = py::none(),
          "-> dqkv (B, T, 3C), also the bias's gradient before the sum over rows");
    m.def("crossentropy_forward", &crossentropy_forward, py::arg("logits"), py::arg("targets"),
          "logits (N, V), targets int64 (N,) in [0, V) -> (mean loss as a 0-d array, probs (N, V))");
    m.def("crossentropy_backward", &crossentropy_backward, py::arg("dloss"), py::arg("probs"), py::arg("targets"),
          "-> dlogits (N, V) = dloss (probs - onehot(targets)) / N");
    m.def("adamw_update", &adamw_update, py::arg("params"), py::arg("grads"), py::arg("ms"), py::arg("vs"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step"),
          "One AdamW step, in place on every array of params, ms and vs (lists of arrays)");
    m.def("global_norm", &global_norm, py::arg("grads"), "sqrt(sum of every g^2) as a float");
}
