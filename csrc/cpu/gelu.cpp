#include "cpu/gelu.h"

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

// s = sigmoid(2u) and s (1 - s) = e/(1+e)^2 for u = sqrt(2/pi) (x + 0.044715 x^3), branch-free
template <class T>
MINIGRAD_INLINE static void sigmoid_2u(T u, T& s, T& slope) {
    const T e = vexp(-std::fabs(T(2) * u));
    const T inv = T(1) / (T(1) + e);
    s = u >= T(0) ? inv : e * inv;
    slope = e * inv * inv;
}

// out[i] = gelu(x[i]) for i in [begin, end)
template <class T>
MINIGRAD_SIMD_CLONES static void gelu_forward_range(T* out, const T* x, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        const T z = x[i];
        T sig, slope;
        sigmoid_2u(T(kGeluScale) * (z + T(kGeluCubic) * z * z * z), sig, slope);
        out[i] = z * sig;  // (the slope goes unused here; the compiler drops it)
    }
}

// dx[i] = dout[i] gelu'(x[i]) for i in [begin, end)
template <class T>
MINIGRAD_SIMD_CLONES static void gelu_backward_range(T* dx, const T* dout, const T* x, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        const T z = x[i];
        const T du = T(kGeluScale) * (T(1) + T(3 * kGeluCubic) * z * z);  // du/dx
        T sig, slope;
        sigmoid_2u(T(kGeluScale) * (z + T(kGeluCubic) * z * z * z), sig, slope);
        // d/dx [x sigmoid(2u)] = sigmoid(2u) + 2 x sigmoid(2u) (1 - sigmoid(2u)) du/dx
        dx[i] = dout[i] * (sig + T(2) * z * slope * du);
    }
}

template <class T>
void gelu_forward(T* out, const T* x, int64_t n) {
    parallel_for(n, num_chunks(n, kGeluWorkPerElement),
                 [=](int, int64_t begin, int64_t end) { gelu_forward_range(out, x, begin, end); });
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n) {
    parallel_for(n, num_chunks(n, kGeluWorkPerElement),
                 [=](int, int64_t begin, int64_t end) { gelu_backward_range(dx, dout, x, begin, end); });
}

template void gelu_forward<float>(float*, const float*, int64_t);
template void gelu_forward<double>(double*, const double*, int64_t);
template void gelu_backward<float>(float*, const float*, const float*, int64_t);
template void gelu_backward<double>(double*, const double*, const double*, int64_t);

}  // namespace minigrad
