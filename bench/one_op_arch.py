"""Write the net config of one path through the search space: the same op on every mixed edge
(the diagnostic paths of bench/README.md, search.py section).

    python bench/one_op_arch.py 3x3_MBConv6 out.json                       # the default space
    python bench/one_op_arch.py 3x3_FusedMBConv2 out.json first_conv=16 first_block=16 \
        'widths=[24,48,96,128,224]' 'candidates=["3x3_MBConv3","3x3_FusedMBConv2"]'

KEY=VALUE (JSON values) override `conf/search/default.yaml`; --classes and --size as the data's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from fruitnet.search.supernet import SearchSpace, SuperNet

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("op", help="a candidate name, e.g. 3x3_MBConv6")
    p.add_argument("out", type=Path, help="the arch JSON to write")
    p.add_argument("overrides", nargs="*", help="KEY=JSON overrides of the search space")
    p.add_argument("--classes", type=int, default=95)
    p.add_argument("--size", type=int, default=100)
    args = p.parse_args(argv)
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "default.yaml"))
    for item in args.overrides:
        key, value = item.split("=", 1)
        cfg[key] = json.loads(value)
    if args.op not in cfg["candidates"]:
        cfg["candidates"] = [*cfg["candidates"], args.op]
    net = SuperNet(SearchSpace.from_config(cfg), num_classes=args.classes, input_size=args.size)
    choices = [info["names"].index(args.op) for info in net.edge_info]
    args.out.write_text(json.dumps(net.export_arch(choices), indent=1))


if __name__ == "__main__":
    main()
