// minigrad._C_cuda: argument checks and pointer extraction only; the arithmetic lives in csrc/cuda/.
//
// The arrays are CuPy arrays (any object with __cuda_array_interface__), read in place through their
// device pointers, never copied or converted: a wrong dtype, a layout that is not C-contiguous or a
// shape that does not match raises a one-line TypeError/ValueError naming the function and the argument.
// Then, before any allocation, a missing CUDA device raises RuntimeError ("no CUDA device is usable").
// Outputs and scratch buffers are allocated with cupy.empty (CuPy's memory pool) and every kernel runs
// on CuPy's current stream, so it is ordered with the CuPy work around it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings_checks.h"
#include "cuda/kernels.h"

namespace py = pybind11;
namespace mc = minigrad::cuda;
using Shape = std::vector<int64_t>;

namespace {

// --- device arrays ------------------------------------------------------------------------------

enum class Dtype { f32, f64 };

const char* dtype_name(Dtype d) { return d == Dtype::f32 ? "float32" : "float64"; }

// What __cuda_array_interface__ (version 2 or 3) says of one C-contiguous array, plus the object itself.
struct DeviceArray {
    py::object obj;
    std::uintptr_t ptr = 0;
    Shape shape;
    std::string typestr;  // e.g. "<f4"
    bool readonly = false;

