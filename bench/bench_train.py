"""Training speed and memory: iterations/s and peak memory for a patch size.

Usage: python bench/bench_train.py [--device cpu|cuda] [--patch 64 64 32] [--batch 2] [--iterations 20] [--amp]
Prints one line of figures; record them in docs/benchmarks.md with the command.
"""

import argparse
import resource
import time

import numpy as np
import torch

from TransferSegLib.training.losses import partial_label_loss
from TransferSegLib.training.networks import build_network, default_network_spec
from TransferSegLib.training.loop import resolve_device
from TransferSegLib.training.transfer import apply_strategy


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 32])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--strategy", default="full")
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_network(default_network_spec(1, args.classes)).to(device)
    apply_strategy(model, args.strategy)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    x = torch.randn(args.batch, 1, *args.patch, device=device)
    y = torch.randint(0, args.classes, (args.batch, *args.patch), device=device)
    ann = torch.ones(args.batch, args.classes, dtype=torch.bool, device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=args.amp and device.type == "cuda"):
            out = model(x)
        loss = partial_label_loss(out.float(), y, ann)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"device={device} threads={torch.get_num_threads()} patch={tuple(args.patch)} batch={args.batch} "
          f"strategy={args.strategy} amp={args.amp} s/it={np.median(times):.3f} it/s={1 / np.median(times):.2f} "
          f"peak_{'gpu' if device.type == 'cuda' else 'rss'}_gb={peak:.2f}")


if __name__ == "__main__":
    main()
