"""minigrad.distributed: data-parallel training over MPI (``mpirun -n N python train_char.py``).

Every rank (process) holds a full copy of the model and the optimizer. Each step, each rank computes
the gradient of its own batch; ``allreduce_grads`` replaces it by the mean over the ranks, so every
rank then takes the same optimizer step and the copies stay equal. With N ranks of batch B this is
the step of one process with batch N*B (the mean of N equal-sized batch means is the mean of all).

    world = distributed.init()          # World(rank=0, world_size=1) when not launched by MPI
    world.broadcast_params(model)       # start from rank 0's weights
    loss.backward()
    world.allreduce_grads(params)       # g <- (1/N) sum over ranks of g, before clipping
    world.print("...")                  # rank 0 alone prints
    world.timeout = 60                  # a collective waiting longer for a stalled rank stops the job

mpi4py is imported here only, and only when an MPI launcher started this process: without one, the
World is rank 0 of 1, every collective is a no-op, and nothing MPI-related is loaded. What else differs
under MPI (which rank reads, prints and draws the progress bar, Ctrl-C, stopping every rank on an error)
is decided here too, so that a training script needs no `if world_size > 1`.
"""

import contextlib
import os
import signal
import sys
import threading
import traceback
import types

import numpy as np

from minigrad.backend import to_device

# Set by the launchers in every process they start: Open MPI's mpirun, MPICH/Intel MPI's Hydra, PMIx (srun).
LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")
DEFAULT_TIMEOUT = 600.0  # seconds: far more than any step or save takes, far less than forever


