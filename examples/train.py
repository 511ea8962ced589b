"""A stand-in training script: a few epochs, one loss per line. Needs no ML library.

Run it on the embedded default with `npm start`, or `npx gpurun run -- python3 examples/train.py`.
"""
import math
import os
import random
import time

# gpurun: time=5m


def main() -> None:
    epochs = int(os.environ.get("EPOCHS", "5"))
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"training on {'GPU ' + gpus if gpus else 'CPU (no GPU assigned)'} for {epochs} epochs", flush=True)
    random.seed(0)
    loss = 2.5
    for epoch in range(1, epochs + 1):
        time.sleep(float(os.environ.get("EPOCH_SECONDS", "0.6")))
        loss = loss * 0.7 + random.uniform(-0.02, 0.02)
        print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  ppl {math.exp(loss):.2f}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
