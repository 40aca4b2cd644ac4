"""Runs minigrad's CUDA kernels on the CPU: include/cuda_runtime.h emulates the CUDA runtime, build.py
compiles _C_cuda (or a test program) against it, host_cupy.py is CuPy's array API on host memory."""

from .build import build, build_program, compiler, translate
