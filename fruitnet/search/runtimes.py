"""Where the search times a module (``search.runtime``): ONNX Runtime, eager PyTorch or
torch.compile. Each runtime gives a timer ``(module, input shape) -> ms`` (median of repeats, best
of rounds: `fruitnet.timing.median_ms`), used for the latency table's blocks, the calibration nets
and the found nets alike, so that the table predicts what is measured where the net will run.

``onnxruntime`` exports the module as `python -m fruitnet.export` does (the TorchScript-based
exporter, eval mode, contiguous fp32; BatchNorm is folded into the convs by ORT's graph
optimisation) and runs it in an ORT CPU session with PyTorch's intra-op thread count, as
`python -m fruitnet.export` runs its check; whole nets take the export's own input (uint8 images,
the normalisation inside: `fruitnet.deploy.ExportModel`). It always times on the CPU: a net
exported to ONNX is deployed there even when the search trains on a GPU.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from fruitnet.deploy import ExportModel, export_onnx, ort_session
from fruitnet.search.space import SearchConfigError
from fruitnet.timing import interleaved_ms, median_ms

RUNTIMES = ("onnxruntime", "torch", "compile")
# Enough for a whole table's ops and nets (a few hundred per class)
RECOMPILE_LIMIT = 100_000
Timer = Callable[[nn.Module, tuple[int, ...]], float]


def check_runtime(runtime: str) -> None:
    """One line for an unknown runtime, or for onnxruntime when it is not installed."""
    if runtime not in RUNTIMES:
        raise SearchConfigError(
            f"search.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}"
        )
    if runtime == "onnxruntime":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise SearchConfigError(
                f"search.runtime=onnxruntime needs onnx and onnxruntime ({err.name} is missing): "
                "pip install '.[onnx]', or time in eager PyTorch with search.runtime=torch"
            ) from None


def runtime_device(runtime: str, train_device: torch.device) -> torch.device:
    """The device latencies are timed on: the training device, except ORT's CPU session."""
    return torch.device("cpu") if runtime == "onnxruntime" else train_device


def runtime_tag(runtime: str) -> str:
    """What a timing depends on beyond the device: the runtime and its version (cache keys and
    reports; eager torch keeps the key it always had)."""
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime-{onnxruntime.__version__}"
    if runtime == "compile":
        return f"compile-torch-{torch.__version__}"
    return "torch"


def onnx_bytes(module: nn.Module, example: torch.Tensor, opset: int = 17) -> bytes:
    """``module`` exported to ONNX as `python -m fruitnet.export` exports (no metadata), in memory."""
    buffer = io.BytesIO()
    export_onnx(
        module, example, buffer, input_names=["input"], output_names=["output"], opset=opset
    )
    return buffer.getvalue()


