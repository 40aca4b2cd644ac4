// The embedding's backward without atomics: a block per row of the table, so the sums are deterministic.
#include "cuda/common.cuh"

namespace minigrad::cuda {

constexpr int kThreads = 128;

// dweight[v, c] = sum of dout[n, c] over the positions n with ids[n] = v, in the order n = 0, 1, ...:
// block v scans every id, thread t owns the columns c = t, t + 128, .... (Each block reads all N ids:
// V times the reads of a scatter with atomics, which would add in a different order every run.)
// Block 0 also flags an id outside [0, V) in *bad; one block runs even for V = 0, to do that.
template <class T>
__global__ void embedding_backward_kernel(T* dweight, int64_t* bad, const T* dout, const int64_t* ids, int64_t N,
                                          int64_t C, int64_t V) {
    const int64_t v = blockIdx.x;
    if (v == 0)
        for (int64_t n = threadIdx.x; n < N; n += blockDim.x)
            if (ids[n] < 0 || ids[n] >= V) *bad = 1;
    if (v >= V) return;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        T sum = 0;
        for (int64_t n = 0; n < N; ++n)
            if (ids[n] == v) sum += dout[n * C + c];
        dweight[v * C + c] = sum;
    }
}

template <class T>
int embedding_backward(T* dweight, int64_t* bad, const T* dout, const int64_t* ids, int64_t N, int64_t C, int64_t V,
                       Stream stream) {
    cudaError_t e = cudaMemsetAsync(bad, 0, sizeof(int64_t), as_stream(stream));
    if (e != cudaSuccess) return static_cast<int>(e);
    const auto blocks = static_cast<unsigned>(V > 1 ? V : 1);
    embedding_backward_kernel<<<blocks, kThreads, 0, as_stream(stream)>>>(dweight, bad, dout, ids, N, C, V);
    return static_cast<int>(cudaGetLastError());
}

template int embedding_backward<float>(float*, int64_t*, const float*, const int64_t*, int64_t, int64_t, int64_t,
                                       Stream);
template int embedding_backward<double>(double*, int64_t*, const double*, const int64_t*, int64_t, int64_t, int64_t,
                                        Stream);

}  // namespace minigrad::cuda
