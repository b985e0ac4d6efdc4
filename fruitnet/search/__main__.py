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
import math
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
    from fruitnet.search.measure import NetTimer
    from fruitnet.search.module import SearchModule
    from fruitnet.search.outcome import ran_words, what_ran, write_unsearched
    from fruitnet.search.prepare import arch_loader, run_latency_table
    from fruitnet.search.report import run_values, write_outputs

    search_cfg, space, targets, several = _settings(cfg)
    output_dir, ckpt_path = start_run(cfg)

    dm = build_datamodule(cfg.data)
    t0 = time.perf_counter()
    table = run_latency_table(cfg, search_cfg, space, dm, targets)
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
    if not trainer.is_global_zero:
        return {}
    ran = what_ran(module)
    images = int(search_cfg.get("select_images", 512))
    extra = {"targets_ms": targets, "select_images": min(images, dm.num_val or 0)}
    if not ran["searched"]:
        extra |= run_values(cfg, dm, trainer, ckpt_path=ckpt_path, output_dir=output_dir,
                            lut_s=lut_s, search_s=time.perf_counter() - started)  # fmt: skip
        results = write_unsearched(output_dir, ran, extra, search_cfg)
        log.warning(
            "no architecture was searched: %s, so there is no arch to train (results.json: "
            "searched: false, no arch.json). To search: %s",
            ran_words(ran),
            results["what_to_change"],
        )
        return results

    with NetTimer(
        module, search_cfg, fresh=bool(search_cfg.get("latency_fresh_process", True))
    ) as timer:
        picks, scored = _choose(cfg, search_cfg, module, dm, targets, images, timer)
        extra |= run_values(cfg, dm, trainer, ckpt_path=ckpt_path, output_dir=output_dir,
                            lut_s=lut_s, search_s=time.perf_counter() - started)  # fmt: skip
        results = write_outputs(
            module,
            output_dir,
            picks=picks,
            scored=scored,
            several=several,
            search_cfg=search_cfg,
            extra={**ran, **extra},
            timer=timer,
        )
    _log_front(results)
    return results


def _choose(
    cfg: DictConfig,
    search_cfg: dict[str, Any],
    module: Any,
    dm: Any,
    targets: list[float],
    images: int,
    timer: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each target's net from the trained supernet (`fruitnet.search.select`), scored on the
    held-out split and timed by ``timer`` unless ``search.select_measure`` is false."""
    from fruitnet.search.prepare import calibration_batches, heldout_batches
    from fruitnet.search.select import select_for_targets

    return select_for_targets(
        module.net,
        module.table,
        targets,
        heldout_batches(module, dm, images),
        evals=int(search_cfg.get("select_evals", 30)),
        seed=int(search_cfg.get("seed", 0)),
        band=float(search_cfg.get("select_band", 0.9)),
        calib=calibration_batches(
            module, dm, int(search_cfg.get("select_bn_images", 256)), int(cfg.seed)
        ),
        measure=(lambda choices: timer.ms(module.net.export_arch(choices)))
        if search_cfg.get("select_measure", True)
        else None,
    )


def _log_front(results: dict[str, Any]) -> None:
    for pick in results["front"]:
        log.info(
            "searched arch for %g ms: %s (predicted %.3f ms, measured %.3f ms in %s, held-out "
            "acc %.2f %%); train it: python -m fruitnet.train model=proxyless model.arch=%s",
            pick["target_ms"],
            " ".join(pick["chosen"]),
            pick["predicted_ms"],
            pick["measured_latency_ms"],
            results["latency_runtime"],
            100 * pick["val_acc"],
            results["arch_path"] or pick["arch_path"],
        )


def _settings(cfg: DictConfig) -> tuple[dict[str, Any], Any, list[float], bool]:
    """The search config, its space and its targets; bad op names, targets and runtimes fail
    here, before the data and the run directory."""
    from fruitnet.search.runtimes import check_runtime
    from fruitnet.search.space import SearchConfigError, SearchSpace, parse_targets

    search_cfg = to_primitive(cfg.search)
    space = SearchSpace.from_config(search_cfg)
    several = parse_targets(search_cfg)
    check_runtime(str(search_cfg.get("runtime", "torch")))
    band = search_cfg.get("select_band", 0.9)
    if isinstance(band, bool) or not isinstance(band, int | float) or not 0 <= band < 1:
        raise SearchConfigError(f"search.select_band must be a number in [0, 1), got {band!r}")
    if several:
        # The architecture phase pulls toward the middle of the targets (geometric mean); each
        # target's net is then chosen from the one supernet
        search_cfg["target_latency_ms"] = math.exp(sum(map(math.log, several)) / len(several))
    return search_cfg, space, several or [float(search_cfg["target_latency_ms"])], bool(several)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="search")
def _main(cfg: DictConfig) -> float | None:
    results = run_entry(run, cfg)
    return results.get("val_acc")


def main() -> float | None:
    check_keys(sys.argv[1:], "search")
    return _main()


if __name__ == "__main__":
    main()
