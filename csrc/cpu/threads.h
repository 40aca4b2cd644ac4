// How many threads the CPU kernels split their work over.
#pragma once

namespace minigrad {

// MINIGRAD_NUM_THREADS if set, else the number of hardware threads (at least 1).
int get_num_threads();
// n >= 1; the caller (bindings.cpp) checks it.
void set_num_threads(int n);

}  // namespace minigrad
