#include "cpu/threads.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

namespace minigrad {

static int default_num_threads() {
    if (const char* env = std::getenv("MINIGRAD_NUM_THREADS")) {
        int n = std::atoi(env);
        if (n >= 1) return n;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw >= 1 ? static_cast<int>(hw) : 1;
}

static std::atomic<int> g_num_threads{default_num_threads()};

int get_num_threads() { return g_num_threads.load(); }

void set_num_threads(int n) { g_num_threads.store(n); }

// Below this many operations per chunk, starting a thread costs more than the work it takes over.
static constexpr double kMinWorkPerChunk = 100000.0;

int num_chunks(int64_t n, double work_per_item) {
    if (n <= 1) return 1;
    double by_work = static_cast<double>(n) * work_per_item / kMinWorkPerChunk;
    int64_t chunks = std::min<int64_t>({static_cast<int64_t>(get_num_threads()), n, static_cast<int64_t>(by_work)});
    return static_cast<int>(std::max<int64_t>(chunks, 1));
}

void parallel_for(int64_t n, int chunks, const std::function<void(int, int64_t, int64_t)>& fn) {
    auto begin_of = [n, chunks](int c) { return n * c / chunks; };
    if (chunks <= 1) {
        fn(0, 0, n);
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(chunks - 1);
    for (int c = 1; c < chunks; ++c) workers.emplace_back(fn, c, begin_of(c), begin_of(c + 1));
    fn(0, 0, begin_of(1));
    for (auto& w : workers) w.join();
}

}  // namespace minigrad