    int64_t size() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
    template <class T>
    T* data() const {
        return reinterpret_cast<T*>(ptr);
    }
};

using minigrad::bindings::shape_str;

std::string type_name(const py::handle& obj) { return py::str(py::type::of(obj).attr("__name__")).cast<std::string>(); }

int64_t itemsize(const std::string& typestr) { return typestr.size() > 2 ? std::stoll(typestr.substr(2)) : 0; }

// obj as a C-contiguous device array, or a TypeError/ValueError.
DeviceArray as_device_array(const py::handle& obj, const char* fn, const std::string& name) {
    if (!py::hasattr(obj, "__cuda_array_interface__"))
        throw py::type_error(std::string(fn) + ": " + name + " must be a CuPy array (an object with " +
                             "__cuda_array_interface__), got " + type_name(obj) + "; move it with cupy.asarray(" +
                             name + ") or Tensor.to('cuda')");
    const py::dict cai = obj.attr("__cuda_array_interface__");
    DeviceArray a;
    a.obj = py::reinterpret_borrow<py::object>(obj);
    for (const auto& s : cai["shape"].cast<py::tuple>()) a.shape.push_back(s.cast<int64_t>());
    a.typestr = cai["typestr"].cast<std::string>();
    const auto data = cai["data"].cast<py::tuple>();
    a.ptr = data[0].cast<std::uintptr_t>();
    a.readonly = data[1].cast<bool>();
    if (cai.contains("mask") && !cai["mask"].is_none())
        throw py::value_error(std::string(fn) + ": " + name + " is a masked array; pass a plain CuPy array");
    // strides None means C-contiguous; otherwise they must be the C-contiguous ones (axes of length 1 aside).
    if (cai.contains("strides") && !cai["strides"].is_none() && a.size() > 0) {
        const auto strides = cai["strides"].cast<std::vector<int64_t>>();
        int64_t expected = itemsize(a.typestr);
        for (int i = static_cast<int>(a.shape.size()) - 1; i >= 0; --i) {
            if (a.shape[i] != 1 && strides[i] != expected)
                throw py::value_error(std::string(fn) + ": " + name + " must be C-contiguous; pass cupy.ascontiguousarray(" +
                                      name + ")");
            expected *= a.shape[i];
        }
    }
    return a;
}

// The NumPy name of the array's dtype, for messages.
std::string dtype_str(const DeviceArray& a) {
    for (auto [typestr, name] : {std::pair{"<f4", "float32"}, {"<f8", "float64"}, {"<f2", "float16"},
                                 {"<i8", "int64"}, {"<i4", "int32"}, {"|b1", "bool"}})
        if (a.typestr == typestr) return name;
    return "typestr " + a.typestr;
}

// The dtype the kernel runs in: that of `a`, which must be float32 or float64.
Dtype float_dtype(const DeviceArray& a, const char* fn, const std::string& name) {
    if (a.typestr == "<f4") return Dtype::f32;
    if (a.typestr == "<f8") return Dtype::f64;
    throw py::type_error(std::string(fn) + ": " + name + " must be float32 or float64, got " + dtype_str(a));
}

void check_same_dtype(const DeviceArray& a, const DeviceArray& like, const char* fn, const std::string& name,
                      const std::string& like_name) {
    if (a.typestr != like.typestr)
        throw py::type_error(std::string(fn) + ": " + name + " has dtype " + dtype_str(a) + " but " + like_name +
                             " has " + dtype_str(like) + "; pass arrays of one dtype");
}

void check_shape(const DeviceArray& a, const Shape& expected, const char* fn, const std::string& name) {
    if (a.shape != expected)
        throw py::value_error(std::string(fn) + ": " + name + " has shape " + shape_str(a.shape) + ", expected " +
                              shape_str(expected));
}

void check_writeable(const DeviceArray& a, const char* fn, const std::string& name) {
    if (a.readonly) throw py::value_error(std::string(fn) + ": " + name + " is read-only; pass a writeable array");
}

// Targets: int64, 1-D of length N. Their range is checked on the device (see crossentropy.cu).
void check_targets(const DeviceArray& targets, int64_t N, const char* fn) {
    if (targets.typestr != "<i8")
        throw py::type_error(std::string(fn) + ": targets must be int64, got " + dtype_str(targets) +
                             "; pass targets.astype(cupy.int64)");
    check_shape(targets, {N}, fn, "targets");
}

// --- the device, the stream, and allocation ------------------------------------------------------

// The device status, probed once: the number of devices and, when there is none, why.
const std::pair<int, std::string>& device_status() {
    static const std::pair<int, std::string> status = [] {
        std::string reason;
        const int n = mc::device_count(&reason);
        return std::pair<int, std::string>{n, reason};
    }();
    return status;
}

void require_device(const char* fn) {
    const auto& [count, reason] = device_status();
    if (count == 0)
        throw std::runtime_error(std::string(fn) + ": no CUDA device is usable (" + reason +
                                 "); minigrad._C_cuda needs an NVIDIA GPU and driver: use device 'cpu' instead");
}

mc::Stream current_stream() {
    return py::module_::import("cupy").attr("cuda").attr("get_current_stream")().attr("ptr").cast<mc::Stream>();
}

// A fresh C-contiguous CuPy array from CuPy's memory pool, on CuPy's current device.
// NOTE: scratch arrays are freed when the call returns, before the kernels ran; that is safe because
// CuPy's pool hands a freed block to later work on the same stream only, which runs after ours.
DeviceArray empty(const Shape& shape, Dtype d) {
    py::object a = py::module_::import("cupy").attr("empty")(py::tuple(py::cast(shape)), dtype_name(d));
    return as_device_array(a, "cupy.empty", "out");
}

void check_launch(int code, const char* fn) {
    if (code != 0) throw std::runtime_error(std::string(fn) + ": CUDA error " + mc::error_string(code));
}

// Calls body(float{}) or body(double{}) for the dtype d.
template <class Body>
auto dispatch(Dtype d, Body&& body) {
    return d == Dtype::f32 ? body(float{}) : body(double{});
}

// --- LayerNorm ----------------------------------------------------------------------------------

// x (..., C) with C >= 1: returns (N, C).
std::pair<int64_t, int64_t> rows_of(const DeviceArray& x, const char* fn) {
    if (x.shape.empty()) throw py::value_error(std::string(fn) + ": x must be (..., C), got shape " + shape_str(x.shape));
    const int64_t C = x.shape.back();
    if (C == 0) throw py::value_error(std::string(fn) + ": x has an empty last axis " + shape_str(x.shape));
    return {x.size() / C, C};
}

py::tuple layernorm_forward(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj, double eps) {
    const char* fn = "layernorm_forward";
    const DeviceArray x = as_device_array(x_obj, fn, "x"), w = as_device_array(w_obj, fn, "weight");
    const Dtype d = float_dtype(x, fn, "x");
    const auto [N, C] = rows_of(x, fn);
    check_same_dtype(w, x, fn, "weight", "x");
    check_shape(w, {C}, fn, "weight");
    DeviceArray b;
    if (!b_obj.is_none()) {
        b = as_device_array(b_obj, fn, "bias");
        check_same_dtype(b, x, fn, "bias", "x");
        check_shape(b, {C}, fn, "bias");
    }
    require_device(fn);
    const Shape rows(x.shape.begin(), x.shape.end() - 1);
    const DeviceArray out = empty(x.shape, d), mean = empty(rows, d), rstd = empty(rows, d);
    dispatch(d, [&, N = N, C = C](auto zero) {
        using T = decltype(zero);
        const T* bias = b_obj.is_none() ? nullptr : b.data<T>();
        check_launch(mc::layernorm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), x.data<T>(), w.data<T>(),
                                           bias, N, C, static_cast<T>(eps), current_stream()),
                     fn);
        return 0;
    });
    return py::make_tuple(out.obj, mean.obj, rstd.obj);
}

