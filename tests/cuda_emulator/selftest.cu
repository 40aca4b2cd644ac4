// Small kernels, most with a mistake the CUDA emulator must catch, for tests/test_cuda_emulator.py.
// `selftest CASE` runs one case and prints the 64 ints of its output (128 for schedule), or "launch: <error>" for a
// launch CUDA refuses, or "error: <what>" for one the emulator stopped.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

// out[t] = base + t + 1 (mod blockDim), the value thread t + 1 wrote: only with the barrier is it there.
__global__ void rotate_kernel(int* out, int base, bool barrier) {
    __shared__ int slots[64];
    slots[threadIdx.x] = base + static_cast<int>(threadIdx.x);
    if (barrier) __syncthreads();
    out[threadIdx.x] = slots[(threadIdx.x + 1) % blockDim.x];
}

// Every lane gets 0 + 1 + ... + 31 = 496; with early_return, the odd lanes leave first.
__global__ void warp_sum_kernel(int* out, bool early_return) {
    if (early_return && threadIdx.x % 2 == 1) return;
    int v = threadIdx.x % 32;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    out[threadIdx.x] = v;
}

// Half of each warp waits at __syncthreads, the other half at a shuffle: neither can ever go on.
__global__ void deadlock_kernel(int* out) {
    int v = 1;
    if (threadIdx.x % 32 < 16)
        __syncthreads();
    else
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

// Threads 0-15 wait at one __syncthreads, the others at another one: undefined on a GPU.
__global__ void divergent_kernel(int* out) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncthreads();
    out[threadIdx.x] = 1;
}

// The order in which threads run: each logs its index before a shuffle and 1000 + its index after.
__global__ void schedule_kernel(int* log, int* logged) {
    log[(*logged)++] = static_cast<int>(threadIdx.x);
    const int v = __shfl_xor_sync(0xffffffffu, 1, 1);
    log[(*logged)++] = 1000 * v + static_cast<int>(threadIdx.x);
}

int main(int argc, char** argv) {
    const std::string name = argc > 1 ? argv[1] : "";
    int out[128] = {0}, printed = 64, logged = 0, evaluated = 0;
    try {
        if (name == "rotate")
            rotate_kernel<<<1, 64>>>(out, 100, true);
        else if (name == "rotate_without_barrier")
            rotate_kernel<<<1, 64>>>(out, 100, false);
        else if (name == "warp_sum")
            warp_sum_kernel<<<1, 64>>>(out, false);
        else if (name == "warp_sum_in_a_partial_warp")
            warp_sum_kernel<<<1, 48>>>(out, false);
        else if (name == "warp_sum_after_lanes_returned")
            warp_sum_kernel<<<1, 64>>>(out, true);
        else if (name == "deadlock")
            deadlock_kernel<<<1, 64>>>(out);
        else if (name == "divergent_syncthreads")
            divergent_kernel<<<1, 64>>>(out);
        else if (name == "schedule") {
            schedule_kernel<<<1, 64>>>(out, &logged);
            printed = 128;
        } else if (name == "arguments_evaluated_once") {  // out[0]: how often the launch's arguments ran
            warp_sum_kernel<<<1, 64>>>(out, (++evaluated, false));
            out[0] = evaluated;
        } else if (name == "a_launch_after_an_error") {
            try {
                deadlock_kernel<<<1, 64>>>(out);
            } catch (const std::exception&) {
            }
            warp_sum_kernel<<<1, 64>>>(out, false);
        }
        else if (name == "too_many_threads")
            warp_sum_kernel<<<1, 2048>>>(out, false);
        else if (name == "empty_grid")
            warp_sum_kernel<<<0, 32>>>(out, false);
        else {
            std::fprintf(stderr, "unknown case '%s'\n", name.c_str());
            return 2;
        }
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 0;
    }
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        std::printf("launch: %s\n", cudaGetErrorName(e));
        return 0;
    }
    for (int i = 0; i < printed; ++i) std::printf("%d ", out[i]);
    std::printf("\n");
    return 0;
}
