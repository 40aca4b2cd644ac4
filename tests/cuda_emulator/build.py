"""Build minigrad._C_cuda against the CPU emulator (include/cuda_runtime.h) with the host C++ compiler.

The module is the real one: csrc/bindings_cuda.cpp and every csrc/cuda/*.cu, unchanged except that each
launch `kernel<<<grid, block, smem, stream>>>(args);` becomes `minigrad_emu::launch([&](auto&... a)
{ kernel(a...); }, std::make_tuple(args), grid, block, smem, stream);` (the arguments evaluated once).
Its arrays are anything with a __cuda_array_interface__ whose pointer is host memory
(tests/cuda_emulator/host_cupy.py). Run as a script to build one by hand:

    python tests/cuda_emulator/build.py OUT_DIR [extra compiler flags, e.g. -fsanitize=address]
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CSRC = ROOT / "csrc"
LAUNCH = re.compile(r"(\w+)<<<([^;]*?)>>>\s*\(")  # kernel<<<config>>>( ... then the arguments


def _arguments_end(text, start):
    """The index of the ')' that closes the '(' just before text[start]; -1 when there is none."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return -1


def translate(source):
    """The .cu text with each `kernel<<<config>>>(arguments);` rewritten to a minigrad_emu::launch call,
    and their number; a ValueError for a launch it cannot rewrite (one not followed by ';', say)."""
    pieces, position, count = [], 0, 0
    for m in LAUNCH.finditer(source):
        end = _arguments_end(source, m.end())
        semicolon = re.compile(r"\s*;").match(source, end + 1) if end >= 0 else None
        if semicolon is None:
            break
        pieces += [source[position:m.start()], f"::minigrad_emu::launch([&](auto&... a) {{ {m[1]}(a...); }}, "
                                               f"std::make_tuple({source[m.end():end]}), {m[2]});"]
        position, count = semicolon.end(), count + 1
    if count != source.count("<<<"):
        raise ValueError("a kernel launch the emulator's build cannot rewrite: write it as kernel<<<...>>>(...);")
    return "".join(pieces) + source[position:], count


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
    if result.stderr.strip():  # warnings: shown, so that -Wall checks something
        print(f"warnings building {what}:\n{result.stderr}", file=sys.stderr)


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
    # -fvisibility=hidden as pybind11_add_module builds the real module (pybind11's own types are hidden)
    flags = [*_flags(extra_flags), "-fPIC", "-shared", "-fvisibility=hidden", f"-I{pybind11.get_include()}",
             f"-I{sysconfig.get_paths()['include']}", '-DMINIGRAD_CUDA_ARCHITECTURES="emulated on the CPU"']
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    digest = hashlib.sha256(" ".join([cxx, version, pybind11.__version__, sys.version, *flags]).encode())
    headers = [p for p in sorted((HERE / "include").rglob("*")) + sorted(CSRC.rglob("*")) if p.suffix in (".h", ".cuh")]
    for path in [*sources, *headers]:
        digest.update(path.read_bytes())
    stamp = out_dir / "sources.sha256"
    if module.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return module
    partial = out_dir / ("partial" + module.name)  # then renamed: a module is never seen half written
    _compile([cxx, *flags, *map(str, sources), "-o", str(partial)], "the emulated _C_cuda")
    os.replace(partial, module)
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