py::tuple layernorm_backward(const py::object& dout_obj, const py::object& x_obj, const py::object& w_obj,
                             const py::object& mean_obj, const py::object& rstd_obj) {
    const char* fn = "layernorm_backward";
    const DeviceArray x = as_device_array(x_obj, fn, "x");
    const Dtype d = float_dtype(x, fn, "x");
    const auto [N, C] = rows_of(x, fn);
    const Shape rows(x.shape.begin(), x.shape.end() - 1);
    const DeviceArray dout = as_device_array(dout_obj, fn, "dout"), w = as_device_array(w_obj, fn, "weight");
    const DeviceArray mean = as_device_array(mean_obj, fn, "mean"), rstd = as_device_array(rstd_obj, fn, "rstd");
    for (auto [a, name, shape] : {std::tuple{&dout, "dout", x.shape}, {&w, "weight", Shape{C}},
                                  {&mean, "mean", rows}, {&rstd, "rstd", rows}}) {
        check_same_dtype(*a, x, fn, name, "x");
        check_shape(*a, shape, fn, name);
    }
    require_device(fn);
    const DeviceArray dx = empty(x.shape, d), dw = empty({C}, d), db = empty({C}, d);
    dispatch(d, [&, N = N, C = C](auto zero) {
        using T = decltype(zero);
        check_launch(mc::layernorm_backward(dx.data<T>(), dw.data<T>(), db.data<T>(), dout.data<T>(), x.data<T>(),
                                            w.data<T>(), mean.data<T>(), rstd.data<T>(), N, C, current_stream()),
                     fn);
        return 0;
    });
    return py::make_tuple(dx.obj, dw.obj, db.obj);
}

// --- GELU ---------------------------------------------------------------------------------------

// GELU's optional bias: none, or (C,) for x (..., C) of its dtype; returns the array (an empty one for
// none) and C (x.size() for none: all of x as one row).
std::pair<DeviceArray, int64_t> gelu_bias(const py::object& b_obj, const DeviceArray& x, const char* fn) {
    if (b_obj.is_none()) return {DeviceArray{}, x.size()};
    if (x.shape.empty())
        throw py::value_error(std::string(fn) + ": x must be (..., C) with a bias, got shape " + shape_str(x.shape));
    const int64_t C = x.shape.back();
    const DeviceArray b = as_device_array(b_obj, fn, "bias");
    check_same_dtype(b, x, fn, "bias", "x");
    check_shape(b, {C}, fn, "bias");
    return {b, C};
}

