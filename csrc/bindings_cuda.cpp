// minigrad._C_cuda: the CUDA kernels of csrc/cuda/ on CuPy arrays (any object with
// __cuda_array_interface__), read in place through their device pointers. Per function: the checks
// every binding shares (bindings_checks.h); then, before any allocation, a missing CUDA device raises
// RuntimeError ("no CUDA device is usable"); then the launch. Outputs and scratch buffers come from
// cupy.empty (CuPy's memory pool) and every kernel runs on CuPy's current stream, so it is ordered with
// the CuPy work around it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings_checks.h"
#include "cuda/kernels.h"

namespace mc = minigrad::cuda;

namespace minigrad::bindings {

// What __cuda_array_interface__ (version 2 or 3) says of an array, as a view.
ArrayView view(const py::handle& obj, const char* fn, const std::string& name) {
    if (!py::hasattr(obj, "__cuda_array_interface__"))
        throw py::type_error(std::string(fn) + ": " + name + " must be a CuPy array (an object with " +
                             "__cuda_array_interface__), got " +
                             py::str(py::type::of(obj).attr("__name__")).cast<std::string>() +
                             "; move it with cupy.asarray(" + name + ") or Tensor.to('cuda')");
    const py::dict cai = obj.attr("__cuda_array_interface__");
    if (cai.contains("mask") && !cai["mask"].is_none())
        throw py::value_error(std::string(fn) + ": " + name + " is a masked array; pass a plain CuPy array");
    const auto typestr = cai["typestr"].cast<std::string>();  // e.g. "<f4": byte order, kind, item size
    const auto data = cai["data"].cast<py::tuple>();
    const bool has_strides = cai.contains("strides") && !cai["strides"].is_none();
    return make_view(obj,
                     {reinterpret_cast<void*>(data[0].cast<std::uintptr_t>()), cai["shape"].cast<Shape>(),
                      has_strides ? cai["strides"].cast<Shape>() : Shape{}, typestr[1], std::stoll(typestr.substr(2)),
                      typestr[0], data[1].cast<bool>()},
                     fn, name);
}

// NOTE: scratch arrays are freed when the call returns, before the kernels ran; that is safe because
// CuPy's pool hands a freed block to later work on the same stream only, which runs after ours.
ArrayView empty(const Shape& shape, Dtype dtype) {
    const py::object array = py::module_::import("cupy").attr("empty")(py::tuple(py::cast(shape)), numpy_name(dtype));
    return view(array, "cupy.empty", "out");
}

namespace {

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

void check_launch(int code, const char* fn) {
    if (code != 0) throw std::runtime_error(std::string(fn) + ": CUDA error " + mc::error_string(code));
}

// Launches body(float{}) or body(double{}), as dtype says; body returns the launcher's error code.
template <class Body>
void launch(const char* fn, Dtype dtype, Body&& body) {
    check_launch(with_float_type(dtype, body), fn);
}

// The indices' range, checked on the device by the kernel that just ran: it set the flag `bad` when one
// was outside [0, n). Reading the flag waits for the stream: one device-to-host read per call (a later
// GPU issue moves it next to the loss's read). Only when it is set are the indices copied back, to name
// the first bad one.
void check_bad_flag(const ArrayView& bad, const ArrayView& ids, int64_t n, const char* fn) {
    const mc::Stream stream = current_stream();
    int64_t flag = 0;
    int code;
    {
        py::gil_scoped_release release;  // the copy waits for the stream
        code = mc::copy_to_host(&flag, bad.ptr, sizeof flag, stream);
    }
    check_launch(code, fn);
    if (flag == 0) return;
    std::vector<int64_t> values(static_cast<size_t>(ids.size()));
    check_launch(mc::copy_to_host(values.data(), ids.ptr, ids.size() * int64_t(sizeof(int64_t)), stream), fn);
    check_index_values(values.data(), ids, n);
}

}  // namespace

py::tuple layernorm_forward(const py::object& x, const py::object& weight, const py::object& bias, double eps) {
    const char* fn = "layernorm_forward";
    const auto a = check_layernorm_forward(x, weight, bias);
    require_device(fn);
    const ArrayView out = empty(a.x.shape, a.x.dtype), mean = empty(a.dims.rows, a.x.dtype),
                    rstd = empty(a.dims.rows, a.x.dtype);
    launch(fn, a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::layernorm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), a.x.data<T>(), a.weight.data<T>(),
                                     a.bias.data<T>(), a.dims.N, a.dims.C, static_cast<T>(eps), current_stream());
    });
    return py::make_tuple(out.obj, mean.obj, rstd.obj);
}

