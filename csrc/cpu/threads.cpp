#include "cpu/threads.h"

#include <atomic>
#include <cstdlib>
#include <thread>

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

}  // namespace minigrad