py::object gelu_forward(const py::object& x_obj, const py::object& b_obj) {
    const char* fn = "gelu_forward";
    const DeviceArray x = as_device_array(x_obj, fn, "x");
    const Dtype d = float_dtype(x, fn, "x");
    const auto bias_and_row = gelu_bias(b_obj, x, fn);  // (not a structured binding: lambdas capture it)
    const auto& b = bias_and_row.first;
    const int64_t C = bias_and_row.second;
    require_device(fn);
    const DeviceArray out = empty(x.shape, d);
    dispatch(d, [&](auto zero) {
        using T = decltype(zero);
        const T* bias = b_obj.is_none() ? nullptr : b.data<T>();
        check_launch(mc::gelu_forward(out.data<T>(), x.data<T>(), bias, x.size(), C, current_stream()), fn);
        return 0;
    });
    return out.obj;
}

py::object gelu_backward(const py::object& dout_obj, const py::object& x_obj, const py::object& b_obj) {
    const char* fn = "gelu_backward";
    const DeviceArray x = as_device_array(x_obj, fn, "x"), dout = as_device_array(dout_obj, fn, "dout");
    const Dtype d = float_dtype(x, fn, "x");
    check_same_dtype(dout, x, fn, "dout", "x");
    check_shape(dout, x.shape, fn, "dout");
    const auto bias_and_row = gelu_bias(b_obj, x, fn);  // (not a structured binding: lambdas capture it)
    const auto& b = bias_and_row.first;
    const int64_t C = bias_and_row.second;
    require_device(fn);
    const DeviceArray dx = empty(x.shape, d);
    dispatch(d, [&](auto zero) {
        using T = decltype(zero);
        const T* bias = b_obj.is_none() ? nullptr : b.data<T>();
        check_launch(mc::gelu_backward(dx.data<T>(), dout.data<T>(), x.data<T>(), bias, x.size(), C,
                                       current_stream()),
                     fn);
        return 0;
    });
    return dx.obj;
}

// --- attention ----------------------------------------------------------------------------------

// q of shape (..., T, hs) with hs >= 1: returns (BH, T, hs), BH the product of the leading axes.
std::tuple<int64_t, int64_t, int64_t> attention_dims(const DeviceArray& q, const char* fn) {
    if (q.shape.size() < 2)
        throw py::value_error(std::string(fn) + ": q must be (B, NH, T, hs), got shape " + shape_str(q.shape));
    const int64_t T_ = q.shape[q.shape.size() - 2], hs = q.shape.back();
    if (hs == 0) throw py::value_error(std::string(fn) + ": q has head size 0, shape " + shape_str(q.shape));
    return {T_ ? q.size() / (T_ * hs) : 0, T_, hs};
}

py::tuple attention_forward(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                            bool is_causal) {
    const char* fn = "attention_forward";
    const DeviceArray q = as_device_array(q_obj, fn, "q"), k = as_device_array(k_obj, fn, "k"),
                      v = as_device_array(v_obj, fn, "v");
    const Dtype d = float_dtype(q, fn, "q");
    const auto [BH, T_, hs] = attention_dims(q, fn);
    for (auto [a, name] : {std::pair{&k, "k"}, {&v, "v"}}) {
        check_same_dtype(*a, q, fn, name, "q");
        check_shape(*a, q.shape, fn, name);
    }
    require_device(fn);
    Shape ps = q.shape;
    ps.back() = T_;  // (..., T, T)
    const DeviceArray out = empty(q.shape, d), probs = empty(ps, d);
    dispatch(d, [&, BH = BH, T_ = T_, hs = hs](auto zero) {
        using T = decltype(zero);
        const auto heads = minigrad::HeadLayout::heads_first(T_, hs);  // (BH, T, hs)
        check_launch(mc::attention_forward(out.data<T>(), probs.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), BH,
                                           1, T_, hs, heads, heads, is_causal, current_stream()),
                     fn);
        return 0;
    });
    return py::make_tuple(out.obj, probs.obj);
}

