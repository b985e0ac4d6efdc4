"""`python -m fruitnet.export`: a checkpoint -> ONNX, TorchScript or torch.export ExportedProgram.

    python -m fruitnet.export ckpt_path=best.ckpt                       # model.onnx in the run dir
    python -m fruitnet.export ckpt_path=best.ckpt format=torchscript output=fruits.pt
    python -m fruitnet.export ckpt_path=best.ckpt format=exported_program

Input contract of every exported model (the same bytes the datamodule feeds):
  input  ``images``: uint8, N x 3 x S x S, RGB, NCHW, dynamic N. Pixels as
         `fruitnet.data.io.load_image(path, resize=, crop=, size=)` returns them, i.e. the geometry
         of ``preprocess`` (resize/crop/size) is applied by the caller;
         /255 and the mean/std normalisation happen inside the model.
  output ``logits``: float32 N x classes; ``probs``: softmax of the logits.
The metadata (class names, preprocess dict, model name, this contract) is stored in the file:
ONNX ``metadata_props``, TorchScript ``_extra_files["fruitnet.json"]``, ExportedProgram
``extra_files["fruitnet.json"]``; and beside it as ``<output>.json``, with the verification numbers.
`read_metadata(path)` reads it back from any of the three.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

import fruitnet
from fruitnet.checkpoints import class_names_of, load_classifier
from fruitnet.config import CONFIG_PATH, run_entry
from fruitnet.data.transforms import BatchTransform
from fruitnet.files import file_mib, write_json
from fruitnet.module import ClassifierModule
from fruitnet.timing import median_ms

log = logging.getLogger("fruitnet.export")

# Accepted file suffixes per format, the default first. torch.export.load insists on .pt2, and
# read_metadata tells the formats apart by suffix.
FORMATS = {
    "onnx": (".onnx",),
    "torchscript": (".pt", ".pth", ".ts"),
    "exported_program": (".pt2",),
}
META_FILE = "fruitnet.json"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs")
INPUT_CONTRACT = (
    "images: uint8 RGB NCHW (N x 3 x size x size, N dynamic), decoded and resized/cropped as in "
    "preprocess (fruitnet.data.io.load_image); the model scales by 1/255 and normalises with "
    "preprocess mean/std itself. Outputs: logits (float32 N x classes), probs (softmax)."
)


class ExportError(RuntimeError):
    """The exported file does not reproduce the PyTorch outputs, or cannot be written."""


class ExportModel(nn.Module):
    """What gets exported: uint8 images in, ``(logits, probs)`` out, normalisation included.

    Baking the normalisation in leaves the consumer one step (decode + resize/crop to uint8)
    instead of two, and mean/std cannot drift from what the network was trained with.
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.transform = BatchTransform(mean, std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(self.transform(images))
        return logits, logits.softmax(-1)


def export_model(module: ClassifierModule) -> ExportModel:
    """A copy of the network in contiguous memory format, with the checkpoint's normalisation.

    channels_last is a speed choice of the PyTorch runtime, not part of the model; runtimes that
    load the file pick their own layout.
    """
    pre = module.hparams.preprocess
    net = copy.deepcopy(module.net).to("cpu", memory_format=torch.contiguous_format).float()
    return ExportModel(net, pre["mean"], pre["std"]).eval()


def pytorch_reference(module: ClassifierModule) -> ExportModel:
    """The same computation as fruitnet runs it in PyTorch (the module's own memory format), the
    baseline for the latency comparison."""
    pre = module.hparams.preprocess
    return ExportModel(module.to("cpu").float(), pre["mean"], pre["std"]).eval()


def metadata(module: ClassifierModule, ckpt_path: str, fmt: str) -> dict[str, Any]:
    pre = dict(module.hparams.preprocess)
    return {
        "format": fmt,
        "model_name": module.hparams.model_name,
        "num_classes": int(module.hparams.num_classes),
        "class_names": class_names_of(module),
        "preprocess": pre,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": ["N", 3, pre["size"], pre["size"]],
            "layout": "NCHW RGB",
        },
        "outputs": list(OUTPUT_NAMES),
        "input_contract": INPUT_CONTRACT,
        "checkpoint": str(ckpt_path),
        "fruitnet_version": fruitnet.__version__,
        "torch_version": torch.__version__,
    }


def example_input(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen)


# --------------------------------------------------------------------------- writers


def save_onnx(model: ExportModel, example: torch.Tensor, path: Path, meta: dict, opset: int):
    import onnx

    axes = {name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # dynamo=False: the torch.export-based exporter needs onnxscript, which the [onnx] extra
        # does not install; the TorchScript-based one needs nothing more and handles these
        # networks. Its deprecation notice is not something a user of this command can act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
        )
    proto = onnx.load(str(path))
    # Plain keys for any ONNX consumer, plus the whole record under "fruitnet".
    props = {
        "model_name": meta["model_name"],
        "class_names": json.dumps(meta["class_names"]),
        "preprocess": json.dumps(meta["preprocess"]),
        "input_contract": meta["input_contract"],
        "fruitnet": json.dumps(meta),
    }
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def save_torchscript(model: ExportModel, example: torch.Tensor, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream but is what format=torchscript asks for.
        warnings.filterwarnings("ignore", category=FutureWarning)
        traced = torch.jit.trace(model, (example,))
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(meta)})