py::tuple layernorm_backward(const py::object& dout, const py::object& x, const py::object& weight,
                             const py::object& mean, const py::object& rstd) {
    const char* fn = "layernorm_backward";
    const auto a = check_layernorm_backward(dout, x, weight, mean, rstd);
    require_device(fn);
    const ArrayView dx = empty(a.x.shape, a.x.dtype), dweight = empty({a.dims.C}, a.x.dtype),
                    dbias = empty({a.dims.C}, a.x.dtype);
    launch(fn, a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::layernorm_backward(dx.data<T>(), dweight.data<T>(), dbias.data<T>(), a.dout.data<T>(),
                                      a.x.data<T>(), a.weight.data<T>(), a.mean.data<T>(), a.rstd.data<T>(), a.dims.N,
                                      a.dims.C, current_stream());
    });
    return py::make_tuple(dx.obj, dweight.obj, dbias.obj);
}

py::object gelu_forward(const py::object& x) {
    const char* fn = "gelu_forward";
    const auto a = check_gelu_forward(x);
    require_device(fn);
    const ArrayView out = empty(a.x.shape, a.x.dtype);
    launch(fn, a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::gelu_forward(out.data<T>(), a.x.data<T>(), a.x.size(), current_stream());
    });
    return out.obj;
}

py::object gelu_backward(const py::object& dout, const py::object& x) {
    const char* fn = "gelu_backward";
    const auto a = check_gelu_backward(dout, x);
    require_device(fn);
    const ArrayView dx = empty(a.x.shape, a.x.dtype);
    launch(fn, a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::gelu_backward(dx.data<T>(), a.dout.data<T>(), a.x.data<T>(), a.x.size(), current_stream());
    });
    return dx.obj;
}

py::tuple attention_forward(const py::object& q, const py::object& k, const py::object& v, bool is_causal) {
    const char* fn = "attention_forward";
    const auto a = check_attention_forward(q, k, v);
    require_device(fn);
    const ArrayView out = empty(a.q.shape, a.q.dtype), lse = empty(a.lse_shape, a.q.dtype);
    const ArrayView probs = empty({a.BH, a.T, a.T}, a.q.dtype);  // scratch
    const auto heads = minigrad::HeadLayout::heads_first(a.T, a.hs);  // (BH, T, hs)
    launch(fn, a.q.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::attention_forward(out.data<T>(), lse.data<T>(), probs.data<T>(), a.q.data<T>(), a.k.data<T>(),
                                     a.v.data<T>(), a.BH, 1, a.T, a.hs, heads, heads, is_causal, current_stream());
    });
    return py::make_tuple(out.obj, lse.obj);
}

