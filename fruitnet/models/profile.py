"""Model size and cost: parameters, fp32 and checkpoint MiB, FLOPs, latency.

All helpers leave the model as they found it (train/eval mode, device, memory format) and are
cheap enough to run at the start of every fit.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fruitnet.timing import median_ms

MIB = 2**20


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def fp32_mib(model: nn.Module) -> float:
    """MiB of floating-point params + buffers stored as fp32 (integer counters are left out)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() for t in tensors if t.is_floating_point()) * 4 / MIB


def state_dict_mib(model: nn.Module) -> float:
    """What ``torch.save(model.state_dict(), f)`` weighs, in MiB (the study's "model size")."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / MIB


def _param_like(model: nn.Module) -> torch.Tensor | None:
    return next((p for p in model.parameters() if p.is_floating_point()), None)


def _example_input(model: nn.Module, input_size: int, batch: int) -> torch.Tensor:
    ref = _param_like(model)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    return torch.zeros(batch, 3, input_size, input_size, device=device, dtype=dtype)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # eval() so BatchNorm running stats are not updated by a measurement pass.
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def flops(model: nn.Module, input_size: int, batch: int = 1) -> int:
    """FLOPs of one forward pass as counted by ``FlopCounterMode`` (2 per multiply-add)."""
    x = _example_input(model, input_size, batch)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), counter:
        model(x)
    return int(counter.get_total_flops())


def _is_channels_last(model: nn.Module) -> bool:
    four_d = [p for p in model.parameters() if p.dim() == 4]
    return bool(four_d) and all(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in four_d
    )


def latency_ms(
    model: nn.Module,
    input_size: int,
    batch: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    iters: int = 10,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Median forward time per image in ms (per-batch time / batch), in eval mode."""
    device = torch.device(device)
    ref = _param_like(model)
    home = ref.device if ref is not None else torch.device("cpu")
    was_channels_last = _is_channels_last(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, input_size, input_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    )
    try:
        with _eval_mode(model), autocast:
            ms = median_ms(lambda: model(x), device=device, warmup=warmup, repeats=iters)
    finally:
        if channels_last and not was_channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.to(home)
    return ms / batch


def summarize(model: nn.Module, input_size: int, *, with_flops: bool = True) -> dict[str, float]:
    """Size/cost summary for logging: params, trainable, fp32 and checkpoint MiB, FLOPs."""
    total, trainable = count_params(model)
    summary: dict[str, float] = {
        "params": total,
        "trainable_params": trainable,
        "fp32_mib": fp32_mib(model),
        "state_dict_mib": state_dict_mib(model),
    }
    if with_flops:
        summary["flops"] = flops(model, input_size)
    return summary
