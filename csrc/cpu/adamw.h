// The AdamW update and the global gradient norm, one array at a time (the bindings loop over the list).
#pragma once

#include <cstdint>

namespace minigrad {

// One AdamW step in place on p, m, v (n,) from g (n,), with t = step >= 1:
// p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
// p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
template <class T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                  double weight_decay, int64_t step);

// sum of g[i]^2, accumulated in double.
template <class T>
double sum_of_squares(const T* g, int64_t n);

}  // namespace minigrad
