// What the CUDA runtime (linked statically into _C_cuda) can see, its error messages, and a copy back to the host.
#include "cuda/common.cuh"

namespace minigrad::cuda {

int device_count(std::string* reason) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error so that a later call starts clean
        *reason = error_string(static_cast<int>(e));
        return 0;
    }
    if (n == 0) *reason = "the CUDA runtime found no device";
    return n;
}

std::string error_string(int code) {
    const auto e = static_cast<cudaError_t>(code);
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

int runtime_version() { return CUDART_VERSION; }

int copy_to_host(void* dst, const void* src, int64_t bytes, Stream stream) {
    const cudaStream_t s = as_stream(stream);
    cudaError_t e = cudaMemcpyAsync(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    return static_cast<int>(e);
}

}  // namespace minigrad::cuda
