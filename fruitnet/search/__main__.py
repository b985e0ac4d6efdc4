"""`python -m fruitnet.search`: ProxylessNAS-style search on your data, timed on your device.

    python -m fruitnet.search data=fruits data.root=/path/to/fruits-360 search.target_latency_ms=4
    python -m fruitnet.search ckpt_path=last                 # resume a killed search
    python -m fruitnet.train model=proxyless model.arch=logs/search/runs/<run>/arch.json

Same datamodule, trainer, precision, callbacks, checkpointing and resume as `fruitnet.train`
(both assemble their run with `fruitnet.assemble`; the search's own pieces come from
`fruitnet.search.prepare`). The run directory gets ``arch.json`` (official net-config format),
``search_report.md``, ``edge_probs.png`` and ``results.json``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import hydra
from omegaconf import DictConfig

from fruitnet.config import CONFIG_PATH, check_config, check_keys, run_entry, to_primitive

log = logging.getLogger("fruitnet.search")


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    check_config(cfg)
    # Loaded after the config checks, as in fruitnet.train: `--cfg job` needs no torch.
    from fruitnet.assemble import build_datamodule, build_trainer, run_callbacks, start_run
    from fruitnet.search.module import SearchModule
    from fruitnet.search.prepare import arch_loader, run_latency_table
    from fruitnet.search.report import run_values, write_outputs
    from fruitnet.search.space import SearchSpace

    output_dir, ckpt_path = start_run(cfg)
    search_cfg = to_primitive(cfg.search)
    space = SearchSpace.from_config(search_cfg)  # bad op names etc. fail here, before the data

    dm = build_datamodule(cfg.data)
    t0 = time.perf_counter()
    table = run_latency_table(cfg, search_cfg, space, dm)
    lut_s = time.perf_counter() - t0

    module = SearchModule(
        num_classes=dm.num_classes,
        input_size=dm.input_size,
        space=search_cfg,
        search=search_cfg,
        latency_table=table.to_dict(),
        channels_last=bool(cfg.model.get("channels_last", True)),
        preprocess=dm.preprocess,
        class_names=list(dm.class_names),
    )
    module.arch_loader = arch_loader(dm, int(cfg.seed))

    trainer = build_trainer(cfg, run_callbacks(cfg))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    search_s = time.perf_counter() - started
    if not trainer.is_global_zero:
        return {}
    target = float(search_cfg["target_latency_ms"])
    extra = run_values(
        cfg,
        dm,
        trainer,
        ckpt_path=ckpt_path,
        output_dir=output_dir,
        lut_s=lut_s,
        search_s=search_s,
    )
    results = write_outputs(
        module, output_dir, target_ms=target, search_cfg=search_cfg, extra=extra
    )
    log.info(
        "searched arch: %s (predicted %.3f ms, measured %.3f ms, target %g ms); "
        "train it: python -m fruitnet.train model=proxyless model.arch=%s",
        " ".join(results["chosen"]),
        results["predicted_latency_ms"],
        results["measured_latency_ms"],
        target,
        results["arch_path"],
    )
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="search")
def _main(cfg: DictConfig) -> float | None:
    results = run_entry(run, cfg)
    return results.get("val_acc")


def main() -> float | None:
    check_keys(sys.argv[1:], "search")
    return _main()


if __name__ == "__main__":
    main()
