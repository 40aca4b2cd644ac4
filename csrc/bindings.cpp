// minigrad._C: the CPU kernels of csrc/cpu/ on NumPy arrays. Per function: the checks every binding
// shares (bindings_checks.h), then the call. Arrays are taken as they are, never converted; outputs are
// fresh arrays; the GIL is released while the kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "bindings_checks.h"
#include "cpu/adamw.h"
#include "cpu/attention.h"
#include "cpu/crossentropy.h"
#include "cpu/embedding.h"
#include "cpu/gelu.h"
#include "cpu/layernorm.h"
#include "cpu/memory.h"
#include "cpu/threads.h"

namespace minigrad::bindings {

// A NumPy array as a view.
ArrayView view(const py::handle& obj, const char* fn, const std::string& name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(fn) + ": " + name + " must be a NumPy array, got " +
                             py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    const auto a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dtype = a.dtype();
    return make_view(obj,
                     {const_cast<void*>(a.data()), Shape(a.shape(), a.shape() + a.ndim()),
                      Shape(a.strides(), a.strides() + a.ndim()), dtype.kind(), dtype.itemsize(),
                      dtype.attr("byteorder").cast<std::string>()[0], !a.writeable()},
                     fn, name);
}

ArrayView empty(const Shape& shape, Dtype dtype) {
    return view(py::array(py::dtype(numpy_name(dtype)), shape), "empty", "out");
}

namespace {

// Runs body(float{}) or body(double{}), as dtype says, without the GIL.
template <class Body>
void run(Dtype dtype, Body&& body) {
    py::gil_scoped_release release;
    with_float_type(dtype, body);
}

}  // namespace

py::tuple layernorm_forward(const py::object& x, const py::object& weight, const py::object& bias, double eps) {
    const auto a = check_layernorm_forward(x, weight, bias);
    const ArrayView out = empty(a.x.shape, a.x.dtype), mean = empty(a.dims.rows, a.x.dtype),
                    rstd = empty(a.dims.rows, a.x.dtype);
    run(a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::layernorm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), a.x.data<T>(), a.weight.data<T>(),
                                    a.bias.data<T>(), a.dims.N, a.dims.C, static_cast<T>(eps));
    });
    return py::make_tuple(out.obj, mean.obj, rstd.obj);
}

py::tuple layernorm_backward(const py::object& dout, const py::object& x, const py::object& weight,
                             const py::object& mean, const py::object& rstd) {
    const auto a = check_layernorm_backward(dout, x, weight, mean, rstd);
    const Shape C{a.dims.C};
    const ArrayView dx = empty(a.x.shape, a.x.dtype), dweight = empty(C, a.x.dtype), dbias = empty(C, a.x.dtype);
    run(a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::layernorm_backward(dx.data<T>(), dweight.data<T>(), dbias.data<T>(), a.dout.data<T>(),
                                     a.x.data<T>(), a.weight.data<T>(), a.mean.data<T>(), a.rstd.data<T>(), a.dims.N,
                                     a.dims.C);
    });
    return py::make_tuple(dx.obj, dweight.obj, dbias.obj);
}

py::object gelu_forward(const py::object& x) {
    const auto a = check_gelu_forward(x);
    const ArrayView out = empty(a.x.shape, a.x.dtype);
    run(a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::gelu_forward(out.data<T>(), a.x.data<T>(), a.x.size());
    });
    return out.obj;
}

py::object gelu_backward(const py::object& dout, const py::object& x) {
    const auto a = check_gelu_backward(dout, x);
    const ArrayView dx = empty(a.x.shape, a.x.dtype);
    run(a.x.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::gelu_backward(dx.data<T>(), a.dout.data<T>(), a.x.data<T>(), a.x.size());
    });
    return dx.obj;
}

py::tuple attention_forward(const py::object& q, const py::object& k, const py::object& v, bool is_causal) {
    const auto a = check_attention_forward(q, k, v);
    const ArrayView out = empty(a.q.shape, a.q.dtype), lse = empty(a.lse_shape, a.q.dtype);
    const auto heads = minigrad::HeadLayout::heads_first(a.T, a.hs);  // (BH, T, hs)
    run(a.q.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::attention_forward(out.data<T>(), lse.data<T>(), a.q.data<T>(), a.k.data<T>(), a.v.data<T>(), a.BH,
                                    1, a.T, a.hs, heads, heads, is_causal);
    });
    return py::make_tuple(out.obj, lse.obj);
}

py::tuple attention_backward(const py::object& dout, const py::object& q, const py::object& k, const py::object& v,
                             const py::object& lse, bool is_causal) {
    const auto a = check_attention_backward(dout, q, k, v, lse);
    const Shape& shape = a.q.shape;
    const ArrayView dq = empty(shape, a.q.dtype), dk = empty(shape, a.q.dtype), dv = empty(shape, a.q.dtype);
    const auto heads = minigrad::HeadLayout::heads_first(a.T, a.hs);
    run(a.q.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::attention_backward(dq.data<T>(), dk.data<T>(), dv.data<T>(), a.dout.data<T>(), a.q.data<T>(),
                                     a.k.data<T>(), a.v.data<T>(), a.lse.data<T>(), a.BH, 1, a.T, a.hs, heads, heads,
                                     is_causal);
    });
    return py::make_tuple(dq.obj, dk.obj, dv.obj);
}