py::tuple attention_backward(const py::object& dout_obj, const py::object& q_obj, const py::object& k_obj,
                             const py::object& v_obj, const py::object& probs_obj, bool /*is_causal*/) {
    // is_causal: accepted for the common signature (the C++ kernel needs it); the zeros of probs carry the mask
    const char* fn = "attention_backward";
    const DeviceArray q = as_device_array(q_obj, fn, "q"), k = as_device_array(k_obj, fn, "k"),
                      v = as_device_array(v_obj, fn, "v");
    const DeviceArray dout = as_device_array(dout_obj, fn, "dout"), probs = as_device_array(probs_obj, fn, "probs");
    const Dtype d = float_dtype(q, fn, "q");
    const auto [BH, T_, hs] = attention_dims(q, fn);
    Shape ps = q.shape;
    ps.back() = T_;
    for (auto [a, name, shape] :
         {std::tuple{&dout, "dout", q.shape}, {&k, "k", q.shape}, {&v, "v", q.shape}, {&probs, "probs", ps}}) {
        check_same_dtype(*a, q, fn, name, "q");
        check_shape(*a, shape, fn, name);
    }
    require_device(fn);
    const DeviceArray dq = empty(q.shape, d), dk = empty(q.shape, d), dv = empty(q.shape, d);
    const DeviceArray dscores = empty(ps, d);  // scratch: dS between the two passes
    dispatch(d, [&, BH = BH, T_ = T_, hs = hs](auto zero) {
        using T = decltype(zero);
        const auto heads = minigrad::HeadLayout::heads_first(T_, hs);
        check_launch(mc::attention_backward(dq.data<T>(), dk.data<T>(), dv.data<T>(), dscores.data<T>(),
                                            dout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), probs.data<T>(), BH,
                                            1, T_, hs, heads, heads, current_stream()),
                     fn);
        return 0;
    });
    return py::make_tuple(dq.obj, dk.obj, dv.obj);
}

// The optional bias (3C,) of qkv (B, T, 3C), checked (none: an empty DeviceArray).
DeviceArray qkv_bias(const py::object& b_obj, const DeviceArray& qkv, const char* fn) {
    if (b_obj.is_none()) return DeviceArray{};
    const DeviceArray b = as_device_array(b_obj, fn, "bias");
    check_same_dtype(b, qkv, fn, "bias", "qkv");
    check_shape(b, {qkv.shape[2]}, fn, "bias");
    return b;
}

// qkv itself, or qkv + bias in a new device array: the CUDA kernels read q, k, v as they lie.
template <class T>
const T* with_bias(const DeviceArray& qkv, const py::object& b_obj, const DeviceArray& b, DeviceArray& biased,
                   const char* fn) {
    if (b_obj.is_none()) return qkv.data<T>();
    biased = empty(qkv.shape, float_dtype(qkv, fn, "qkv"));
    check_launch(mc::add_row_bias(biased.data<T>(), qkv.data<T>(), b.data<T>(), qkv.size(), qkv.shape[2],
                                  current_stream()),
                 fn);
    return biased.data<T>();
}