py::tuple attention_backward(const py::object& dout, const py::object& q, const py::object& k, const py::object& v,
                             const py::object& lse, bool is_causal) {
    const char* fn = "attention_backward";
    const auto a = check_attention_backward(dout, q, k, v, lse);
    require_device(fn);
    const Shape& shape = a.q.shape;
    const ArrayView dq = empty(shape, a.q.dtype), dk = empty(shape, a.q.dtype), dv = empty(shape, a.q.dtype);
    const Shape scores{a.BH, a.T, a.T};
    const ArrayView probs = empty(scores, a.q.dtype), dscores = empty(scores, a.q.dtype);  // scratch
    const auto heads = minigrad::HeadLayout::heads_first(a.T, a.hs);
    launch(fn, a.q.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::attention_backward(dq.data<T>(), dk.data<T>(), dv.data<T>(), probs.data<T>(), dscores.data<T>(),
                                      a.dout.data<T>(), a.q.data<T>(), a.k.data<T>(), a.v.data<T>(), a.lse.data<T>(),
                                      a.BH, 1, a.T, a.hs, heads, heads, is_causal, current_stream());
    });
    return py::make_tuple(dq.obj, dk.obj, dv.obj);
}

py::tuple self_attention_forward(const py::object& qkv, int64_t n_head, bool is_causal) {
    const char* fn = "self_attention_forward";
    const auto a = check_self_attention_forward(qkv, n_head);
    require_device(fn);
    const ArrayView out = empty({a.B, a.T, a.C}, a.qkv.dtype), lse = empty({a.B, a.NH, a.T}, a.qkv.dtype);
    const ArrayView probs = empty({a.B, a.NH, a.T, a.T}, a.qkv.dtype);  // scratch
    const auto qkv_heads = minigrad::HeadLayout::side_by_side(a.T, 3 * a.C, a.hs);
    const auto out_heads = minigrad::HeadLayout::side_by_side(a.T, a.C, a.hs);
    launch(fn, a.qkv.dtype, [&](auto zero) {
        using T = decltype(zero);
        const T* q = a.qkv.data<T>();
        return mc::attention_forward(out.data<T>(), lse.data<T>(), probs.data<T>(), q, q + a.C, q + 2 * a.C, a.B,
                                     a.NH, a.T, a.hs, qkv_heads, out_heads, is_causal, current_stream());
    });
    return py::make_tuple(out.obj, lse.obj);
}

py::object self_attention_backward(const py::object& dout, const py::object& qkv, const py::object& lse,
                                   int64_t n_head, bool is_causal) {
    const char* fn = "self_attention_backward";
    const auto a = check_self_attention_backward(dout, qkv, lse, n_head);
    require_device(fn);
    const ArrayView dqkv = empty(a.qkv.shape, a.qkv.dtype);
    const Shape scores{a.B, a.NH, a.T, a.T};
    const ArrayView probs = empty(scores, a.qkv.dtype), dscores = empty(scores, a.qkv.dtype);  // scratch
    const auto qkv_heads = minigrad::HeadLayout::side_by_side(a.T, 3 * a.C, a.hs);
    const auto out_heads = minigrad::HeadLayout::side_by_side(a.T, a.C, a.hs);
    launch(fn, a.qkv.dtype, [&](auto zero) {
        using T = decltype(zero);
        const T* q = a.qkv.data<T>();
        T* dq = dqkv.data<T>();
        return mc::attention_backward(dq, dq + a.C, dq + 2 * a.C, probs.data<T>(), dscores.data<T>(),
                                      a.dout.data<T>(), q, q + a.C, q + 2 * a.C, a.lse.data<T>(), a.B, a.NH, a.T,
                                      a.hs, qkv_heads, out_heads, is_causal, current_stream());
    });
    return dqkv.obj;
}

py::tuple crossentropy_forward(const py::object& logits, const py::object& targets) {
    const char* fn = "crossentropy_forward";
    const auto a = check_crossentropy_forward(logits, targets);
    require_device(fn);
    const ArrayView loss = empty({}, a.rows.dtype), probs = empty(a.rows.shape, a.rows.dtype);  // loss 0-d
    const ArrayView row_losses = empty({a.N}, Dtype::float64), bad = empty({1}, Dtype::int64);  // scratch
    launch(fn, a.rows.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::crossentropy_forward(loss.data<T>(), probs.data<T>(), row_losses.data<double>(),
                                        bad.data<int64_t>(), a.rows.data<T>(), a.targets.data<int64_t>(), a.N, a.V,
                                        current_stream());
    });
    check_bad_flag(bad, a.targets, a.V, fn);
    return py::make_tuple(loss.obj, probs.obj);
}

