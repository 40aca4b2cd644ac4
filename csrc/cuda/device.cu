// What the CUDA runtime (linked statically into _C_cuda) can see, and its error messages.
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

}  // namespace minigrad::cuda
