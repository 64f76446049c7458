"""The training step of the paper's PyTorch baseline, timed, for `bench_training.py` to compare.

The MTG-Jamendo VGG-ish baseline as its PyTorch code defines it (BatchNorm on the input; five
blocks of 3x3 conv, BatchNorm, ELU, max-pool with 64, 128, 128, 128, 64 channels and pools (2,4),
(2,4), (2,4), (3,5), (4,4); dropout 0.5; dense; sigmoid), trained as the paper trains it: Adam
with learning rate 1e-4 and binary cross-entropy (`nn.BCELoss` on the sigmoid scores). One step
is forward, backward and the Adam update on a batch of random tensors (batch 16 of 96 x 1400
log-mel frames by default), in the model's training mode.

Not a tfmood dependency: run it with an environment holding torch, e.g.
`/tmp/venv_ess/bin/python bench/bench_torch_step.py --threads 2`; it prints one JSON line (the
seconds of each timed step, torch version, threads). With `--serve` it warms up, prints "ready",
then answers each line "STEPS n" on stdin with one JSON line of n step times, until "QUIT":
`bench_training.py --against-torch PYTHON` drives it so that its rounds interleave with the
Keras step's in the same run.
"""

import argparse
import json
import sys
import time

import torch
from torch import nn

POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))
FILTERS = (64, 128, 128, 128, 64)
N_TAGS = 56
SEED = 0


class VGGish(nn.Module):
    """The MTG-Jamendo baseline: BN on the input, 5 x (3x3 conv, BN, ELU, max-pool), dense."""

    def __init__(self, n_tags: int = N_TAGS):
        super().__init__()
        self.bn_init = nn.BatchNorm2d(1)
        channels = 1
        for i, (filters, pool) in enumerate(zip(FILTERS, POOLS), 1):
            setattr(self, f"conv_{i}", nn.Conv2d(channels, filters, 3, padding=1))
            setattr(self, f"bn_{i}", nn.BatchNorm2d(filters))
            setattr(self, f"mp_{i}", nn.MaxPool2d(pool))
            channels = filters
        self.elu = nn.ELU()
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(channels, n_tags)

    def forward(self, x):  # (batch, 96, frames)
        x = self.bn_init(x.unsqueeze(1))
        for i in range(1, 6):
            x = self.elu(getattr(self, f"bn_{i}")(getattr(self, f"conv_{i}")(x)))
            x = getattr(self, f"mp_{i}")(x)
        x = self.dropout(x.flatten(1))
        return torch.sigmoid(self.dense(x))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-frames", type=int, default=1400)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--serve", action="store_true", help="answer STEPS n lines on stdin")
    return parser.parse_args()


def training_step(batch_size: int, n_frames: int):
    """A callable running one Adam + BCE training step of the baseline on a random batch."""
    torch.manual_seed(SEED)
    model = VGGish().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_function = nn.BCELoss()
    generator = torch.Generator().manual_seed(SEED)
    mel = torch.randn(batch_size, 96, n_frames, generator=generator) * 20.0 - 40.0
    labels = (torch.rand(batch_size, N_TAGS, generator=generator) < 0.05).float()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(mel), labels)
        loss.backward()
        optimizer.step()
        return loss.item()  # PyTorch's CPU ops are synchronous: the step is done here

    return step


def timed(step, count: int) -> list:
    """Wall seconds of `count` calls of `step`."""
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def serve(step) -> None:
    """Answer "STEPS n" lines with the JSON list of n step times, until "QUIT" or EOF."""
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "QUIT":
            break
        if words[0] != "STEPS" or len(words) != 2 or not words[1].isdigit():
            print(json.dumps({"error": f"expected 'STEPS n' or 'QUIT', got {line.strip()!r}"}),
                  flush=True)  # fmt: skip
            continue
        print(json.dumps(timed(step, int(words[1]))), flush=True)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    step = training_step(args.batch_size, args.n_frames)
    timed(step, args.warmup)
    if args.serve:
        serve(step)
        return
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "n_frames": args.n_frames,
        "seconds": timed(step, args.steps),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