def save_exported_program(model: ExportModel, example: torch.Tensor, path: Path, meta: dict):
    batch = torch.export.Dim("N", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}})
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})


# --------------------------------------------------------------------------- loaders


def load_exported(path: str | Path, fmt: str) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """A callable uint8 array -> (logits, probs) arrays running the exported file."""
    path = str(path)
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Same thread count as PyTorch, so the latency comparison is like for like.
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda x: tuple(session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}))
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            module = torch.jit.load(path, map_location="cpu")
    elif fmt == "exported_program":
        module = torch.export.load(path).module()
    else:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")

    @torch.inference_mode()
    def call(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(t.numpy() for t in module(torch.from_numpy(x)))

    return call


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata stored inside an exported file (format from its suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnx

        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        return json.loads(props["fruitnet"])
    extra = {META_FILE: ""}
    if suffix in FORMATS["torchscript"]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    elif suffix in FORMATS["exported_program"]:
        torch.export.load(str(path), extra_files=extra)
    else:
        raise ValueError(f"unknown export suffix {suffix!r} of {path}")
    return json.loads(extra[META_FILE])


# --------------------------------------------------------------------------- checks


def verify(model: ExportModel, runner: Callable, size: int, atol: float) -> dict[str, float]:
    """Max |difference| of logits and probs, on a batch size other than the traced one."""
    x = example_input(size, batch=3, seed=1)
    with torch.inference_mode():
        ref = [t.numpy() for t in model(x)]
    got = runner(x.numpy())
    diffs = {
        f"max_abs_diff_{name}": float(np.abs(g - r).max())
        for name, g, r in zip(OUTPUT_NAMES, got, ref, strict=True)
    }
    worst = max(diffs.values())
    if not worst <= atol:  # also catches NaN
        raise ExportError(
            f"exported model differs from PyTorch by {worst:.3g} > atol={atol}: {diffs}"
        )
    return diffs


def check_export(
    path: Path, fmt: str, model: ExportModel, module: ClassifierModule, atol: float, iters: int
) -> dict[str, Any]:
    """Run the written file: outputs against PyTorch, and batch-1 latency of both."""
    try:
        runner = load_exported(path, fmt)
    except ImportError:
        log.warning(
            "onnxruntime is not installed: ONNX outputs not checked (pip install '.[onnx]')"
        )
        return {}
    size = int(module.hparams.preprocess["size"])
    record: dict[str, Any] = {**verify(model, runner, size, atol), "atol": atol}
    one = example_input(size, batch=1, seed=2)
    reference = pytorch_reference(module)
    with torch.inference_mode():
        record["latency_ms_b1_pytorch"] = median_ms(lambda: reference(one), warmup=5, repeats=iters)
    record["latency_ms_b1_exported"] = median_ms(
        lambda: runner(one.numpy()), warmup=5, repeats=iters
    )
    record["runtime"] = "onnxruntime" if fmt == "onnx" else fmt
    record["threads"] = torch.get_num_threads()
    log.info(
        "outputs match PyTorch (max |diff| logits %.2g, probs %.2g <= %g); batch-1 latency "
        "(median of %d, %d threads): PyTorch %.2f ms, %s %.2f ms",
        record["max_abs_diff_logits"],
        record["max_abs_diff_probs"],
        atol,
        iters,
        record["threads"],
        record["latency_ms_b1_pytorch"],
        record["runtime"],
        record["latency_ms_b1_exported"],
    )
    return record


def output_path(output: str | None, output_dir: Path, fmt: str) -> Path:
    """``output``, checked against the format's suffixes; default ``model.<suffix>`` in the run
    directory."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if not output:
        return output_dir / f"model{FORMATS[fmt][0]}"
    path = Path(output).expanduser()
    if path.suffix.lower() not in FORMATS[fmt]:
        raise ValueError(f"output for format={fmt} must end in {' or '.join(FORMATS[fmt])}: {path}")
    return path


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export as configured; returns the record also written to ``<output>.json``."""
    fmt = str(cfg.format)
    path = output_path(cfg.output, Path(cfg.paths.output_dir), fmt)
    path.parent.mkdir(parents=True, exist_ok=True)

    module = load_classifier(cfg.ckpt_path)
    model = export_model(module)
    size = int(module.hparams.preprocess["size"])
    meta = metadata(module, cfg.ckpt_path, fmt)
    example = example_input(size)
    started = time.perf_counter()
    if fmt == "onnx":
        save_onnx(model, example, path, meta, int(cfg.opset))
    elif fmt == "torchscript":
        save_torchscript(model, example, path, meta)
    else:
        save_exported_program(model, example, path, meta)
    record: dict[str, Any] = {
        **meta,
        "output": str(path),
        "file_mib": file_mib(path),
        "export_s": time.perf_counter() - started,
    }
    log.info("wrote %s (%s, %.2f MiB)", path, fmt, record["file_mib"])

    if cfg.verify:
        record.update(
            check_export(path, fmt, model, module, float(cfg.atol), int(cfg.latency_iters))
        )
    write_json(path.with_name(path.name + ".json"), record)
    return record


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    run_entry(run, cfg)


if __name__ == "__main__":
    main()
