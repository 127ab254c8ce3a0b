#!/usr/bin/env python3
"""PyTorch peer for bench/parallel: DistributedDataParallel (gloo) training throughput of the CIFAR
ResNets of bench/torch_train.py on synthetic 32x32 images, N processes of T threads each, each process
taking its slice of the global batch. Forward + backward (gradients all-reduced by DDP) + SGD step.
Prints "<format> <images/s> <seconds per step, median>" for the faster memory format (decided on a
short probe, or for every format with --probe-batch 0), after "probe <format> <seconds> <batch>" lines."""
import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import MODELS, CifarResNet  # noqa: E402


def measure(args, rank, channels_last, batch, warmup, steps):
    torch.manual_seed(0)  # the same initial weights on every process (DDP also broadcasts them)
    model = CifarResNet(*MODELS[args.model])
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch * args.procs, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (batch * args.procs,), generator=generator)
    images = images[rank * batch:(rank + 1) * batch].contiguous()
    labels = labels[rank * batch:(rank + 1) * batch].contiguous()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for step in range(warmup + steps):
        dist.barrier()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(ddp(images), labels).backward()
        opt.step()
        if step >= warmup:
            seconds.append(time.perf_counter() - start)
    # the slowest process sets the pace of the step
    median = torch.tensor([statistics.median(seconds)], dtype=torch.float64)
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    return median.item()


def worker(rank, args, port):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=args.procs)
    formats = args.formats.split(",")
    if len(formats) > 1 and args.probe_batch > 0:
        # the faster format on a short probe at a small batch, then the full measurement of that one
        probes = []
        for fmt in formats:
            seconds = measure(args, rank, fmt == "channels_last", args.probe_batch, 1, 2)
            probes.append((seconds, fmt))
            if rank == 0:
                print("probe", fmt, "%.4f" % seconds, args.probe_batch, flush=True)
        formats = [min(probes)[1]]
    for fmt in formats:
        seconds = measure(args, rank, fmt == "channels_last", args.batch, args.warmup, args.steps)
        if rank == 0:
            print(fmt, "%.2f" % (args.batch * args.procs / seconds), "%.4f" % seconds, flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64, help="samples per process")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--formats", default="nchw,channels_last")
    p.add_argument("--probe-batch", type=int, default=8,
                   help="with several formats, time two steps per format at this batch per process and measure "
                        "only the faster one (0: measure every format in full)")
    args = p.parse_args()
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args, port), nprocs=args.procs, join=True)


if __name__ == "__main__":
    main()
