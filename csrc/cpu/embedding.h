// The embedding's backward: each row of dout added into the row of the table that its id names.
#pragma once

#include <cstdint>

namespace minigrad {

// dweight[v, :] = sum of dout[n, :] over the positions n with ids[n] = v, added in the order n = 0, 1, ...
// (deterministic). dout (N, C); ids (N,) in [0, V) (the caller checks them); dweight (V, C), every row
// written (zeros for an id that does not occur).
template <class T>
void embedding_backward(T* dweight, const T* dout, const int64_t* ids, int64_t N, int64_t C, int64_t V);

}  // namespace minigrad