class World:
    """The ranks of one job: rank (0 .. world_size-1), world_size, is_main (rank 0 writes the files),
    and the collectives training needs. comm is mpi4py's COMM_WORLD, or None for a single process;
    timeout: the seconds a collective may wait for the other ranks before the whole job is stopped."""

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.world_size = comm.Get_size() if comm is not None else 1
        self.is_main = self.rank == 0
        self.timeout = timeout

    def __repr__(self):
        return f"World(rank={self.rank}, world_size={self.world_size})"

    def rng(self, seed):
        """A NumPy generator for this rank: default_rng(seed) in one process (so a single-process run is
        unchanged), default_rng([seed, rank]) under MPI: an independent stream per rank."""
        return np.random.default_rng(seed if self.world_size == 1 else [seed, self.rank])

    def allreduce_grads(self, params):
        """g_p <- (1/N) sum_r g_p^(r) for every parameter p, as ONE Allreduce over one flat buffer
        (one collective per step, not one per parameter: the latency is paid once).

        A parameter without a gradient on this rank adds zeros, so every rank posts a buffer of the
        same layout; one count per parameter, appended to the buffer, says how many ranks had a
        gradient, and a parameter that no rank touched keeps grad None, as in one process."""
        if self.comm is None:
            return
        from mpi4py import MPI

        dtype = np.result_type(*[p.dtype for p in params])
        sizes = [p.size for p in params]
        offsets = np.cumsum([0] + sizes)
        flat = np.zeros(offsets[-1] + len(params), dtype=dtype)  # (sum of sizes + n_params,)
        counts = flat[offsets[-1]:]  # (n_params,) a view: 1 where this rank has a gradient
        for i, p in enumerate(params):
            if p.grad is not None:
                flat[offsets[i]:offsets[i + 1]] = to_device(p.grad, "cpu").ravel()
                counts[i] = 1
        # NOTE: a GPU gradient takes a trip through host memory here; NCCL would reduce it in place.
        # NOTE: the copies stay bit-equal only if every rank receives the same sum; Open MPI and MPICH
        # deliver that (the standard advises it), and tests/test_distributed.py checks it
        with self.bounded("Allreduce"):
            self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat[:offsets[-1]] /= self.world_size
        for i, p in enumerate(params):
            if counts[i] > 0:
                grad = flat[offsets[i]:offsets[i + 1]].reshape(p.shape)
                p.grad = to_device(grad.astype(p.dtype, copy=True), p.device)

    def broadcast_params(self, model):
        """Copy rank 0's parameters into every rank's model (one Bcast of one flat buffer), so all
        ranks start from the same weights whatever their own initialization was."""
        if self.comm is None:
            return
        params = model.parameters()
        flat = np.concatenate([p.numpy().ravel() for p in params]).astype(np.result_type(*[p.dtype for p in params]))
        with self.bounded("Bcast"):
            self.comm.Bcast(flat, root=0)
        start = 0
        for p in params:
            p.data[...] = to_device(flat[start:start + p.size].reshape(p.shape).astype(p.dtype), p.device)
            start += p.size

    def allreduce_mean(self, value):
        """(1/N) sum over ranks of a float, the same float on every rank (e.g. a loss)."""
        if self.comm is None:
            return float(value)
        from mpi4py import MPI

        buffer = np.array([value], dtype=np.float64)
        with self.bounded("Allreduce"):
            self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        return float(buffer[0]) / self.world_size

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on rank 0 (any picklable object), None on the others."""
        if self.comm is None:
            return [obj]
        with self.bounded("gather"):
            return self.comm.gather(obj, root=0)

    def barrier(self):
        """Wait until every rank has reached this line."""
        if self.comm is not None:
            with self.bounded("Barrier"):
                self.comm.Barrier()

    @contextlib.contextmanager
    def bounded(self, collective):
        """Stop the whole job (exit 1, one line) if the block, a collective, has not returned within
        self.timeout seconds: a rank that stalled (a hung file system, a deadlock) would otherwise keep
        every other rank waiting in it forever.
        NOTE: MPI collectives have no timeout of their own, and a blocked one cannot be interrupted: a timer
        thread aborts the job (mpi4py releases the GIL while this thread waits in MPI)."""
        timer = threading.Timer(self.timeout, self._stalled, args=(collective,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _stalled(self, collective):
        print(f"error on rank {self.rank} of {self.world_size}: {collective} waited {self.timeout:g} s for the "
              "other ranks, so one of them is stalled; stopping every rank (train_char.py: --mpi-timeout sets "
              "the bound)", file=sys.stderr, flush=True)
        self.abort(1)

    def main_first(self, fn, *args):
        """fn(*args) on rank 0, then on the other ranks once rank 0 has returned (rank 0 downloads a missing
        file, the others then read it); on every rank, what its own call returned."""
        result = fn(*args) if self.is_main else None
        self.barrier()
        return result if self.is_main else fn(*args)

    def print(self, *args, **kwargs):
        """print() on rank 0 only, flushed (mpirun forwards each rank's output through a pipe)."""
        if self.is_main:
            print(*args, **kwargs, flush=True)

    def print_batch_split(self, batch_size):
        """Rank 0 says how a step's sequences come from the ranks (nothing in one process)."""
        if self.comm is not None:
            self.print(f"data-parallel over {self.world_size} MPI ranks: batch {batch_size} per rank, "
                       f"{batch_size * self.world_size} sequences per step")

    def progress_bar_options(self):
        """tqdm's keyword arguments for a bar that rank 0 alone shows (disable=None: only on a terminal).
        NOTE: Open MPI forwards a rank's stderr through a pipe (tqdm would hide the bar) and its stdout
        through a pseudo-terminal of size 0 x 0 (tqdm would draw nothing): under MPI, stdout and a size."""
        if self.comm is None:
            return {"disable": None, "dynamic_ncols": True}
        return {"disable": None if self.is_main else True, "file": sys.stdout, "ncols": 100, "nrows": 24}

    @contextlib.contextmanager
    def stop_on_ctrl_c(self):
        """Yields a request whose .requested turns True at the first Ctrl-C (SIGINT) inside the block, for the
        caller to finish its step and stop; a second Ctrl-C raises KeyboardInterrupt at once. Under MPI it
        stays False: mpirun stops every rank on Ctrl-C (a rank that went on alone would wait forever in
        the next collective)."""
        request = types.SimpleNamespace(requested=False)
        if self.comm is not None:
            yield request
            return

        def handler(signum, frame):
            if request.requested:
                raise KeyboardInterrupt
            request.requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield request
        finally:
            signal.signal(signal.SIGINT, previous)

    def usage_error(self, program, message, code=2):
        """Print `program: error: message` as one line (naming this rank under MPI). Returns code in one
        process; under MPI it stops every rank with it instead.
        NOTE: a rank exiting alone would leave the ranks without this error waiting in a collective."""
        where = f" (rank {self.rank} of {self.world_size})" if self.comm is not None else ""
        print(f"{program}: error{where}: {message}", file=sys.stderr, flush=True)
        if self.comm is not None:
            self.abort(code)
        return code

    def require_one_process(self, program, what):
        """A usage error under MPI (see usage_error): `what` runs in one process."""
        if self.comm is not None:
            self.usage_error(program, f"{what} runs in one process: run it without mpirun")

    def abort(self, code):
        """Stop every rank of the job at once with exit code `code` (MPI_Abort); in one process, sys.exit."""
        sys.stderr.flush()
        if self.comm is None:
            sys.exit(code)
        self.comm.Abort(code)

    @contextlib.contextmanager
    def abort_on_error(self, program):
        """Under MPI, an exception on one rank would leave the others waiting forever in their next
        collective: print it with this rank's number and abort the whole job (exit 1) instead.
        In one process the exception propagates as usual."""
        try:
            yield self
        except Exception as e:
            if self.comm is None:
                raise
            traceback.print_exc()
            print(f"{program}: error on rank {self.rank} of {self.world_size}: {type(e).__name__}: {e}; "
                  "stopping every rank", file=sys.stderr, flush=True)
            self.abort(1)


def launched_by_mpi():
    """The name of the launcher variable that says an MPI launcher started this process, or None."""
    return next((name for name in LAUNCHER_ENV if name in os.environ), None)


def init():
    """The World of this process. Under an MPI launcher (mpirun, mpiexec, srun) with more than one rank,
    MPI is initialized through mpi4py; otherwise a single-process World where everything is a no-op.
    Raises RuntimeError with the fix when the launcher is there but mpi4py is not."""
    variable = launched_by_mpi()
    if variable is None:
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(f"this process was started by an MPI launcher ({variable}={os.environ[variable]}) "
                           "but mpi4py is not installed: pip install -e \".[mpi]\"") from None
    comm = MPI.COMM_WORLD
    return World(comm if comm.Get_size() > 1 else None)
