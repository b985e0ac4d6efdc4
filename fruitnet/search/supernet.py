"""The ProxylessNAS supernet: mixed edges over (Fused)MBConv candidates, binarized path sampling.

Method (Cai, Zhu, Han, ICLR 2019; facts in ``shared/docs/proxyless_gpu.md`` section 6):

- Each searchable block holds a `MixedEdge` with one architecture parameter per candidate op,
  ``p = softmax(alpha)``.
- Weight steps: every edge samples ONE op from ``p`` and only that op runs (binarized path).
- Architecture steps: binary gates ``g`` (one-hot on the active op) multiply the op outputs, so
  ``dL/dg_k = <o_k(x), dL/dy>`` for each involved candidate ``k``; the paper's estimate is
  ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)``. Two modes:

  * ``two`` (the paper's two-path mode, the default): sample 2 ops without replacement from
    ``p``, pick the active one of the pair by the softmax over the pair's two alphas, run both
    (the inactive one detached), and update ONLY those two alphas with the estimate over the
    pair; after the optimizer step both are shifted by ``log(sum exp(alpha_new) /
    sum exp(alpha_old))`` over the pair, so every other op keeps its probability.
  * ``full``: every candidate runs (the inactive ones detached) and all alphas get the estimate.

  If the active op is the zero op, the edge's alphas are not updated in that step (official rule).
- `export_arch` takes ``argmax(alpha)`` per edge and writes a net config in the official JSON
  format, which `fruitnet.models.proxyless.ProxylessNASNets` builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fruitnet.models.net_config import conv_out_side
from fruitnet.models.proxyless import (
    LinearLayer,
    MBInvertedConvLayer,
    MobileInvertedResidualBlock,
    ProxylessNASNets,
    ZeroLayer,
    build_op,
    conv_bn,
    init_he_fout,
)
from fruitnet.search.space import (
    ARCH_MODES,
    ZERO,
    SearchConfigError,
    SearchSpace,
    arch_config,
    op_config,
)


class MixedEdge(nn.Module):
    """Candidate ops of one block and their architecture parameters ``alpha``.

    State between `sample_*` and `arch_grad`: ``active`` (the op that runs), ``involved`` (the
    ops whose gates get a gradient in an architecture step; None in a weight step) and ``gates``.
    """

    def __init__(self, ops: Sequence[nn.Module], names: Sequence[str], init_std: float = 1e-3):
        super().__init__()
        self.candidate_ops = nn.ModuleList(ops)
        self.names = list(names)
        self.alpha = nn.Parameter(torch.randn(len(ops)) * init_std)
        self.active = 0
        self.involved: list[int] | None = None
        self.gates: torch.Tensor | None = None
        self._alpha_before: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return len(self.candidate_ops)

    def probs(self) -> torch.Tensor:
        return F.softmax(self.alpha.float(), dim=0)

    def is_zero(self, index: int) -> bool:
        return isinstance(self.candidate_ops[index], ZeroLayer)

    # -- sampling ------------------------------------------------------------------------------

    def sample_weight_path(self, generator: torch.Generator | None = None) -> None:
        """A weight step: one op drawn from p runs, no gates."""
        p = self.probs().detach().cpu()
        self.active = int(torch.multinomial(p, 1, generator=generator))
        self.involved = None
        self.gates = None

    def set_argmax(self) -> None:
        self.active = int(self.alpha.detach().argmax())
        self.involved = None
        self.gates = None

    def sample_arch_path(self, mode: str, generator: torch.Generator | None = None) -> None:
        """An architecture step: gates over the involved ops, one-hot on the active one."""
        p = self.probs().detach().cpu()
        if mode == "two" and self.n >= 2:
            pair = torch.multinomial(p, 2, replacement=False, generator=generator).tolist()
            q = F.softmax(self.alpha.detach().cpu()[pair].float(), dim=0)
            first = int(torch.multinomial(q, 1, generator=generator))
            self.active = pair[first]
            self.involved = [pair[first], pair[1 - first]]
        elif mode in ("two", "full"):
            self.active = int(torch.multinomial(p, 1, generator=generator))
            self.involved = list(range(self.n))
        else:
            raise SearchConfigError(f"search.arch_mode must be one of {ARCH_MODES}, got {mode!r}")
        gates = torch.zeros(self.n, device=self.alpha.device)
        gates[self.active] = 1.0
        self.gates = gates.requires_grad_(True)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.involved is None:
            return self.candidate_ops[self.active](x)
        out = None
        for k in self.involved:
            o = self.candidate_ops[k](x)
            if k != self.active:
                o = o.detach()
            term = self.gates[k] * o
            out = term if out is None else out + term
        return out

    # -- architecture gradient -----------------------------------------------------------------

    def arch_grad(self) -> torch.Tensor | None:
        """The paper's estimate from the gate gradients (None: no update for this edge).

        ``dL/dalpha_i = sum_j dL/dg_j q_j (delta_ij - q_i) = q_i (G_i - <G, q>)`` over the
        involved ops, with ``q`` the softmax over the involved alphas (all ops: ``q = p``).
        """
        if self.involved is None or self.gates is None or self.gates.grad is None:
            return None
        if self.is_zero(self.active):
            return None
        idx = torch.tensor(self.involved, device=self.alpha.device)
        q = F.softmax(self.alpha.detach().float()[idx], dim=0)
        g = self.gates.grad.detach().float()[idx]
        grad = torch.zeros(self.n, device=self.alpha.device, dtype=torch.float32)
        grad[idx] = q * (g - (g * q).sum())
        return grad

    def apply_arch_grad(self, mode: str) -> None:
        """Set ``alpha.grad`` for the architecture optimizer: the binary-gate estimate plus
        whatever autograd put there (the latency term's d E[latency] / d alpha). In the two-path
        mode only the involved pair keeps a gradient, so only those two alphas move."""
        est = self.arch_grad()
        grad = self.alpha.grad
        if est is None:
            # The zero op was active: the edge is left alone this step (official rule).
            self.alpha.grad = None
        else:
            grad = est if grad is None else grad.float() + est
            if mode == "two" and self.involved is not None and len(self.involved) == 2:
                mask = torch.zeros_like(grad)
                mask[self.involved] = 1.0
                grad = grad * mask
            self.alpha.grad = grad.to(self.alpha.dtype)
        self._alpha_before = self.alpha.detach().clone()

    @torch.no_grad()
    def rescale(self, mode: str) -> None:
        """Two-path mode, after the optimizer step: shift the pair so that the other ops keep
        their probabilities (the sum of exp(alpha) over the pair is what it was)."""
        if mode != "two" or self._alpha_before is None or self.involved is None:
            return
        if len(self.involved) != 2:
            return
        idx = self.involved
        new = torch.logsumexp(self.alpha[idx].float(), 0)
        old = torch.logsumexp(self._alpha_before[idx].float(), 0)
        self.alpha[idx] -= (new - old).to(self.alpha.dtype)

    def end_arch_step(self) -> None:
        self.involved = None
        self.gates = None
        self._alpha_before = None


class SuperNet(nn.Module):
    """first_conv -> fixed first block -> mixed-edge blocks -> feature mix -> pool -> classifier.

    ``self.blocks[i]`` is a `MobileInvertedResidualBlock` whose ``mobile_inverted_conv`` is the
    first block's fixed op (i = 0) or a `MixedEdge`; ``self.edges`` lists the mixed edges and
    ``self.edge_info`` their input shape, stride and candidate names (the latency table keys).
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        num_classes: int,
        input_size: int,
        dropout: float = 0.0,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.input_size = input_size
        self.dropout = dropout
        bn = space.bn
        size = conv_out_side(input_size, 3, 2)
        self.first_conv = conv_bn(3, space.first_conv, 3, stride=2, bn=bn)
        first = MBInvertedConvLayer(space.first_conv, space.first_block, 3, 1, 1, bn=bn)
        self.blocks = nn.ModuleList([MobileInvertedResidualBlock(first, None)])
        self.fixed_info = [{"kind": "first_conv", "side": input_size}]
        self.first_block_side = size
        self.edges: list[MixedEdge] = []
        self.edge_info: list[dict[str, Any]] = []
        channels = space.first_block
        for stage, (width, depth, stride) in enumerate(
            zip(space.widths, space.depths, space.strides, strict=True)
        ):
            for cell in range(depth):
                s = stride if cell == 0 else 1
                if s > 1 and size <= 1:
                    raise SearchConfigError(
                        f"search.strides: stage {stage} (stride {s}) gets a 1x1 feature map at "
                        f"input size {input_size}; use fewer stride-2 stages"
                    )
                names = list(space.candidates)
                ops = [build_op(op_config(n, channels, width, s), bn) for n in names]
                residual = s == 1 and channels == width
                if space.zero and cell > 0 and residual:
                    names.append(ZERO)
                    ops.append(ZeroLayer())
                edge = MixedEdge(ops, names, init_std)
                shortcut = nn.Identity() if residual else None
                self.blocks.append(MobileInvertedResidualBlock(edge, shortcut))
                self.edges.append(edge)
                self.edge_info.append(
                    {
                        "stage": stage,
                        "in": channels,
                        "out": width,
                        "stride": s,
                        "side": size,
                        "residual": residual,
                        "names": names,
                    }
                )
                size = conv_out_side(size, 3, s)
                channels = width
        self.last_channels = channels
        self.final_side = size
        if space.feature_mix:
            self.feature_mix_layer = conv_bn(channels, space.feature_mix, 1, bn=bn)
            channels = space.feature_mix
        else:
            self.feature_mix_layer = None
        self.global_avg_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = LinearLayer(channels, num_classes, dropout)
        self.apply(init_he_fout)
        # init_he_fout does not touch alpha (not a module), so the arch init stays N(0, init_std).

    # -- parameter groups ----------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [e.alpha for e in self.edges]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # -- modes ---------------------------------------------------------------------------------

    def sample_weight_paths(self, generator: torch.Generator | None = None) -> None:
        for e in self.edges:
            e.sample_weight_path(generator)

    def sample_arch_paths(self, mode: str, generator: torch.Generator | None = None) -> None:
        for e in self.edges:
            e.sample_arch_path(mode, generator)

    def set_argmax(self) -> None:
        for e in self.edges:
            e.set_argmax()

    def apply_arch_grads(self, mode: str) -> None:
        for e in self.edges:
            e.apply_arch_grad(mode)

    def rescale(self, mode: str) -> None:
        for e in self.edges:
            e.rescale(mode)

    def end_arch_step(self) -> None:
        for e in self.edges:
            e.end_arch_step()

    def probs(self) -> list[list[float]]:
        return [e.probs().detach().cpu().tolist() for e in self.edges]

    def chosen(self) -> list[str]:
        return [e.names[int(e.alpha.detach().argmax())] for e in self.edges]

    # The supernet names its layers as the finished net does (first_conv, blocks, feature_mix_layer,
    # global_avg_pool, classifier), so one forward serves both.
    forward = ProxylessNASNets.forward

    # -- export --------------------------------------------------------------------------------

    def export_arch(self, choices: Sequence[int] | None = None) -> dict[str, Any]:
        """The net config (official JSON format) of the argmax path (or of ``choices``)."""
        if choices is None:
            choices = [int(e.alpha.detach().argmax()) for e in self.edges]
        return arch_config(self.space, self.edge_info, choices, self.num_classes, self.dropout)
