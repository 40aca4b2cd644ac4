// minigrad._C: argument checks and pointer extraction only; the arithmetic lives in csrc/cpu/.
#include <pybind11/pybind11.h>

#include "cpu/threads.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
    m.doc() = "minigrad's fused CPU kernels (private: use minigrad.functional)";

    m.def("get_num_threads", &minigrad::get_num_threads,
          "Number of threads the CPU kernels use (MINIGRAD_NUM_THREADS, else all hardware threads).");
    m.def(
        "set_num_threads",
        [](int n) {
            if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
            minigrad::set_num_threads(n);
        },
        py::arg("n"), "Set the number of threads the CPU kernels use.");
}
