"""tokens/s of train_char.py in one process against `mpirun -n N`, side by side on the same machine.

    python bench/bench_mpi.py --data data/tinyshakespeare.txt [--ranks 2] [--max-iters 30] [--repeats 2]

The default model (4 layers, n_embd 64, block 128), four ways, run in turn (so a change of load on
a shared machine hits each alike), every process limited to its share of the threads:
  1 process  x batch B, 1 thread (the baseline)
  1 process  x batch B, N threads (BLAS and minigrad's kernels)
  N ranks    x batch B/N, 1 thread each: the same B sequences per step, split over the ranks
  N ranks    x batch B,   1 thread each: N times the sequences per step
tokens/s counts every rank's tokens: the printed figure (the last window of > 1 s of steps, from
metrics.csv) and the whole run (steps * tokens per step / the run's seconds, two evaluations included).
"""

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(ranks, threads, batch, args, out_dir):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MINIGRAD_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [sys.executable, os.path.join(ROOT, "train_char.py"), "--data", args.data, "--out-dir", out_dir,
               "--batch-size", str(batch), "--max-iters", str(args.max_iters), "--eval-interval", "100000",
               "--eval-iters", "1", "--num-samples", "1", "--sample-len", "1"]
    if ranks > 1:
        mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
        command = [mpirun if os.path.exists(mpirun) else "mpirun", "-n", str(ranks), *command]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        last = list(csv.DictReader(f))[-1]
    seconds = float(re.search(r"([0-9.]+) s in total", out).group(1))
    tokens = args.max_iters * batch * 128 * ranks
    return float(last["tokens_per_s"]), tokens / seconds, float(last["val_loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join("data", "tinyshakespeare.txt"))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n, b = args.ranks, args.batch_size
    setups = [(f"1 process x batch {b}, 1 thread", 1, 1, b),
              (f"1 process x batch {b}, {n} threads", 1, n, b),
              (f"{n} ranks x batch {b // n}, 1 thread each", n, 1, b // n),
              (f"{n} ranks x batch {b}, 1 thread each", n, 1, b)]
    results = {name: [] for name, *_ in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, ranks, threads, batch in setups:
                results[name].append(run(ranks, threads, batch, args, os.path.join(tmp, f"{repeat}-{ranks}-{batch}")))
    print(f"| setup | tokens/s printed | tokens/s whole run | val loss at iter {args.max_iters} |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        printed, whole, loss = (", ".join(f"{r[i]:,.0f}" if i < 2 else f"{r[i]:.4f}" for r in rows) for i in range(3))
        print(f"| {name} | {printed} | {whole} | {loss} |")


if __name__ == "__main__":
    main()
