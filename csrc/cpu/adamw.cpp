#include "cpu/adamw.h"

#include <cmath>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

template <class T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                  double weight_decay, int64_t step) {
    // The scalars are formed in double, then rounded to T, as NumPy does for a Python float times a T array.
    const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    const T decay = static_cast<T>(1.0 - lr * weight_decay);
    const T b1 = static_cast<T>(beta1), one_minus_b1 = static_cast<T>(1.0 - beta1);
    const T b2 = static_cast<T>(beta2), one_minus_b2 = static_cast<T>(1.0 - beta2);
    const T sqrt_bc2 = static_cast<T>(std::sqrt(bias_correction2));
    const T step_size = static_cast<T>(lr / bias_correction1);
    const T eps_t = static_cast<T>(eps);
    parallel_for(n, num_chunks(n, 12.0), [=](int, int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            p[i] *= decay;
            m[i] = b1 * m[i] + one_minus_b1 * g[i];
            v[i] = b2 * v[i] + one_minus_b2 * (g[i] * g[i]);
            p[i] -= step_size * (m[i] / (std::sqrt(v[i]) / sqrt_bc2 + eps_t));
        }
    });
}

template <class T>
double sum_of_squares(const T* g, int64_t n) {
    return lane_sum<double>(n, [g](int64_t i) { return static_cast<double>(g[i]) * static_cast<double>(g[i]); });
}

template void adamw_update<float>(float*, const float*, float*, float*, int64_t, double, double, double, double,
                                  double, int64_t);
template void adamw_update<double>(double*, const double*, double*, double*, int64_t, double, double, double, double,
                                   double, int64_t);
template double sum_of_squares<float>(const float*, int64_t);
template double sum_of_squares<double>(const double*, int64_t);

}  // namespace minigrad
