"""``python -m fruitnet.models``: parameter, size and FLOPs table of every registered model."""

from __future__ import annotations

import argparse

import torch

from fruitnet.models import create_model, get_model_spec, list_models
from fruitnet.models.profile import count_params, flops, fp32_mib, state_dict_mib

SIZES = (100, 224)
STUDY_ORDER = ("cnn", "resnet50", "proxyless")
HEADER = (
    "| model | classes | params @100x100 | params @224x224 | fp32 MiB | state_dict MiB "
    "| GFLOPs @100x100 | GFLOPs @224x224 |"
)
NOTE = (
    "Params, fp32 MiB (floating params + buffers) and state_dict MiB (what "
    "`torch.save(model.state_dict())` weighs) are at each model's default input size "
    "(cnn 100x100, resnet50 and proxyless 224x224). The cnn's flatten width depends on the input "
    "side, so its parameter count differs at 224x224; the other two are size-agnostic. "
    "GFLOPs: torch FlopCounterMode, batch 1, 2 FLOPs per multiply-add."
)


def table_rows(name: str, num_classes: int) -> str:
    default = get_model_spec(name).input_size
    models = {s: create_model(name, num_classes=num_classes, input_size=s) for s in SIZES}
    params = {s: count_params(m)[0] for s, m in models.items()}
    gflops = {s: flops(m, s) / 1e9 for s, m in models.items()}
    ref = models[default]
    return (
        f"| {name} | {num_classes:,} | {params[100]:,} | {params[224]:,} | {fp32_mib(ref):.2f} "
        f"| {state_dict_mib(ref):.2f} | {gflops[100]:.3f} | {gflops[224]:.3f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fruitnet.models", description=__doc__)
    parser.add_argument("--classes", type=int, nargs="+", default=[131, 1000])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    names = [n for n in STUDY_ORDER if n in list_models()]
    names += [n for n in list_models() if n not in names]
    for name in names:
        for k in args.classes:
            print(table_rows(name, k), flush=True)
    print()
    print(NOTE)


if __name__ == "__main__":
    main()