py::tuple self_attention_forward(const py::object& qkv_obj, int64_t n_head, bool is_causal,
                                 const py::object& b_obj) {
    const char* fn = "self_attention_forward";
    const DeviceArray qkv = as_device_array(qkv_obj, fn, "qkv");
    const Dtype d = float_dtype(qkv, fn, "qkv");
    const auto [B, T_, C, hs] = minigrad::bindings::qkv_dims(qkv.shape, n_head, fn);
    const DeviceArray b = qkv_bias(b_obj, qkv, fn);
    require_device(fn);
    const DeviceArray out = empty({B, T_, C}, d), probs = empty({B, n_head, T_, T_}, d);
    DeviceArray biased;
    dispatch(d, [&, B = B, T_ = T_, C = C, hs = hs](auto zero) {
        using T = decltype(zero);
        const T* q = with_bias<T>(qkv, b_obj, b, biased, fn);
        const auto qkv_heads = minigrad::HeadLayout::side_by_side(T_, 3 * C, hs);
        const auto out_heads = minigrad::HeadLayout::side_by_side(T_, C, hs);
        check_launch(mc::attention_forward(out.data<T>(), probs.data<T>(), q, q + C, q + 2 * C, B, n_head, T_, hs,
                                           qkv_heads, out_heads, is_causal, current_stream()),
                     fn);
        return 0;
    });
    return py::make_tuple(out.obj, probs.obj);
}

py::object self_attention_backward(const py::object& dout_obj, const py::object& qkv_obj, const py::object& probs_obj,
                                   int64_t n_head, bool /*is_causal*/, const py::object& b_obj) {
    // is_causal: accepted for the common signature; the zeros of probs carry the mask, as in attention_backward
    const char* fn = "self_attention_backward";
    const DeviceArray qkv = as_device_array(qkv_obj, fn, "qkv");
    const DeviceArray dout = as_device_array(dout_obj, fn, "dout"), probs = as_device_array(probs_obj, fn, "probs");
    const Dtype d = float_dtype(qkv, fn, "qkv");
    const auto [B, T_, C, hs] = minigrad::bindings::qkv_dims(qkv.shape, n_head, fn);
    for (auto [a, name, shape] :
         {std::tuple{&dout, "dout", Shape{B, T_, C}}, {&probs, "probs", Shape{B, n_head, T_, T_}}}) {
        check_same_dtype(*a, qkv, fn, name, "qkv");
        check_shape(*a, shape, fn, name);
    }
    const DeviceArray b = qkv_bias(b_obj, qkv, fn);
    require_device(fn);
    const DeviceArray dqkv = empty(qkv.shape, d), dscores = empty({B, n_head, T_, T_}, d);
    DeviceArray biased;
    dispatch(d, [&, B = B, T_ = T_, C = C, hs = hs](auto zero) {
        using T = decltype(zero);
        const T* q = with_bias<T>(qkv, b_obj, b, biased, fn);
        T* dq = dqkv.data<T>();
        const auto qkv_heads = minigrad::HeadLayout::side_by_side(T_, 3 * C, hs);
        const auto out_heads = minigrad::HeadLayout::side_by_side(T_, C, hs);
        check_launch(mc::attention_backward(dq, dq + C, dq + 2 * C, dscores.data<T>(), dout.data<T>(), q, q + C,
                                            q + 2 * C, probs.data<T>(), B, n_head, T_, hs, qkv_heads, out_heads,
                                            current_stream()),
                     fn);
        return 0;
    });
    return dqkv.obj;
}

// --- cross-entropy ------------------------------------------------------------------------------

// logits (N, V) with N, V >= 1.
std::pair<int64_t, int64_t> logits_dims(const DeviceArray& logits, const char* fn, const char* name) {
    if (logits.shape.size() != 2 || logits.shape[0] == 0 || logits.shape[1] == 0)
        throw py::value_error(std::string(fn) + ": " + name + " must be a non-empty (N, V) array, got shape " +
                              shape_str(logits.shape));
    return {logits.shape[0], logits.shape[1]};
}

py::tuple crossentropy_forward(const py::object& logits_obj, const py::object& targets_obj) {
    const char* fn = "crossentropy_forward";
    const DeviceArray logits = as_device_array(logits_obj, fn, "logits"),
                      targets = as_device_array(targets_obj, fn, "targets");
    const Dtype d = float_dtype(logits, fn, "logits");
    const auto [N, V] = logits_dims(logits, fn, "logits");
    check_targets(targets, N, fn);
    require_device(fn);
    const DeviceArray loss = empty({}, d), probs = empty({N, V}, d);  // loss 0-d, like the reference's
    const DeviceArray row_losses = empty({N}, Dtype::f64);            // scratch
    dispatch(d, [&, N = N, V = V](auto zero) {
        using T = decltype(zero);
        check_launch(mc::crossentropy_forward(loss.data<T>(), probs.data<T>(), row_losses.data<double>(),
                                              logits.data<T>(), targets.data<int64_t>(), N, V, current_stream()),
                     fn);
        return 0;
    });
    return py::make_tuple(loss.obj, probs.obj);
}

