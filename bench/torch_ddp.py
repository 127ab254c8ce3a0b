#!/usr/bin/env python3
"""PyTorch peer for bench/parallel: DistributedDataParallel (gloo) training throughput of the CIFAR
ResNets of bench/torch_train.py on synthetic 32x32 images, N processes of T threads each, each process
taking its slice of the global batch. Forward + backward (gradients all-reduced by DDP) + SGD step.
Prints one "<format> <images/s> <seconds per step, median>" line per memory format."""
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


def measure(args, rank, channels_last):
    torch.manual_seed(0)  # the same initial weights on every process (DDP also broadcasts them)
    model = CifarResNet(*MODELS[args.model])
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch * args.procs, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (args.batch * args.procs,), generator=generator)
    images = images[rank * args.batch:(rank + 1) * args.batch].contiguous()
    labels = labels[rank * args.batch:(rank + 1) * args.batch].contiguous()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for step in range(args.warmup + args.steps):
        dist.barrier()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(ddp(images), labels).backward()
        opt.step()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    # the slowest process sets the pace of the step
    median = torch.tensor([statistics.median(seconds)], dtype=torch.float64)
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    return median.item()


def worker(rank, args, port):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=args.procs)
    for fmt in args.formats.split(","):
        seconds = measure(args, rank, fmt == "channels_last")
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
    args = p.parse_args()
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args, port), nprocs=args.procs, join=True)


if __name__ == "__main__":
    main()
