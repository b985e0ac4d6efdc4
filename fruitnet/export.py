"""`python -m fruitnet.export`: a checkpoint -> ONNX, TorchScript or torch.export ExportedProgram.

    python -m fruitnet.export ckpt_path=best.ckpt                       # model.onnx in the run dir
    python -m fruitnet.export ckpt_path=best.ckpt format=torchscript output=fruits.pt
    python -m fruitnet.export ckpt_path=best.ckpt format=exported_program

Input contract of every exported model (the same bytes the datamodule feeds), printed by the
export, and stored as ``input`` (numbers) and ``input_contract`` (words) in its metadata:
  input  ``images``: uint8, N x 3 x S x S, RGB, NCHW, dynamic N, values 0..255 as decoded; /255
         and the mean/std normalisation happen inside the model.
  resize the caller's: ``norm=false`` checkpoints stretch the whole image to S x S (aspect ratio
         not kept); ``norm=true`` ones resize the shorter side to 256 (aspect kept) and cut the
         centre 224 x 224. Bilinear, antialiased, either way, after a large JPEG is decoded at a
         reduced scale (`resize_rule`; ``input.resize`` in the metadata).
  output ``logits``: float32 N x classes; ``probs``: softmax of the logits.
The metadata (class names, preprocess dict, model name, this contract) is stored in the file:
ONNX ``metadata_props``, TorchScript ``_extra_files["fruitnet.json"]``, ExportedProgram
``extra_files["fruitnet.json"]``; and beside it as ``<output>.json``, with the verification numbers.
`read_metadata(path)` reads it back from any of the three. README.md shows a JPEG classified with
onnxruntime and Pillow alone, from these keys.

The network is rebuilt from the checkpoint without Lightning (`fruitnet.checkpoints.load_network`).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

import fruitnet
from fruitnet.checkpoints import Classifier, class_names_of, load_network
from fruitnet.config import CONFIG_PATH, check_keys, run_entry
from fruitnet.deploy import INPUT_NAME, OUTPUT_NAMES, ExportModel, export_onnx, ort_session
from fruitnet.files import file_mib, write_json
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
# What fruitnet.data.io.resize_crop does: torchvision's resize of a uint8 tensor, antialiased.
INTERPOLATION = "bilinear, antialiased (Pillow's Image.BILINEAR gives the same to within 1 of 255)"


class ExportError(RuntimeError):
    """The exported file does not reproduce the PyTorch outputs, or cannot be written."""


def export_model(module: Classifier) -> ExportModel:
    """A copy of the network in contiguous memory format, with the checkpoint's normalisation.

    channels_last is a speed choice of the PyTorch runtime, not part of the model; runtimes that
    load the file pick their own layout.
    """
    pre = module.hparams["preprocess"]
    net = copy.deepcopy(module.net).to("cpu", memory_format=torch.contiguous_format).float()
    return ExportModel(net, pre["mean"], pre["std"]).eval()


def pytorch_reference(module: Classifier) -> ExportModel:
    """The same computation as fruitnet runs it in PyTorch (the module's own memory format), the
    baseline for the latency comparison."""
    pre = module.hparams["preprocess"]
    return ExportModel(module.to("cpu").float(), pre["mean"], pre["std"]).eval()


def resize_rule(pre: dict[str, Any]) -> dict[str, Any]:
    """How any image file becomes the ``S x S`` input (`fruitnet.data.io.load_image`), in numbers
    and in words; ``crop`` None in the preprocess dict means stretch."""
    size, short, crop = int(pre["size"]), pre.get("resize"), pre.get("crop")
    # load_image lets libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale, never below this side;
    # skipping that step moves pixels by up to 93 of 255 on the chest X-ray sample.
    draft = short if (crop is not None and short) else (crop or size)
    steps = [
        f"decode a JPEG at the smallest libjpeg scale that keeps it at least {draft} x {draft} "
        f"(Pillow: Image.draft(None, ({draft}, {draft})))"
    ]
    if crop is None:
        rule = {"rule": "stretch"}
        steps.append(
            f"stretch the whole image to {size} x {size} (width and height scaled apart: the "
            "aspect ratio is not kept, nothing is cut off)"
        )
    else:
        rule = {"rule": "short_side_crop", "short_side": short, "crop": [crop, crop]}
        if short:
            steps.append(
                f"resize so that the shorter side is {short} px and the longer one "
                f"floor(longer * {short} / shorter) (aspect ratio kept)"
            )
        steps.append(
            f"cut out the centre {crop} x {crop} (left = round((W - {crop}) / 2), "
            f"top = round((H - {crop}) / 2))"
        )
        if crop != size:
            steps.append(f"stretch that to {size} x {size}")
    return {**rule, "size": [size, size], "interpolation": INTERPOLATION, "jpeg_draft": draft,
            "words": "; ".join(steps)}  # fmt: skip


def input_spec(pre: dict[str, Any]) -> dict[str, Any]:
    """The ``images`` input: name, dtype, layout, shape, value range and the resize rule."""
    size = int(pre["size"])
    return {
        "name": INPUT_NAME,
        "dtype": "uint8",
        "layout": "NCHW",
        "channels": "RGB",
        "shape": ["N", 3, size, size],
        "range": [0, 255],
        "resize": resize_rule(pre),
    }


def contract_words(spec: dict[str, Any], num_classes: int) -> str:
    """The input contract in words, one line each: input, resize, outputs."""
    shape = ", ".join(map(str, spec["shape"]))
    return "\n".join(
        [
            f"input:  {spec['name']}, {spec['dtype']} [{shape}], {spec['channels']}, "
            f"{spec['layout']}, values 0..255 as decoded (the model divides by 255 and normalises "
            "itself)",
            f"resize: {spec['resize']['words']}; each resize is {spec['resize']['interpolation']}",
            f"output: logits, float32 [N, {num_classes}]; probs, float32 [N, {num_classes}], the "
            "softmax of the logits, in the order of class_names",
        ]
    )


def metadata(module: Classifier, ckpt_path: str, fmt: str) -> dict[str, Any]:
    hp = module.hparams
    pre = dict(hp["preprocess"])
    spec = input_spec(pre)
    return {
        "format": fmt,
        "model_name": hp["model_name"],
        "num_classes": int(hp["num_classes"]),
        "class_names": class_names_of(module),
        "preprocess": pre,
        "input": spec,
        "outputs": list(OUTPUT_NAMES),
        "input_contract": contract_words(spec, int(hp["num_classes"])),
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
    export_onnx(model, example, path, input_names=[INPUT_NAME], output_names=OUTPUT_NAMES,
                opset=opset, dynamic_axes=axes)  # fmt: skip
    proto = onnx.load(str(path))
    # Plain keys for any ONNX consumer, plus the whole record under "fruitnet".
    props = {
        "model_name": meta["model_name"],
        "class_names": json.dumps(meta["class_names"]),
        "preprocess": json.dumps(meta["preprocess"]),
        "input": json.dumps(meta["input"]),
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
        session = ort_session(path)
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
    path: Path, fmt: str, model: ExportModel, module: Classifier, atol: float, iters: int
) -> dict[str, Any]:
    """Run the written file: outputs against PyTorch, and batch-1 latency of both."""
    try:
        runner = load_exported(path, fmt)
    except ImportError:
        log.warning(
            "onnxruntime is not installed: ONNX outputs not checked (pip install '.[onnx]')"
        )
        return {}
    size = int(module.hparams["preprocess"]["size"])
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

    module = load_network(cfg.ckpt_path)
    model = export_model(module)
    size = int(module.hparams["preprocess"]["size"])
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
    print(f"{path}: what it takes and gives\n{meta['input_contract']}")

    if cfg.verify:
        record.update(
            check_export(path, fmt, model, module, float(cfg.atol), int(cfg.latency_iters))
        )
    write_json(path.with_name(path.name + ".json"), record)
    return record


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def _main(cfg: DictConfig) -> None:
    run_entry(run, cfg)


def main() -> None:
    check_keys(sys.argv[1:], "export")
    _main()


if __name__ == "__main__":
    main()