py::object crossentropy_backward(double dloss, const py::object& probs, const py::object& targets) {
    const char* fn = "crossentropy_backward";
    const auto a = check_crossentropy_backward(probs, targets);
    require_device(fn);
    const ArrayView dlogits = empty(a.rows.shape, a.rows.dtype), bad = empty({1}, Dtype::int64);
    launch(fn, a.rows.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::crossentropy_backward(dlogits.data<T>(), bad.data<int64_t>(), a.rows.data<T>(),
                                         a.targets.data<int64_t>(), dloss, a.N, a.V, current_stream());
    });
    check_bad_flag(bad, a.targets, a.V, fn);
    return dlogits.obj;
}

py::object embedding_backward(const py::object& dout, const py::object& ids, int64_t num_embeddings) {
    const char* fn = "embedding_backward";
    const auto a = check_embedding_backward(dout, ids, num_embeddings);
    require_device(fn);
    const ArrayView dweight = empty({a.V, a.C}, a.dout.dtype), bad = empty({1}, Dtype::int64);
    launch(fn, a.dout.dtype, [&](auto zero) {
        using T = decltype(zero);
        return mc::embedding_backward(dweight.data<T>(), bad.data<int64_t>(), a.dout.data<T>(), a.ids.data<int64_t>(),
                                      a.N, a.C, a.V, current_stream());
    });
    check_bad_flag(bad, a.ids, a.V, fn);
    return dweight.obj;
}

void adamw_update(const py::list& params, const py::list& grads, const py::list& ms, const py::list& vs, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step) {
    const char* fn = "adamw_update";
    const auto a = check_adamw_update(params, grads, ms, vs, step);
    require_device(fn);
    const mc::Stream stream = current_stream();
    for (size_t i = 0; i < a.params.size(); ++i)
        launch(fn, a.params[i].dtype, [&](auto zero) {
            using T = decltype(zero);
            return mc::adamw_update(a.params[i].data<T>(), a.grads[i].data<T>(), a.ms[i].data<T>(), a.vs[i].data<T>(),
                                    a.params[i].size(), lr, beta1, beta2, eps, weight_decay, step, stream);
        });
}

double global_norm(const py::list& grads) {
    const char* fn = "global_norm";
    const auto g = check_global_norm(grads);
    require_device(fn);
    const auto count = static_cast<int64_t>(g.size()) * mc::kNormBlocks;
    const ArrayView partials = empty({count + 1}, Dtype::float64);  // scratch: kNormBlocks per array, then the total
    const mc::Stream stream = current_stream();
    for (size_t i = 0; i < g.size(); ++i)
        launch(fn, g[i].dtype, [&](auto zero) {
            using T = decltype(zero);
            double* slot = partials.data<double>() + static_cast<int64_t>(i) * mc::kNormBlocks;
            return mc::sum_of_squares(slot, g[i].data<T>(), g[i].size(), stream);
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

}  // namespace minigrad::bindings

namespace py = pybind11;
using minigrad::bindings::device_status;

PYBIND11_MODULE(_C_cuda, m) {
    m.doc() = "minigrad's fused CUDA kernels (private: use minigrad.functional); same names and signatures as "
              "minigrad.kernels, on CuPy arrays";

    m.def("device_count", [] { return device_status().first; },
          "Number of CUDA devices the module's (statically linked) runtime can use; 0 without GPU or driver.");
    m.def("device_reason", [] { return device_status().second; }, "Why device_count() is 0 (empty otherwise).");
    m.def("runtime_version", &mc::runtime_version, "The CUDA runtime version compiled in, e.g. 13000 for 13.0.");
    m.attr("architectures") = MINIGRAD_CUDA_ARCHITECTURES;

    minigrad::bindings::def_kernels(m);
}
