#include "cpu/embedding.h"

#include <algorithm>

#include "cpu/vmath.h"

namespace minigrad {

// One thread, one pass over the positions. (Threads splitting the columns measured slower on the
// shapes of training, (8192, 64) and (16384, 384) rows into 65: 0.06 ms on one thread, 0.12 on two;
// 2.0 ms against 5.2.)
template <class T>
MINIGRAD_SIMD_CLONES static void add_rows(T* dweight, const T* dout, const int64_t* ids, int64_t N, int64_t C,
                                          int64_t V) {
    std::fill(dweight, dweight + V * C, T(0));
    for (int64_t n = 0; n < N; ++n) {
        T* __restrict row = dweight + ids[n] * C;
        const T* __restrict d = dout + n * C;
        for (int64_t c = 0; c < C; ++c) row[c] += d[c];
    }
}

template <class T>
void embedding_backward(T* dweight, const T* dout, const int64_t* ids, int64_t N, int64_t C, int64_t V) {
    add_rows(dweight, dout, ids, N, C, V);
}

template void embedding_backward<float>(float*, const float*, const int64_t*, int64_t, int64_t, int64_t);
template void embedding_backward<double>(double*, const double*, const int64_t*, int64_t, int64_t, int64_t);

}  // namespace minigrad
