// A stand-in for cuda_runtime.h that runs minigrad's CUDA kernels on the CPU, so that csrc/cuda/ is
// tested on machines without a GPU. tests/cuda_emulator/build.py compiles the .cu files against it with
// the host C++ compiler (each `kernel<<<grid, block, smem, stream>>>(args)` rewritten to a launch()).
//
// The execution model it emulates, and what it checks:
// - A launch runs synchronously, its blocks one after another. The threads of a block are fibers on
//   one OS thread, each with its own stack; each runs until it waits at a barrier or returns.
// - __syncthreads() releases when every thread of the block that has not returned waits there.
//   __shfl_xor_sync(0xffffffff, ...) releases when the 32 lanes of the warp are all there. Errors: a
//   shuffle in a warp with a lane that returned or does not exist (a block that is not a whole number of
//   warps); threads waiting at __syncthreads calls on different lines (divergent code); threads waiting
//   at different kinds of barrier (a deadlock). Between barriers the lanes of a warp are not in lockstep
//   (as on Volta and later).
// - The scheduler always runs the lowest thread that can run, in index order (MINIGRAD_CUDA_EMULATOR_ORDER
//   unset or forward; blocks too) or the reverse (reverse), and releases a barrier the moment its last
//   thread arrives: the first warps run ahead as far as the barriers let them. A kernel whose result
//   changes with the order reads what another thread writes without a barrier between.
// - A kernel's arguments are evaluated once, at the launch, and each thread gets copies (as on a GPU).
// - __shared__ variables are static: one copy, which the threads of the running block share. It starts
//   at zero and keeps what the previous block left (on a GPU: whatever was there).
// - A kernel must hold no object with a destructor: after an error its fibers are dropped, not unwound.
// - A launch configuration CUDA rejects is reported by cudaGetLastError(), the way CUDA does;
//   the errors above throw std::runtime_error.
// Not emulated: timing, separate memory spaces (a device pointer is a host pointer), blocks running at
// the same time, dynamic shared memory, warp-synchronous code without the *_sync intrinsics, resource
// limits (registers, __launch_bounds__), the GPU's own math library and FMA contraction (results agree
// to rounding, not to the bit), two host threads launching at once (launches are serialised).
#pragma once

#include <math.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define CUDART_VERSION 0  // no CUDA runtime at all

#if defined(_FORTIFY_SOURCE) && _FORTIFY_SOURCE > 0
#error "compile the CUDA emulator with -U_FORTIFY_SOURCE: its longjmp check rejects a jump to another fiber's stack"
#endif

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

namespace minigrad_emu {

enum class State { not_started, runnable, at_syncthreads, at_shuffle, done };

// A fiber is entered once through a ucontext (makecontext puts fiber_main on its stack); after that,
// switches are _setjmp/_longjmp, which save only registers (swapcontext would also make a system call
// for the signal mask, every time: 6x slower in all).
struct Fiber {
    static constexpr std::size_t kStackBytes = 256 << 10;  // untouched pages cost no memory
    std::unique_ptr<char[]> stack{new char[kStackBytes]};
    ucontext_t entry;
    bool entered = false;
    jmp_buf suspended;  // where the fiber waits, once entered
};

struct Thread {
    uint3 idx;
    unsigned linear;    // x + y blockDim.x + z blockDim.x blockDim.y; its warp is linear / 32
    unsigned position;  // in the order the scheduler prefers
    State state;
    Fiber* fiber;
    unsigned shuffles;  // how many this thread has made: their parity picks the slots of the next one
    const char* sync_file;  // the __syncthreads call it waits at
    int sync_line;
};

// The one emulated device: the launch in progress, its block, and the fibers that run its threads.
struct Device {
    dim3 grid, block;
    uint3 block_idx;
    std::function<void()> body;             // the kernel call with its arguments
    std::vector<Thread> threads;            // of the running block, by linear index
    std::vector<unsigned> order;            // linear indices: the lowest position runs first
    std::size_t started = 0;                // the threads at positions [0, started) have started
    Thread* current = nullptr;              // the thread whose fiber runs now
    // What waits: threads at __syncthreads and returned, in the block and per warp (lanes at a shuffle).
    unsigned block_waiting = 0, block_done = 0;
    std::vector<unsigned> warp_waiting, warp_done;
    std::vector<std::uint64_t> shuffle[2];  // a slot per thread for __shfl_xor_sync's values, two sets
    jmp_buf scheduler;                      // where the scheduler waits while a fiber runs
    std::vector<std::unique_ptr<Fiber>> fibers;
    std::vector<Fiber*> idle;               // fibers with no thread, parked in fiber_main
    std::exception_ptr error;               // thrown by a thread; rethrown by the launch
    cudaError_t last_error = cudaSuccess;
};
inline Device device;

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("CUDA emulator: " + what); }

