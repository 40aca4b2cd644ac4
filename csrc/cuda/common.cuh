// Device helpers shared by the .cu files: math overloads for float/double, warp and block reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace minigrad::cuda {

inline cudaStream_t as_stream(Stream s) { return reinterpret_cast<cudaStream_t>(s); }

// Blocks for a grid-stride loop over n elements with `threads` per block (at least 1, at most 65535).
inline unsigned grid_for(int64_t n, int threads) {
    const int64_t blocks = (n + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

// The accurate library functions (never the __expf intrinsics): float32 results must stay within 1e-5.
__device__ inline float dexp(float x) { return expf(x); }
__device__ inline double dexp(double x) { return exp(x); }
__device__ inline float dlog(float x) { return logf(x); }
__device__ inline double dlog(double x) { return log(x); }
__device__ inline float dabs(float x) { return fabsf(x); }
__device__ inline double dabs(double x) { return fabs(x); }
__device__ inline float dsqrt(float x) { return sqrtf(x); }
__device__ inline double dsqrt(double x) { return sqrt(x); }
template <class T>
__device__ inline T dmax(T a, T b) { return a > b ? a : b; }
template <class T>
__device__ inline T neg_inf() { return -static_cast<T>(INFINITY); }

// Sum / max over the 32 lanes of a warp; every lane gets the result. The whole warp must be active.
template <class T>
__device__ inline T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
template <class T>
__device__ inline T warp_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = dmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum / max over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 values. The order of the additions depends only on blockDim: the result is deterministic.
template <class T, class Op>
__device__ inline T block_reduce(T v, T* shared, T identity, Op warp_op) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_op(v);
    __syncthreads();  // the previous call may still be reading shared
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? shared[lane] : identity;
    if (warp == 0) {
        v = warp_op(v);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    return shared[0];
}
template <class T>
__device__ inline T block_sum(T v, T* shared) {
    return block_reduce(v, shared, T(0), [](T x) { return warp_sum(x); });
}
template <class T>
__device__ inline T block_max(T v, T* shared) {
    return block_reduce(v, shared, neg_inf<T>(), [](T x) { return warp_max(x); });
}

}  // namespace minigrad::cuda