py::object crossentropy_backward(double dloss, const py::object& probs_obj, const py::object& targets_obj) {
    const char* fn = "crossentropy_backward";
    const DeviceArray probs = as_device_array(probs_obj, fn, "probs"),
                      targets = as_device_array(targets_obj, fn, "targets");
    const Dtype d = float_dtype(probs, fn, "probs");
    const auto [N, V] = logits_dims(probs, fn, "probs");
    check_targets(targets, N, fn);
    require_device(fn);
    const DeviceArray dlogits = empty({N, V}, d);
    dispatch(d, [&, N = N, V = V](auto zero) {
        using T = decltype(zero);
        check_launch(mc::crossentropy_backward(dlogits.data<T>(), probs.data<T>(), targets.data<int64_t>(), dloss, N, V,
                                               current_stream()),
                     fn);
        return 0;
    });
    return dlogits.obj;
}

// --- the optimizer ------------------------------------------------------------------------------

std::vector<DeviceArray> array_list(const py::list& list, const char* fn, const char* name) {
    std::vector<DeviceArray> arrays;
    for (size_t i = 0; i < list.size(); ++i)
        arrays.push_back(as_device_array(list[i], fn, std::string(name) + "[" + std::to_string(i) + "]"));
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
    const auto p = array_list(params, fn, "params"), g = array_list(grads, fn, "grads");
    const auto m = array_list(ms, fn, "ms"), v = array_list(vs, fn, "vs");
    std::vector<Dtype> dtypes;
    for (size_t i = 0; i < p.size(); ++i) {
        const std::string idx = "[" + std::to_string(i) + "]";
        dtypes.push_back(float_dtype(p[i], fn, "params" + idx));
        for (auto [a, name] : {std::pair{&g[i], "grads"}, {&m[i], "ms"}, {&v[i], "vs"}}) {
            check_same_dtype(*a, p[i], fn, name + idx, "params" + idx);
            check_shape(*a, p[i].shape, fn, name + idx);
        }
        for (auto [a, name] : {std::pair{&p[i], "params"}, {&m[i], "ms"}, {&v[i], "vs"}})
            check_writeable(*a, fn, name + idx);
    }
    require_device(fn);
    const mc::Stream stream = current_stream();
    for (size_t i = 0; i < p.size(); ++i)
        dispatch(dtypes[i], [&](auto zero) {
            using T = decltype(zero);
            check_launch(mc::adamw_update(p[i].data<T>(), g[i].data<T>(), m[i].data<T>(), v[i].data<T>(), p[i].size(),
                                          lr, beta1, beta2, eps, weight_decay, step, stream),
                         fn);
            return 0;
        });
}