inline void switch_to_scheduler(Fiber* fiber) {  // on the fiber: returns when the scheduler switches back
    if (_setjmp(fiber->suspended) == 0) _longjmp(device.scheduler, 1);
}

inline void switch_to_fiber(Fiber* fiber) {  // on the scheduler: returns when the fiber switches back
    if (_setjmp(device.scheduler) != 0) return;
    if (fiber->entered) _longjmp(fiber->suspended, 1);
    fiber->entered = true;
    setcontext(&fiber->entry);
}

// Runs the kernel for device.current, then for the next thread to start while every thread started so
// far has returned (a kernel without barriers runs a whole block on one fiber); else parks until given a
// thread. So the next thread to run is always the lowest that can.
inline void fiber_main() {
    for (;;) {
        try {
            device.body();
        } catch (...) {
            if (!device.error) device.error = std::current_exception();
        }
        Thread* done = device.current;
        done->state = State::done;
        ++device.block_done;
        ++device.warp_done[done->linear / 32];
        Fiber* fiber = done->fiber;
        done->fiber = nullptr;
        if (!device.error && device.block_done == device.started && device.started < device.order.size()) {
            device.current = &device.threads[device.order[device.started++]];
            device.current->fiber = fiber;
            device.current->state = State::runnable;
            continue;
        }
        device.idle.push_back(fiber);
        switch_to_scheduler(fiber);  // resumed with device.current set to a new thread
    }
}

inline void start(Thread& t) {
    Fiber* fiber;
    if (!device.idle.empty()) {
        fiber = device.idle.back();
        device.idle.pop_back();
    } else {
        device.fibers.push_back(std::make_unique<Fiber>());
        fiber = device.fibers.back().get();
        getcontext(&fiber->entry);
        fiber->entry.uc_stack.ss_sp = fiber->stack.get();
        fiber->entry.uc_stack.ss_size = Fiber::kStackBytes;
        fiber->entry.uc_link = nullptr;  // fiber_main never returns
        makecontext(&fiber->entry, fiber_main, 0);
    }
    t.fiber = fiber;
    t.state = State::runnable;
    ++device.started;
}

// Called on a thread's fiber: wait at a barrier until the scheduler releases it.
inline void wait_at(State barrier) {
    Thread* t = device.current;
    t->state = barrier;
    if (barrier == State::at_shuffle) {
        ++device.warp_waiting[t->linear / 32];
    } else {
        ++device.block_waiting;
    }
    switch_to_scheduler(t->fiber);
}

// Releases the barriers that thread t's arrival (or return) may have completed: its warp's shuffle and
// the block's __syncthreads. Returns the lowest position of a released thread (order.size() for none).
inline std::size_t release_barriers(const Thread& t) {
    auto& threads = device.threads;
    std::size_t lowest = device.order.size();
    const unsigned warp = t.linear / 32, first = warp * 32;
    const unsigned lanes = std::min<unsigned>(32, static_cast<unsigned>(threads.size()) - first);
    const unsigned at_shuffle = device.warp_waiting[warp];
    if (at_shuffle > 0 && at_shuffle + device.warp_done[warp] == lanes) {
        if (lanes < 32 || device.warp_done[warp] > 0)
            fail("__shfl_xor_sync with a full mask in warp " + std::to_string(warp) + ", but " +
                 (lanes < 32 ? "the block of " + std::to_string(threads.size()) + " threads has only " +
                                   std::to_string(lanes) + " lanes in it"
                             : std::string("some of its lanes have returned")));
        for (unsigned i = first; i < first + lanes; ++i) {
            threads[i].state = State::runnable;
            lowest = std::min<std::size_t>(lowest, threads[i].position);
        }
        device.warp_waiting[warp] = 0;
    }
    if (device.block_waiting > 0 && device.block_waiting + device.block_done == threads.size()) {
        const Thread* first_waiting = nullptr;
        for (const Thread& u : threads) {
            if (u.state != State::at_syncthreads) continue;
            if (first_waiting == nullptr) first_waiting = &u;
            if (u.sync_line != first_waiting->sync_line || std::strcmp(u.sync_file, first_waiting->sync_file) != 0)
                fail("threads of one block wait at different __syncthreads calls, " +
                     std::string(first_waiting->sync_file) + ":" + std::to_string(first_waiting->sync_line) +
                     " and " + u.sync_file + ":" + std::to_string(u.sync_line) + " (a __syncthreads in divergent code)");
        }
        for (Thread& u : threads)
            if (u.state == State::at_syncthreads) {
                u.state = State::runnable;
                lowest = std::min<std::size_t>(lowest, u.position);
            }
        device.block_waiting = 0;
    }
    return lowest;
}

