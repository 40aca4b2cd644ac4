#include "cpu/gelu.h"

#include <algorithm>
#include <cmath>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

// NOTE: 0.5 (1 + tanh(u)) = sigmoid(2u), and 1 + tanh(u) computed as such loses every digit for
// very negative x. With e = exp(-|2u|) in (0, 1] (never overflows): sigmoid(2u) = 1/(1+e) for
// u >= 0 and e/(1+e) for u < 0, and sigmoid(2u) (1 - sigmoid(2u)) = e/(1+e)^2 either way.
// Both kernels compute these branch-free so that the loops vectorise.
constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;

// Elements per chunk below which a thread is not worth starting: ~40 operations each.
constexpr double kGeluWorkPerElement = 40.0;

// Both kernels walk [begin, end) in pieces [i0, i1) that each lie in one row of C numbers, i0 in
// column c, so that the loop over a piece reads bias[c ...] contiguously and vectorises. (Plain loops,
// not a helper taking a lambda: GCC would compile the lambda once for baseline x86-64, outside the
// SIMD clones.)

// z = x[i], plus bias[c + i - i0] when kBias, for the element i of a piece that starts at i0 in
// column c. A compile-time choice: a run-time test of the bias pointer inside the loop would keep
// GCC from vectorising it (measured: 5x slower).
template <bool kBias, class T>
MINIGRAD_INLINE static T input_at(const T* x, const T* bias, int64_t i, int64_t i0, int64_t c) {
    if constexpr (kBias)
        return x[i] + bias[c + (i - i0)];
    else
        return x[i];
}

// s = sigmoid(2u) and s (1 - s) = e/(1+e)^2 for u = sqrt(2/pi) (z + 0.044715 z^3), branch-free
template <class T>
MINIGRAD_INLINE static void sigmoid_2u(T u, T& s, T& slope) {
    const T e = vexp(-std::fabs(T(2) * u));
    const T inv = T(1) / (T(1) + e);
    s = u >= T(0) ? inv : e * inv;
    slope = e * inv * inv;
}

// out[i] = gelu(z_i) for i in [begin, end)
template <bool kBias, class T>
MINIGRAD_SIMD_CLONES static void gelu_forward_range(T* out, const T* x, const T* bias, int64_t C, int64_t begin,
                                                    int64_t end) {
    for (int64_t i0 = begin, i1; i0 < end; i0 = i1) {
        const int64_t c = i0 % C;
        i1 = std::min(end, i0 - c + C);
        for (int64_t i = i0; i < i1; ++i) {
            const T z = input_at<kBias>(x, bias, i, i0, c);
            T sig, slope;
            sigmoid_2u(T(kGeluScale) * (z + T(kGeluCubic) * z * z * z), sig, slope);
            out[i] = z * sig;  // (the slope goes unused here; the compiler drops it)
        }
    }
}

// dx[i] = dout[i] gelu'(z_i) for i in [begin, end)
template <bool kBias, class T>
MINIGRAD_SIMD_CLONES static void gelu_backward_range(T* dx, const T* dout, const T* x, const T* bias, int64_t C,
                                                     int64_t begin, int64_t end) {
    for (int64_t i0 = begin, i1; i0 < end; i0 = i1) {
        const int64_t c = i0 % C;
        i1 = std::min(end, i0 - c + C);
        for (int64_t i = i0; i < i1; ++i) {
            const T z = input_at<kBias>(x, bias, i, i0, c);
            const T du = T(kGeluScale) * (T(1) + T(3 * kGeluCubic) * z * z);  // du/dz
            T sig, slope;
            sigmoid_2u(T(kGeluScale) * (z + T(kGeluCubic) * z * z * z), sig, slope);
            // d/dz [z sigmoid(2u)] = sigmoid(2u) + 2 z sigmoid(2u) (1 - sigmoid(2u)) du/dz
            dx[i] = dout[i] * (sig + T(2) * z * slope * du);
        }
    }
}

template <class T>
void gelu_forward(T* out, const T* x, const T* bias, int64_t n, int64_t C) {
    parallel_for(n, num_chunks(n, kGeluWorkPerElement), [=](int, int64_t begin, int64_t end) {
        if (bias)
            gelu_forward_range<true>(out, x, bias, C, begin, end);
        else
            gelu_forward_range<false>(out, x, bias, n, begin, end);  // all of x as one row
    });
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, const T* bias, int64_t n, int64_t C) {
    parallel_for(n, num_chunks(n, kGeluWorkPerElement), [=](int, int64_t begin, int64_t end) {
        if (bias)
            gelu_backward_range<true>(dx, dout, x, bias, C, begin, end);
        else
            gelu_backward_range<false>(dx, dout, x, bias, n, begin, end);
    });
}

template void gelu_forward<float>(float*, const float*, const float*, int64_t, int64_t);
template void gelu_forward<double>(double*, const double*, const double*, int64_t, int64_t);
template void gelu_backward<float>(float*, const float*, const float*, const float*, int64_t, int64_t);
template void gelu_backward<double>(double*, const double*, const double*, const double*, int64_t, int64_t);

}  // namespace minigrad
