"""``python -m fruitnet.models``: parameter, size and FLOPs table of every registered model.

python -m fruitnet.models                                  # the study's three models
python -m fruitnet.models --list 'efficientnet*'           # what can be built, with params
python -m fruitnet.models --table torchvision/resnet18 timm/vit_tiny_patch16_224 --classes 7
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import sys

import torch

from fruitnet.models import (
    create_model,
    get_model_spec,
    list_families,
    list_models,
    resolve_spec,
)
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
TABLE_NOTE = (
    "Params and MiB at 224x224 (a timm ViT built for 100 px has a shorter position embedding); "
    "fp32 MiB: floating params + buffers; state_dict MiB: what `torch.save(model.state_dict())` "
    "weighs. GFLOPs: torch FlopCounterMode, batch 1, 2 FLOPs per multiply-add; `-`: the network "
    "does not take that size."
)
# Building a network to count its parameters takes 0.05-2 s (timm lists 1,300 names): only this
# many matches of --list get a count unless --max-params says otherwise.
MAX_PARAMS = 40


def split_name(name: str) -> tuple[str, dict[str, str]]:
    """``torchvision/resnet18`` -> ("torchvision", {"arch": "resnet18"}); ``cnn`` -> ("cnn", {})."""
    family, _, arch = name.partition("/")
    return (family, {"arch": arch}) if arch else (family, {})


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


def zoo_row(name: str, num_classes: int) -> str:
    """One row of the ``--table``: params and MiB at 224 px, GFLOPs at 100 and 224 px."""
    family, kwargs = split_name(name)
    cells = {}
    for size in SIZES:
        try:
            net = create_model(family, num_classes=num_classes, input_size=size, **kwargs)
        except ValueError:  # a network that takes one input size only
            cells[size] = None
            continue
        cells[size] = (net, flops(net, size) / 1e9)
    net = cells[224][0]
    gflops = [f"{c[1]:.3f}" if c else "-" for c in (cells[100], cells[224])]
    return (
        f"| {name} | {count_params(net)[0]:,} | {fp32_mib(net):.2f} | {state_dict_mib(net):.2f} "
        f"| {' | '.join(gflops)} |"
    )


def catalog() -> list[str]:
    """Every name that builds: the study's models, then torchvision's and timm's (when installed)."""
    from fruitnet.models import timm_zoo, torchvision_zoo

    names = [n for n in STUDY_ORDER if n in list_models()]
    names += [n for n in list_models() if n not in names]
    names += [f"torchvision/{a}" for a in torchvision_zoo.names()]
    if timm_zoo.available():
        names += [f"timm/{a}" for a in timm_zoo.names()]
    return names


def params_at(name: str, size: int, num_classes: int) -> int | None:
    """Parameter count built on the ``meta`` device (shapes only); None when it does not build."""
    family, kwargs = split_name(name)
    try:
        with torch.device("meta"):
            return count_params(create_model(family, num_classes=num_classes, input_size=size,
                                             **kwargs))[0]  # fmt: skip
    except (NotImplementedError, RuntimeError):  # an init that copies data: build it for real
        return count_params(create_model(family, num_classes=num_classes, input_size=size,
                                         **kwargs))[0]  # fmt: skip
    except ValueError:
        return None


def list_names(pattern: str, size: int, num_classes: int, max_params: int) -> int:
    names = catalog()
    # A pattern without a family matches the name after it too (`resnet*` finds both libraries').
    hits = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(
        n.partition("/")[2], pattern)]  # fmt: skip
    if not hits:
        close = difflib.get_close_matches(pattern, names + [n.partition("/")[2] for n in names], 5)
        print(f"no model matches {pattern!r}" + (f"; closest: {', '.join(close)}" if close else ""))
        return 1
    print(f"| model | params @{size}x{size}, {num_classes} classes |\n|---|---:|")
    for i, name in enumerate(hits):
        count = params_at(name, size, num_classes) if i < max_params else None
        cell = f"{count:,}" if count is not None else ("-" if i < max_params else "(not counted)")
        print(f"| {name} | {cell} |", flush=True)
    if len(hits) > max_params:
        print(f"\n{len(hits)} matches; params counted for the first {max_params} "
              "(--max-params N counts more)")  # fmt: skip
    if "timm/" not in " ".join(names):
        print(
            "\ntimm models are listed once the timm extra is installed: pip install 'fruitnet[timm]'"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fruitnet.models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--classes", type=int, nargs="+", default=None,
                        help="class counts (default: 131 and 1000; --list and --table: 1000)")  # fmt: skip
    parser.add_argument("--list", nargs="?", const="*", default=None, metavar="PATTERN",
                        help="list the models whose name matches PATTERN (fnmatch)")  # fmt: skip
    parser.add_argument("--size", type=int, default=224, help="input size of --list's params")
    parser.add_argument("--max-params", type=int, default=MAX_PARAMS,
                        help="count params of at most this many --list matches")  # fmt: skip
    parser.add_argument("--table", nargs="+", metavar="MODEL",
                        help="size table of these models (family/arch, e.g. timm/resnet18)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.list is not None:
        return list_names(args.list, args.size, (args.classes or [1000])[0], args.max_params)
    if args.table:
        try:
            return zoo_table(args.table, (args.classes or [1000])[0])
        except ValueError as err:
            print(f"python -m fruitnet.models: {err}", file=sys.stderr)
            return 2
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    names = [n for n in STUDY_ORDER if n in list_models()]
    names += [n for n in list_models() if n not in names]
    for name in names:
        for k in args.classes or [131, 1000]:
            print(table_rows(name, k), flush=True)
    print()
    print(NOTE)
    return 0


def zoo_table(names: list[str], num_classes: int) -> int:
    for name in names:  # every name checked before the first (slow) row
        family, kwargs = split_name(name)
        if family not in list_models() + list_families():
            raise ValueError(f"unknown model {name!r}: a study model or family/arch")
        resolve_spec(family, kwargs)
    header = "| model | params | fp32 MiB | state_dict MiB | GFLOPs @100x100 | GFLOPs @224x224 |"
    print(f"{header}\n|---|---:|---:|---:|---:|---:|")
    for name in names:
        print(zoo_row(name, num_classes), flush=True)
    print(f"\n{num_classes} classes. {TABLE_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
