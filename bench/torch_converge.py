#!/usr/bin/python3
"""PyTorch peer of the convergence run (docs/benchmarks.md, "Convergence"): He et al.'s ResNet-20 with
projection shortcuts (the model `plait train --model resnet20` builds) on a CIFAR-10 image folder
(`<data>/{train,test}/<class>/*.jpg`), with the recipe plait's flags describe: SGD with Nesterov
momentum 0.9, weight decay on conv and linear weights only, linear warm-up times cosine decay per step
(plait_lr_at), label smoothing, random crop with zero padding 4 and horizontal flip, normalization
with CIFAR-10's mean and std. Prints one JSON line per epoch with the test accuracy.

    /usr/bin/python3 bench/torch_converge.py --data /tmp/data/cifar10 --epochs 30 --batch-size 64 \\
        --lr 0.1 --warmup 400 --label-smoothing 0.1 --threads 2
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.io as tio

from torch_train import BasicBlock  # the same block as the throughput peer

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def load_split(root):
    classes = sorted(os.listdir(root))
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for file in sorted(os.listdir(folder)):
            images.append(tio.decode_jpeg(tio.read_file(os.path.join(folder, file)), mode=tio.ImageReadMode.RGB))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            layers += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1), BasicBlock(width, width, 1)]
            cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def augment(batch, generator):
    """Random crop after zero padding 4, then horizontal flip, per image (uint8 NCHW in, uint8 out)."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator)
    out = torch.empty_like(batch)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(2) if flips[i] else crop
    return out


def normalize(batch):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std


def lr_at(step, total, warmup, peak):
    lr = peak * (1 + math.cos(math.pi * min(step, total) / total)) / 2
    return lr * (step + 1) / warmup if step < warmup else lr


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_x, train_y = load_split(os.path.join(args.data, "train"))
    test_x, test_y = load_split(os.path.join(args.data, "test"))
    test_x = normalize(test_x).contiguous(memory_format=torch.channels_last)
    model = ResNet20().to(memory_format=torch.channels_last)
    decayed = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    others = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": args.weight_decay},
                                 {"params": others, "weight_decay": 0.0}], lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(train_y) // args.batch_size
    total = steps_per_epoch * args.epochs
    step, start = 0, time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        correct = seen = 0
        for b in range(steps_per_epoch):
            index = order[b * args.batch_size:(b + 1) * args.batch_size]
            x = normalize(augment(train_x[index], generator)).contiguous(memory_format=torch.channels_last)
            y = train_y[index]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, args.warmup, args.lr)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            step += 1
        model.eval()
        test_correct = 0
        with torch.no_grad():
            for b in range(0, len(test_y), 500):
                test_correct += (model(test_x[b:b + 500]).argmax(1) == test_y[b:b + 500]).sum().item()
        print(json.dumps({"epoch": epoch, "step": step, "train_accuracy": round(correct / seen, 4),
                          "test_accuracy": test_correct / len(test_y), "seconds": round(time.time() - start, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