inline void abandon_block() {  // after an error: the suspended fibers are dropped with their stacks
    device.fibers.clear();
    device.idle.clear();
    device.current = nullptr;
}

// Always runs the runnable thread of lowest position, and releases a barrier as soon as the last thread
// arrives: the first warps of the order run ahead as far as barriers allow, the others lag behind.
inline void run_block() {
    for (Thread& t : device.threads) t.state = State::not_started, t.fiber = nullptr, t.shuffles = 0;
    std::fill(device.warp_waiting.begin(), device.warp_waiting.end(), 0u);
    std::fill(device.warp_done.begin(), device.warp_done.end(), 0u);
    device.started = device.block_waiting = device.block_done = 0;
    const std::size_t n = device.order.size();
    std::size_t position = 0;
    for (;;) {
        while (position < n && device.threads[device.order[position]].state != State::not_started &&
               device.threads[device.order[position]].state != State::runnable)
            ++position;
        if (position == n) {
            if (device.block_done == n) return;
            const unsigned at_sync = device.block_waiting;
            const unsigned at_shuffle = std::accumulate(device.warp_waiting.begin(), device.warp_waiting.end(), 0u);
            abandon_block();
            fail("deadlock in block (" + std::to_string(device.block_idx.x) + ", " +
                 std::to_string(device.block_idx.y) + ", " + std::to_string(device.block_idx.z) + "): " +
                 std::to_string(at_sync) + " threads wait at __syncthreads, " + std::to_string(at_shuffle) +
                 " at a warp shuffle, " + std::to_string(device.block_done) + " have returned");
        }
        Thread& t = device.threads[device.order[position]];
        if (t.state == State::not_started) start(t);
        device.current = &t;
        switch_to_fiber(t.fiber);  // back when the thread (or the last one its fiber ran) waits or returns
        if (!device.error) {
            try {
                position = std::min(position, release_barriers(*device.current));
            } catch (...) {
                device.error = std::current_exception();
            }
        }
        if (device.error) {
            abandon_block();
            std::exception_ptr error = device.error;
            device.error = nullptr;
            std::rethrow_exception(error);
        }
    }
}

inline bool configuration_is_valid(dim3 grid, dim3 block) {
    const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
    return grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 &&
           grid.z <= 65535 && threads >= 1 && threads <= 1024 && block.x <= 1024 && block.y <= 1024 &&
           block.z <= 64;
}