py::tuple self_attention_forward(const py::object& qkv, int64_t n_head, bool is_causal) {
    const auto a = check_self_attention_forward(qkv, n_head);
    const ArrayView out = empty({a.B, a.T, a.C}, a.qkv.dtype), lse = empty({a.B, a.NH, a.T}, a.qkv.dtype);
    const auto qkv_heads = minigrad::HeadLayout::side_by_side(a.T, 3 * a.C, a.hs);
    const auto out_heads = minigrad::HeadLayout::side_by_side(a.T, a.C, a.hs);
    run(a.qkv.dtype, [&](auto zero) {
        using T = decltype(zero);
        const T* q = a.qkv.data<T>();
        minigrad::attention_forward(out.data<T>(), lse.data<T>(), q, q + a.C, q + 2 * a.C, a.B, a.NH, a.T, a.hs,
                                    qkv_heads, out_heads, is_causal);
    });
    return py::make_tuple(out.obj, lse.obj);
}

py::object self_attention_backward(const py::object& dout, const py::object& qkv, const py::object& lse,
                                   int64_t n_head, bool is_causal) {
    const auto a = check_self_attention_backward(dout, qkv, lse, n_head);
    const ArrayView dqkv = empty(a.qkv.shape, a.qkv.dtype);
    const auto qkv_heads = minigrad::HeadLayout::side_by_side(a.T, 3 * a.C, a.hs);
    const auto out_heads = minigrad::HeadLayout::side_by_side(a.T, a.C, a.hs);
    run(a.qkv.dtype, [&](auto zero) {
        using T = decltype(zero);
        const T* q = a.qkv.data<T>();
        T* dq = dqkv.data<T>();
        minigrad::attention_backward(dq, dq + a.C, dq + 2 * a.C, a.dout.data<T>(), q, q + a.C, q + 2 * a.C,
                                     a.lse.data<T>(), a.B, a.NH, a.T, a.hs, qkv_heads, out_heads, is_causal);
    });
    return dqkv.obj;
}

py::tuple crossentropy_forward(const py::object& logits, const py::object& targets) {
    const auto a = check_crossentropy_forward(logits, targets);
    check_index_values(a.targets.data<int64_t>(), a.targets, a.V);
    const ArrayView loss = empty({}, a.rows.dtype), probs = empty(a.rows.shape, a.rows.dtype);  // loss 0-d
    run(a.rows.dtype, [&](auto zero) {
        using T = decltype(zero);
        *loss.data<T>() = static_cast<T>(minigrad::crossentropy_forward(probs.data<T>(), a.rows.data<T>(),
                                                                        a.targets.data<int64_t>(), a.N, a.V));
    });
    return py::make_tuple(loss.obj, probs.obj);
}

py::object crossentropy_backward(double dloss, const py::object& probs, const py::object& targets) {
    const auto a = check_crossentropy_backward(probs, targets);
    check_index_values(a.targets.data<int64_t>(), a.targets, a.V);
    const ArrayView dlogits = empty(a.rows.shape, a.rows.dtype);
    run(a.rows.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::crossentropy_backward(dlogits.data<T>(), a.rows.data<T>(), a.targets.data<int64_t>(), dloss, a.N,
                                        a.V);
    });
    return dlogits.obj;
}

py::object embedding_backward(const py::object& dout, const py::object& ids, int64_t num_embeddings) {
    const auto a = check_embedding_backward(dout, ids, num_embeddings);
    check_index_values(a.ids.data<int64_t>(), a.ids, a.V);
    const ArrayView dweight = empty({a.V, a.C}, a.dout.dtype);
    run(a.dout.dtype, [&](auto zero) {
        using T = decltype(zero);
        minigrad::embedding_backward(dweight.data<T>(), a.dout.data<T>(), a.ids.data<int64_t>(), a.N, a.C, a.V);
    });
    return dweight.obj;
}

void adamw_update(const py::list& params, const py::list& grads, const py::list& ms, const py::list& vs, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step) {
    const auto a = check_adamw_update(params, grads, ms, vs, step);
    for (size_t i = 0; i < a.params.size(); ++i)
        run(a.params[i].dtype, [&](auto zero) {
            using T = decltype(zero);
            minigrad::adamw_update(a.params[i].data<T>(), a.grads[i].data<T>(), a.ms[i].data<T>(), a.vs[i].data<T>(),
                                   a.params[i].size(), lr, beta1, beta2, eps, weight_decay, step);
        });
}

double global_norm(const py::list& grads) {
    const auto g = check_global_norm(grads);
    double total = 0.0;
    for (const ArrayView& a : g)
        run(a.dtype, [&](auto zero) {
            using T = decltype(zero);
            total += minigrad::sum_of_squares(a.data<T>(), a.size());
        });
    return std::sqrt(total);
}

}  // namespace minigrad::bindings

namespace py = pybind11;

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
    minigrad::bindings::def_kernels(m);
}
