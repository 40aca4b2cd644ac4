"""Runs minigrad's CUDA kernels on the CPU: include/cuda_runtime.h emulates the CUDA runtime, build.py
compiles _C_cuda (or a test program) against it, host_arrays.py gives it host memory posing as device memory."""

from .build import build, build_program, compiler, translate