// kernel<<<grid, block, shared_bytes, stream>>>(args) becomes
// launch([&](auto&... a) { kernel(a...); }, std::make_tuple(args), grid, block, shared_bytes, stream).
template <class Kernel, class Args>
void launch(Kernel kernel, Args arguments, dim3 grid, dim3 block, std::size_t shared_bytes = 0, cudaStream_t = nullptr) {
    static std::recursive_mutex one_launch_at_a_time;  // recursive: a launch inside a kernel fails below
    const std::lock_guard<std::recursive_mutex> lock(one_launch_at_a_time);
    if (device.current != nullptr) fail("a launch from inside a kernel is not emulated");
    if (shared_bytes != 0) fail("dynamic shared memory is not emulated");
    if (!configuration_is_valid(grid, block)) {
        device.last_error = cudaErrorInvalidConfiguration;
        return;
    }
    const char* order = std::getenv("MINIGRAD_CUDA_EMULATOR_ORDER");
    const std::string order_name = order == nullptr ? "forward" : order;
    if (order_name != "forward" && order_name != "reverse")
        fail("MINIGRAD_CUDA_EMULATOR_ORDER must be forward or reverse, got '" + order_name + "'");
    const bool reverse = order_name == "reverse";
    device.body = [&] {
        Args copies = arguments;  // each thread's own parameters, as a kernel's are
        std::apply(kernel, copies);
    };
    device.grid = grid;
    device.block = block;
    const unsigned n = block.x * block.y * block.z;
    device.threads.resize(n);
    device.order.resize(n);
    for (unsigned i = 0; i < n; ++i) {
        Thread& t = device.threads[i];
        t.idx = {i % block.x, i / block.x % block.y, i / (block.x * block.y)};
        t.linear = i;
        t.position = reverse ? n - 1 - i : i;
        device.order[t.position] = i;
    }
    device.warp_waiting.assign((n + 31) / 32, 0);
    device.warp_done.assign((n + 31) / 32, 0);
    for (auto& slots : device.shuffle) slots.assign(n, 0);
    const std::uint64_t blocks = std::uint64_t(grid.x) * grid.y * grid.z;
    for (std::uint64_t i = 0; i < blocks; ++i) {
        const std::uint64_t b = reverse ? blocks - 1 - i : i;
        device.block_idx = {unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / (std::uint64_t(grid.x) * grid.y))};
        run_block();
    }
    device.body = nullptr;
    device.current = nullptr;
}

}  // namespace minigrad_emu

#define threadIdx (::minigrad_emu::device.current->idx)
#define blockIdx (::minigrad_emu::device.block_idx)
#define blockDim (::minigrad_emu::device.block)
#define gridDim (::minigrad_emu::device.grid)

namespace minigrad_emu {
inline void syncthreads(const char* file, int line) {
    device.current->sync_file = file;
    device.current->sync_line = line;
    wait_at(State::at_syncthreads);
}
}  // namespace minigrad_emu
#define __syncthreads() ::minigrad_emu::syncthreads(__FILE__, __LINE__)

// The value of lane (this lane ^ lane_mask) of the warp; every lane of the warp must take part.
template <class T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    using minigrad_emu::device;
    if (mask != 0xffffffffu || width != 32) minigrad_emu::fail("only full-warp shuffles are emulated");
    // Consecutive shuffles use the two sets of slots in turn: a lane writes a set again only after every
    // lane has arrived at the shuffle in between, so after each has read its value from that set.
    auto& slots = device.shuffle[device.current->shuffles++ % 2];
    const unsigned self = device.current->linear, lane = self % 32;
    std::memcpy(&slots[self], &value, sizeof(T));
    minigrad_emu::wait_at(minigrad_emu::State::at_shuffle);  // every lane has written its value
    const unsigned source = lane ^ (static_cast<unsigned>(lane_mask) & 31u);  // as shfl.bfly: 5 bits
    T out;
    std::memcpy(&out, &slots[self - lane + source], sizeof(T));
    return out;
}

// Atomics need no locking: threads switch only at barriers.
inline int atomicMax(int* address, int value) {
    const int old = *address;
    if (value > old) *address = value;
    return old;
}

inline cudaError_t cudaGetLastError() {
    const cudaError_t e = minigrad_emu::device.last_error;
    minigrad_emu::device.last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
namespace minigrad_emu {
struct ErrorText {
    cudaError_t code;
    const char* name;
    const char* text;
};
inline constexpr ErrorText kErrors[] = {{cudaSuccess, "cudaSuccess", "no error"},
                                        {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
                                        {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
                                         "invalid configuration argument"}};
inline const ErrorText* find_error(cudaError_t e) {
    for (const ErrorText& k : kErrors)
        if (k.code == e) return &k;
    return nullptr;
}
}  // namespace minigrad_emu
inline const char* cudaGetErrorName(cudaError_t e) {
    const auto* k = minigrad_emu::find_error(e);
    return k ? k->name : "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) {
    const auto* k = minigrad_emu::find_error(e);
    return k ? k->text : "unknown error";
}
// Device memory is host memory, and every launch has finished when it returns.
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind, cudaStream_t) {
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t) {
    std::memset(dst, value, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
