"""Training speed and memory: s/iteration, data-wait share and peak memory for a patch size.

Usage: python bench/bench_train.py [--device cpu|cuda] [--patch 64 64 32] [--batch 2] [--iterations 20] [--amp]
       [--data] [--workers 2]
Without --data every step trains on one fixed random batch (the network alone). With
--data each step takes its batch the way training does (``training/batches.py``:
patches sampled ahead by --workers background threads from two 256×256×160 cases,
moved to the device, augmented there) and the share of step time spent waiting for
it is printed as data_wait_pct. Prints one line of figures; record them in
docs/benchmarks.md with the command.
"""

import argparse
import resource
import time

import numpy as np
import torch

from TransferSegLib.training.losses import partial_label_loss
from TransferSegLib.training.networks import build_network, default_network_spec
from TransferSegLib.training.devices import resolve_device
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
    p.add_argument("--data", action="store_true", help="sample, move and augment a batch every step (the real pipeline)")
    p.add_argument("--workers", type=int, default=2, help="background sampling threads with --data (0: inline)")
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
    source = _batch_source(args, device) if args.data else None
    times, waits = [], []
    for i in range(args.warmup + args.iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if source is not None:
            batch = source.next()
            x, y, ann = batch.images, batch.labels, batch.annotated
            if i >= args.warmup:
                waits.append(batch.wait_s)
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
    if source is not None:
        source.close()
    wait = f" data_wait_pct={100 * sum(waits) / sum(times):.1f}" if waits else ""
    peak = (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"device={device} threads={torch.get_num_threads()} patch={tuple(args.patch)} batch={args.batch} "
          f"strategy={args.strategy} amp={args.amp} s/it={np.median(times):.3f} it/s={1 / np.median(times):.2f} "
          f"peak_{'gpu' if device.type == 'cuda' else 'rss'}_gb={peak:.2f}" + wait)


def _batch_source(args, device):
    """Two synthetic 256×256×160 cases with organ-like boxes, sampled as training samples them."""
    from TransferSegLib.training.augment import AugmentConfig
    from TransferSegLib.training.batches import BatchSource
    from TransferSegLib.training.sampling import PreparedCase

    rng = np.random.default_rng(0)
    cases = []
    for n in range(2):
        label = np.zeros((256, 256, 160), np.uint8)
        for c in range(1, args.classes):
            lo = rng.integers(20, 160, 3)
            label[lo[0]:lo[0] + 60, lo[1]:lo[1] + 50, lo[2] // 2:lo[2] // 2 + 40] = c
        image = (label * 0.3 + rng.normal(0, 0.2, label.shape)).astype(np.float32)
        case = PreparedCase(f"case{n}", image, label, np.ones(args.classes, bool))
        case.index_foreground(np.random.default_rng(0))
        cases.append(case)
    return BatchSource(cases, args.patch, args.batch, 0.67, seed=0, device=device, augment=AugmentConfig(),
                       workers=args.workers)


if __name__ == "__main__":
    main()
