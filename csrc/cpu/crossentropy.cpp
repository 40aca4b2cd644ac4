#include "cpu/crossentropy.h"

#include <cmath>
#include <vector>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

template <class T>
double crossentropy_forward(T* probs, const T* logits, const int64_t* targets, int64_t N, int64_t V) {
    // Each chunk sums its rows' losses in double; the chunks add up in order at the end.
    const int chunks = num_chunks(N, 30.0 * V);
    std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
    parallel_for(N, chunks, [=, &partial](int chunk, int64_t begin, int64_t end) {
        double loss = 0.0;
        for (int64_t n = begin; n < end; ++n) {
            const T* x = logits + n * V;  // (V,)
            T* p = probs + n * V;
            // NOTE: the log-sum-exp trick: shift the row by its max so exp never overflows.
            const T m = lane_max(x, V);
            for (int64_t j = 0; j < V; ++j) p[j] = vexp(x[j] - m);
            const T sum = lane_sum<T>(V, [p](int64_t j) { return p[j]; });
            const T inv = T(1) / sum;
            for (int64_t j = 0; j < V; ++j) p[j] *= inv;
            loss += static_cast<double>(std::log(sum) - (x[targets[n]] - m));
        }
        partial[chunk] = loss;
    });
    double total = 0.0;
    for (double l : partial) total += l;
    return total / static_cast<double>(N);
}

template <class T>
void crossentropy_backward(T* dlogits, const T* probs, const int64_t* targets, double dloss, int64_t N, int64_t V) {
    const T scale = static_cast<T>(dloss / static_cast<double>(N));
    parallel_for(N, num_chunks(N, 2.0 * V), [=](int, int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
            const T* p = probs + n * V;
            T* d = dlogits + n * V;
            for (int64_t j = 0; j < V; ++j) d[j] = p[j] * scale;
            d[targets[n]] = (p[targets[n]] - T(1)) * scale;
        }
    });
}

template double crossentropy_forward<float>(float*, const float*, const int64_t*, int64_t, int64_t);
template double crossentropy_forward<double>(double*, const double*, const int64_t*, int64_t, int64_t);
template void crossentropy_backward<float>(float*, const float*, const int64_t*, double, int64_t, int64_t);
template void crossentropy_backward<double>(double*, const double*, const int64_t*, double, int64_t, int64_t);

}  // namespace minigrad
