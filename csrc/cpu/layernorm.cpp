#include "cpu/layernorm.h"

#include <cmath>
#include <vector>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

// Rows [begin, end) of the forward; see layernorm.h.
template <class T>
MINIGRAD_SIMD_CLONES static void layernorm_forward_rows(T* out, T* mean, T* rstd, const T* x, const T* weight,
                                                        const T* bias, int64_t begin, int64_t end, int64_t C, T eps) {
    for (int64_t n = begin; n < end; ++n) {
        const T* xn = x + n * C;  // (C,)
        T* on = out + n * C;
        const T m = lane_sum<T>(C, [xn](int64_t i) { return xn[i]; }) / T(C);
        // NOTE: the variance from the centred values, not E[x^2] - m^2, which cancels badly.
        const T var = lane_sum<T>(C, [xn, m](int64_t i) { return (xn[i] - m) * (xn[i] - m); }) / T(C);
        const T s = T(1) / std::sqrt(var + eps);
        if (bias != nullptr)
            for (int64_t i = 0; i < C; ++i) on[i] = (xn[i] - m) * s * weight[i] + bias[i];
        else
            for (int64_t i = 0; i < C; ++i) on[i] = (xn[i] - m) * s * weight[i];
        mean[n] = m;
        rstd[n] = s;
    }
}

template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       T eps) {
    parallel_for(N, num_chunks(N, 8.0 * C), [=](int, int64_t begin, int64_t end) {
        layernorm_forward_rows(out, mean, rstd, x, weight, bias, begin, end, C, eps);
    });
}

// Rows [begin, end) of the backward: dx, and this chunk's sums of dweight (dw) and dbias (db) in double.
template <class T>
MINIGRAD_SIMD_CLONES static void layernorm_backward_rows(T* dx, double* dw, double* db, const T* dout, const T* x,
                                                         const T* weight, const T* mean, const T* rstd,
                                                         int64_t begin, int64_t end, int64_t C) {
    for (int64_t n = begin; n < end; ++n) {
        const T* xn = x + n * C;
        const T* dn = dout + n * C;
        T* dxn = dx + n * C;
        const T m = mean[n], s = rstd[n];
        const T mean_g = lane_sum<T>(C, [=](int64_t i) { return dn[i] * weight[i]; }) / T(C);
        const T mean_gx = lane_sum<T>(C, [=](int64_t i) { return dn[i] * weight[i] * ((xn[i] - m) * s); }) / T(C);
        for (int64_t i = 0; i < C; ++i) {
            const T xhat = (xn[i] - m) * s;
            dxn[i] = s * (dn[i] * weight[i] - mean_g - xhat * mean_gx);
            dw[i] += static_cast<double>(dn[i] * xhat);
            db[i] += static_cast<double>(dn[i]);
        }
    }
}

template <class T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, int64_t N, int64_t C) {
    // Each chunk sums its rows' dweight and dbias in double in a buffer of its own; the chunks
    // add up at the end in chunk order, so the result does not depend on timing.
    const int chunks = num_chunks(N, 12.0 * C);
    std::vector<double> partial(static_cast<size_t>(chunks) * 2 * C, 0.0);  // (chunks, 2, C)
    parallel_for(N, chunks, [=, &partial](int chunk, int64_t begin, int64_t end) {
        double* dw = partial.data() + static_cast<size_t>(chunk) * 2 * C;  // (C,)
        layernorm_backward_rows(dx, dw, dw + C, dout, x, weight, mean, rstd, begin, end, C);
    });
    for (int64_t i = 0; i < C; ++i) {
        double w = 0.0, b = 0.0;
        for (int c = 0; c < chunks; ++c) {
            w += partial[static_cast<size_t>(c) * 2 * C + i];
            b += partial[static_cast<size_t>(c) * 2 * C + C + i];
        }
        dweight[i] = static_cast<T>(w);
        dbias[i] = static_cast<T>(b);
    }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                       int64_t, float);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*, const double*,
                                        int64_t, int64_t, double);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int64_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, int64_t, int64_t);

}  // namespace minigrad
