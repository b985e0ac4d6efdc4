"""The study's training script, end to end from JPEG files, as the bench's baseline.

    python bench/study_loop.py --root fruits-360-small --model cnn --batch 128 --epochs 2 \
        --out timeline.json

torchvision ``ImageFolder`` + PIL + ``ToTensor`` over ``Training/``, 10 % carved off (seeded) for
validation, two ``DataLoader`` workers, the study's fp32 network (basic CNN stages conv, ReLU,
pool), Adam lr 1e-3, a plain for-loop with a validation pass after every epoch. It imports only
torch, torchvision and the network builder, as the study's script did, and writes the same
timeline as `fruitnet.callbacks.measure.EpochClock` (``time.time()`` stamps): the end of the first
training step, and each epoch's start, end of training batches and end (after validation).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, random_split

from fruitnet.models import create_model


def study_model(name: str, size: int, num_classes: int) -> nn.Module:
    """The network as the study built it: fruitnet's basic CNN pools before its ReLU (the same
    function, less work); the study's stages were conv, ReLU, pool."""
    model = create_model(name, num_classes=num_classes, input_size=size)
    if name == "cnn":
        layers = list(model.features.named_children())  # (conv, pool, relu) per stage
        order = []
        for i in range(0, len(layers), 3):
            conv, pool, relu = layers[i : i + 3]
            order += [conv, relu, pool]
        model.features = nn.Sequential(OrderedDict(order))
    return model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-batches", type=int, default=None, help="training batches per epoch")
    p.add_argument("--limit-val-batches", type=int, default=None, help="validation batches")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    data = torchvision.datasets.ImageFolder(
        args.root / "Training", transform=torchvision.transforms.ToTensor()
    )
    n_val = round(0.1 * len(data))
    train, val = random_split(
        data, [len(data) - n_val, n_val], generator=torch.Generator().manual_seed(args.seed)
    )
    train_loader = DataLoader(train, batch_size=args.batch, shuffle=True, num_workers=args.workers)
    val_loader = DataLoader(val, batch_size=args.batch, shuffle=False, num_workers=args.workers)
    size = data[0][0].shape[-1]
    device = torch.device(args.device)
    model = study_model(args.model, size, len(data.classes)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()

    t: dict = {"epochs": []}
    for epoch in range(args.epochs):
        record = {"start": time.time(), "images": 0}
        t["epochs"].append(record)
        model.train()
        running, batches = 0.0, 0
        for i, (x, y) in enumerate(train_loader):
            if args.limit_batches is not None and i >= args.limit_batches:
                break
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item()  # also the step's host sync on a GPU
            batches += 1
            record["images"] += len(y)
            if "first_step" not in t:
                t["first_step"] = time.time()
        record["train_end"] = time.time()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for i, (x, y) in enumerate(val_loader):
                if args.limit_val_batches is not None and i >= args.limit_val_batches:
                    break
                x, y = x.to(device), y.to(device)
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
        record["end"] = time.time()
        print(
            f"epoch {epoch + 1}: loss {running / max(1, batches):.4f}, val acc {correct / max(1, total):.4f}, "
            f"{record['end'] - record['start']:.1f} s",
            flush=True,
        )
    t["fit_end"] = time.time()
    args.out.write_text(json.dumps(t))


if __name__ == "__main__":
    main()