def _example(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    return torch.randn(shape, device=device, dtype=dtype)


def runner(
    module: nn.Module,
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    runtime: str = "torch",
    input_dtype: torch.dtype | None = None,
) -> Callable[[], Any]:
    """A call that runs ``module`` once on a random input of ``shape`` in ``runtime`` (eval, no
    grad): the ORT session is built, the module compiled, here and not in the timed calls.
    ``input_dtype`` (default ``dtype``): uint8 for a whole exported net."""
    module = module.eval()
    x = _example(shape, input_dtype or dtype, device)
    if runtime == "onnxruntime":
        cpu = copy.deepcopy(module).to("cpu", dtype=dtype, memory_format=torch.contiguous_format)
        session = ort_session(onnx_bytes(cpu, x.cpu()))
        feed = {session.get_inputs()[0].name: x.cpu().numpy()}
        return partial(session.run, None, feed)
    module = module.to(device=device, dtype=dtype)
    if channels_last and x.dim() == 4:
        module = module.to(memory_format=torch.channels_last)
        if x.is_floating_point():
            x = x.contiguous(memory_format=torch.channels_last)
    if runtime == "compile":
        module = torch.compile(module, dynamic=False)
        # Every candidate op and net of a class shares its forward's code object: past dynamo's
        # recompile limit (8) the next ones ran eager without a word, so the table mixed compiled
        # and eager times (whole nets read 35-45 % over their prediction; under 1 % with it raised)
        with torch.no_grad(), torch._dynamo.config.patch(**_recompile_limits()):
            module(x)  # compiles here, not inside the timed warm-up
    elif runtime != "torch":
        check_runtime(runtime)

    def run() -> Any:
        with torch.no_grad():
            return module(x)

    return run


def _recompile_limits() -> dict[str, int]:
    """Dynamo's per-frame and total recompile limits, raised (named ``cache_size_limit`` and
    ``accumulated_cache_size_limit`` before torch 2.6)."""
    cfg = torch._dynamo.config
    names = ("recompile_limit", "accumulated_recompile_limit")
    if not hasattr(cfg, names[0]):
        names = ("cache_size_limit", "accumulated_cache_size_limit")
    return {name: RECOMPILE_LIMIT for name in names if hasattr(cfg, name)}


def time_module(
    module: nn.Module,
    shape: tuple[int, ...],
    *,
    device: torch.device,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 1,
    **how: Any,
) -> float:
    """Median forward time in ms of ``module`` on a random input of ``shape`` in ``runtime``,
    the best of ``rounds`` medians (``how``: `runner`'s dtype, channels_last, runtime and
    input_dtype)."""
    run = runner(module, shape, device=device, **how)
    return median_ms(run, device=device, warmup=warmup, repeats=repeats, rounds=rounds)


def time_modules(
    items: list[tuple[nn.Module, tuple[int, ...]]],
    *,
    device: torch.device,
    yardstick: tuple[nn.Module, tuple[int, ...]] | None = None,
    yardstick_ms: float | None = None,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    **how: Any,
) -> list[float]:
    """`time_module` of each ``(module, shape)``, all in one `fruitnet.timing.interleaved_ms`
    call: rounds over every item, each reading against ``yardstick`` when given."""
    runs = [runner(m, shape, device=device, **how) for m, shape in items]
    yard = runner(*yardstick, device=device, **how) if yardstick is not None else None
    timing = dict(device=device, warmup=warmup, repeats=repeats, rounds=rounds)
    return interleaved_ms(runs, yardstick=yard, yardstick_ms=yardstick_ms, **timing)


def make_timer(runtime: str, **kwargs: Any) -> Timer:
    """``(module, shape) -> ms`` in ``runtime`` with the given device and timing settings."""
    return partial(time_module, runtime=runtime, **kwargs)


def whole_net(net: nn.Module, runtime: str, preprocess: dict[str, Any] | None) -> nn.Module:
    """What is timed for a whole net: in ORT, the export's model (uint8 in, normalisation inside,
    `fruitnet.deploy.ExportModel`); elsewhere the net itself, as the search's torch timing always
    did."""
    if runtime != "onnxruntime":
        return net
    pre = preprocess or {}
    mean = pre.get("mean") or [0.0, 0.0, 0.0]
    std = pre.get("std") or [1.0, 1.0, 1.0]
    return ExportModel(net, list(mean), list(std))


def time_whole_net(
    net: nn.Module,
    input_size: int,
    *,
    runtime: str,
    batch: int,
    device: torch.device,
    preprocess: dict[str, Any] | None = None,
    **timing: Any,
) -> float:
    """Latency in ms of a finished net at ``batch`` in ``runtime`` (the export's input in ORT)."""
    model = whole_net(net, runtime, preprocess)
    return time_module(
        model,
        (batch, 3, input_size, input_size),
        device=runtime_device(runtime, device),
        runtime=runtime,
        input_dtype=torch.uint8 if runtime == "onnxruntime" else None,
        **timing,
    )


def time_whole_nets(
    nets: list[nn.Module],
    input_size: int,
    *,
    runtime: str,
    batch: int,
    device: torch.device,
    preprocess: dict[str, Any] | None = None,
    yardstick: nn.Module | None = None,
    **timing: Any,
) -> list[float]:
    """`time_whole_net` of several nets in one interleaved call (`time_modules`), each reading
    against the whole net ``yardstick`` when given (``yardstick_ms`` in ``timing``: its time in
    an earlier call)."""
    shape = (batch, 3, input_size, input_size)
    yard = (whole_net(yardstick, runtime, preprocess), shape) if yardstick is not None else None
    return time_modules(
        [(whole_net(n, runtime, preprocess), shape) for n in nets],
        yardstick=yard,
        device=runtime_device(runtime, device),
        runtime=runtime,
        input_dtype=torch.uint8 if runtime == "onnxruntime" else None,
        **timing,
    )
