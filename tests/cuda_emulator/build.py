"""Build minigrad._C_cuda against the CPU emulator (include/cuda_runtime.h) with the host C++ compiler.

The module is the real one: csrc/bindings_cuda.cpp and every csrc/cuda/*.cu, unchanged except that each
launch `kernel<<<grid, block, smem, stream>>>(args);` becomes `minigrad_emu::launch([&] { kernel(args); },
grid, block, smem, stream);`. Its arrays are anything with a __cuda_array_interface__ whose pointer is
host memory (tests/cuda_emulator/host_arrays.py). Run as a script to build one by hand:

    python tests/cuda_emulator/build.py OUT_DIR [extra compiler flags, e.g. -fsanitize=address]
"""

import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CSRC = ROOT / "csrc"
LAUNCH = re.compile(r"(\w+)<<<(.*?)>>>\((.*?)\);", re.DOTALL)  # the arguments end at the first ");"


def translate(source):
    """The .cu text with its launches rewritten to minigrad_emu::launch(...) calls."""
    text, count = LAUNCH.subn(lambda m: f"::minigrad_emu::launch([&] {{ {m[1]}({m[3]}); }}, {m[2]});", source)
    if "<<<" in text:
        raise ValueError("a kernel launch the emulator's build cannot rewrite: write it as kernel<<<...>>>(...);")
    return text, count


def compiler():
    """The C++ compiler Python was built with, else c++ or g++ on PATH; None when there is none."""
    for name in ((sysconfig.get_config_var("CXX") or "").split()[:1] + ["c++", "g++", "clang++"]):
        path = shutil.which(name)
        if path:
            return path
    return None


def _flags(extra_flags):
    return ["-std=c++17", "-O1", "-g", "-Wall", "-Wno-unused-function", "-U_FORTIFY_SOURCE", f"-I{HERE / 'include'}",
            f"-I{CSRC}", *extra_flags]


def _compile(command, what):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building {what} failed:\n{result.stderr}")


def _translated(cu, out_dir):
    """cu's translation, written to out_dir/cuda/<name>.cpp; #line keeps compiler messages on the .cu."""
    text, _ = translate(cu.read_text())
    cpp = out_dir / "cuda" / (cu.stem + ".cpp")
    cpp.parent.mkdir(parents=True, exist_ok=True)
    cpp.write_text(f'#line 1 "{cu}"\n' + text)
    return cpp


def build(out_dir, extra_flags=()):
    """Compile the emulated _C_cuda into out_dir; returns the module's path. Rebuilds only when a source changed."""
    import pybind11

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler on PATH (c++, g++ or clang++)")
    out_dir = Path(out_dir)
    sources = [CSRC / "bindings_cuda.cpp", *(_translated(cu, out_dir) for cu in sorted((CSRC / "cuda").glob("*.cu")))]
    module = out_dir / ("_C_cuda" + sysconfig.get_config_var("EXT_SUFFIX"))
    flags = [*_flags(extra_flags), "-fPIC", "-shared", f"-I{pybind11.get_include()}",
             f"-I{sysconfig.get_paths()['include']}", '-DMINIGRAD_CUDA_ARCHITECTURES="emulated on the CPU"']
    digest = hashlib.sha256(" ".join([cxx, *flags]).encode())
    for path in [*sources, *sorted((HERE / "include").glob("*")), *sorted(CSRC.rglob("*.h")), *sorted(CSRC.rglob("*.cuh"))]:
        digest.update(path.read_bytes())
    stamp = out_dir / "sources.sha256"
    if module.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return module
    _compile([cxx, *flags, *map(str, sources), "-o", str(module)], "the emulated _C_cuda")
    stamp.write_text(digest.hexdigest())
    return module


def build_program(cu, out_dir):
    """Compile one .cu file with a main() against the emulator into an executable; returns its path."""
    out_dir = Path(out_dir)
    program = out_dir / Path(cu).stem
    _compile([compiler(), *_flags(()), str(_translated(Path(cu), out_dir)), "-o", str(program)], str(cu))
    return program


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(build(sys.argv[1], sys.argv[2:]))
