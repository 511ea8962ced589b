"""A stand-in training script: a few epochs, one loss per line. Needs no ML library.

Run it on the embedded default with `npm start`, or `npx gpurun run -- python3 examples/train.py`.
Submitted with `--checkpoint-signal SIGUSR1` it can be moved between hosts: it saves its epoch, loss and random state
with gpurun_checkpoint.py (next to it) and goes on from there.
"""
import math
import os
import random
import time

from gpurun_checkpoint import Checkpoint

# gpurun: time=5m


def main() -> None:
    epochs = int(os.environ.get("EPOCHS", "5"))
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"training on {'GPU ' + gpus if gpus else 'CPU (no GPU assigned)'} for {epochs} epochs", flush=True)
    random.seed(0)
    ck = Checkpoint()
    state = ck.load({"epoch": 0, "loss": 2.5, "random": None})
    if state["random"]:
        r = state["random"]
        random.setstate((r[0], tuple(r[1]), r[2]))
    loss = state["loss"]
    for epoch in range(state["epoch"] + 1, epochs + 1):
        time.sleep(float(os.environ.get("EPOCH_SECONDS", "0.6")))
        loss = loss * 0.7 + random.uniform(-0.02, 0.02)
        print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  ppl {math.exp(loss):.2f}", flush=True)
        ck.checkpoint_if_asked({"epoch": epoch, "loss": loss, "random": random.getstate()})
    print("done", flush=True)


if __name__ == "__main__":
    main()
