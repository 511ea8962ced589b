"""Checkpoint and resume for jobs that gpurun may move between hosts. Standard library only; copy it next to your script.

A job submitted with ``gpurun run --checkpoint-signal SIGUSR1 ...`` (or ``# gpurun: checkpoint-signal=SIGUSR1``)
can be moved to another host (``gpurun migrate``, ``gpurun drain``, load-driven moves, preemption). gpurun then:

1. sends the job that signal; ``GPURUN_CHECKPOINT_DIR`` names a folder the job may write its state to;
2. waits for the job to exit with code 85 (``EXIT_CODE``) within the broker's ``migration.checkpointTimeout``;
3. copies the folder to the new host and starts the job again there with ``GPURUN_RESUME_FROM`` set to it.

Use it like this::

    from gpurun_checkpoint import Checkpoint

    ck = Checkpoint()
    state = ck.load({"step": 0})          # what the last checkpoint saved, or the default on a fresh start
    for step in range(state["step"], 1000):
        ...one step of work...
        state["step"] = step + 1
        ck.checkpoint_if_asked(state)      # saves and exits 85 when gpurun asked; otherwise returns at once

Binary state (a PyTorch model, numpy arrays) goes in files of its own::

    if ck.requested:
        torch.save(model.state_dict(), ck.path("model.pt"))
        ck.save({"epoch": epoch})          # written last: its presence says the checkpoint is whole
        ck.exit()
    if ck.resuming:
        model.load_state_dict(torch.load(ck.resume_path("model.pt")))

Outside gpurun (no GPURUN_CHECKPOINT_DIR), nothing is installed: ``requested`` stays False and ``load`` returns
the default. Writes are atomic (a temporary file renamed into place), so a half-written checkpoint is never read.
"""
import json
import os
import signal
import sys

#: The exit code by which a job says "my state is saved; resume me from it".
EXIT_CODE = 85

_STATE = "state.json"


class Checkpoint:
    def __init__(self) -> None:
        self.dir = os.environ.get("GPURUN_CHECKPOINT_DIR")
        self.resume_dir = os.environ.get("GPURUN_RESUME_FROM")
        self.requested = False
        sig = os.environ.get("GPURUN_CHECKPOINT_SIGNAL")
        if self.dir and sig and hasattr(signal, sig):
            signal.signal(getattr(signal, sig), self._asked)

    def _asked(self, _signum, _frame) -> None:
        # Only a flag: the job saves at its next safe point (between steps), never in the middle of one.
        self.requested = True

    @property
    def resuming(self) -> bool:
        """True when this run starts from a checkpoint (GPURUN_RESUME_FROM names a folder with a saved state)."""
        return bool(self.resume_dir) and os.path.exists(os.path.join(self.resume_dir, _STATE))

    def load(self, default=None):
        """The state the last checkpoint saved (a JSON value), or `default` when there is none."""
        if not self.resuming:
            return default
        with open(os.path.join(self.resume_dir, _STATE)) as f:
            return json.load(f)

    def path(self, name: str) -> str:
        """Where to write a file of the checkpoint (e.g. torch.save(..., ck.path("model.pt")))."""
        if not self.dir:
            raise RuntimeError("no GPURUN_CHECKPOINT_DIR: this job was not started by gpurun on a host that checkpoints")
        return os.path.join(self.dir, name)

    def resume_path(self, name: str) -> str:
        """A file of the checkpoint this run resumes from."""
        return os.path.join(self.resume_dir or "", name)

    def save(self, state) -> None:
        """Writes `state` (JSON-serialisable) atomically; write other files of the checkpoint before it."""
        target = self.path(_STATE)
        tmp = target + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def exit(self) -> None:
        """Ends the job with EXIT_CODE: gpurun resumes it (on another host) from what was saved."""
        sys.stdout.flush()
        sys.stderr.flush()
        sys.exit(EXIT_CODE)

    def checkpoint_if_asked(self, state) -> None:
        """When gpurun asked for a checkpoint: saves `state` and exits with EXIT_CODE. Otherwise returns at once."""
        if self.requested:
            self.save(state)
            self.exit()