double global_norm(const py::list& grads) {
    const char* fn = "global_norm";
    const auto g = array_list(grads, fn, "grads");
    std::vector<Dtype> dtypes;
    for (size_t i = 0; i < g.size(); ++i) dtypes.push_back(float_dtype(g[i], fn, "grads[" + std::to_string(i) + "]"));
    require_device(fn);
    const auto count = static_cast<int64_t>(g.size()) * mc::kNormBlocks;
    const DeviceArray partials = empty({count + 1}, Dtype::f64);  // scratch: kNormBlocks per array, then the total
    const mc::Stream stream = current_stream();
    for (size_t i = 0; i < g.size(); ++i)
        dispatch(dtypes[i], [&](auto zero) {
            using T = decltype(zero);
            double* slot = partials.data<double>() + static_cast<int64_t>(i) * mc::kNormBlocks;
            check_launch(mc::sum_of_squares(slot, g[i].data<T>(), g[i].size(), stream), fn);
            return 0;
        });
    double total = 0.0;
    int code;
    {
        py::gil_scoped_release release;  // sum_partials waits for the stream
        code = mc::sum_partials(&total, partials.data<double>(), count, stream);
    }
    check_launch(code, fn);
    return std::sqrt(total);
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
    m.doc() = "minigrad's fused CUDA kernels (private: use minigrad.functional); same names and signatures as "
              "minigrad.kernels, on CuPy arrays";

    m.def("device_count", [] { return device_status().first; },
          "Number of CUDA devices the module's (statically linked) runtime can use; 0 without GPU or driver.");
    m.def("device_reason", [] { return device_status().second; }, "Why device_count() is 0 (empty otherwise).");
    m.def("runtime_version", &mc::runtime_version, "The CUDA runtime version compiled in, e.g. 13000 for 13.0.");
    m.attr("architectures") = MINIGRAD_CUDA_ARCHITECTURES;

    m.def("layernorm_forward", &layernorm_forward, py::arg("x"), py::arg("weight"), py::arg("bias").none(true),
          py::arg("eps"), "x (..., C), weight, bias (C,) or None -> (out (..., C), mean (...), rstd (...))");
    m.def("layernorm_backward", &layernorm_backward, py::arg("dout"), py::arg("x"), py::arg("weight"),
          py::arg("mean"), py::arg("rstd"), "-> (dx (..., C), dweight (C,), dbias (C,))");
    m.def("gelu_forward", &gelu_forward, py::arg("x"), py::arg("bias") = py::none(),
          "tanh-GELU of x + bias: x any shape without a bias, (..., C) with a bias (C,)");
    m.def("gelu_backward", &gelu_backward, py::arg("dout"), py::arg("x"), py::arg("bias") = py::none(),
          "-> dx, the shape of x (gelu'(x + bias) dout)");
    m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("is_causal"),
          "q, k, v (B, NH, T, hs) -> (out (B, NH, T, hs), probs (B, NH, T, T))");
    m.def("attention_backward", &attention_backward, py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("probs"), py::arg("is_causal") = true, "-> (dq, dk, dv), each (B, NH, T, hs)");
    m.def("self_attention_forward", &self_attention_forward, py::arg("qkv"), py::arg("n_head"), py::arg("is_causal"),
          py::arg("bias") = py::none(),
          "qkv (B, T, 3C), q, k, v side by side, heads side by side in each, plus bias (3C,) if given -> "
          "(out (B, T, C), probs (B, NH, T, T))");
    m.def("self_attention_backward", &self_attention_backward, py::arg("dout"), py::arg("qkv"), py::arg("probs"),
          py::arg("n_head"), py::arg("is_causal") = true, py::arg("bias") = py::none(),
          "-> dqkv (B, T, 3C), also the bias's gradient before the sum over rows");
    m.def("crossentropy_forward", &crossentropy_forward, py::arg("logits"), py::arg("targets"),
          "logits (N, V), targets int64 (N,) -> (mean loss as a 0-d array, probs (N, V)); a target outside "
          "[0, V) gives a NaN loss");
    m.def("crossentropy_backward", &crossentropy_backward, py::arg("dloss"), py::arg("probs"), py::arg("targets"),
          "-> dlogits (N, V) = dloss (probs - onehot(targets)) / N");
    m.def("adamw_update", &adamw_update, py::arg("params"), py::arg("grads"), py::arg("ms"), py::arg("vs"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step"),
          "One AdamW step, in place on every array of params, ms and vs (lists of CuPy arrays)");
    m.def("global_norm", &global_norm, py::arg("grads"), "sqrt(sum of every g^2) as a float (waits for the stream)");
}
