// How many threads the CPU kernels split their work over, and the one loop that splits it.
#pragma once

#include <cstdint>
#include <functional>

namespace minigrad {

// MINIGRAD_NUM_THREADS if set, else the number of hardware threads (at least 1).
int get_num_threads();
// n >= 1; the caller (bindings.cpp) checks it.
void set_num_threads(int n);

// How many chunks to cut n items into, each costing about work_per_item operations: at most
// get_num_threads() and at most n, and 1 when the work is too small to pay for starting a thread
// (a thread costs tens of microseconds; our shapes are small).
int num_chunks(int64_t n, double work_per_item);

// Calls fn(chunk, begin, end) for `chunks` contiguous ranges that cover [0, n), chunk 0 on the
// calling thread and the others on threads of their own; returns when all are done.
// fn must not throw (the kernels only do arithmetic on buffers already checked).
void parallel_for(int64_t n, int chunks, const std::function<void(int, int64_t, int64_t)>& fn);

}  // namespace minigrad
