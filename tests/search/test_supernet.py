"""The supernet (`fruitnet.search.supernet`): its architecture gradient against finite
differences, its mixed edges, and the net configs it exports (round trips, the official one)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import REPO
from spaces import TINY_SPACE
from torch import nn

from fruitnet.models import create_model
from fruitnet.models.net_config import check_arch, load_arch
from fruitnet.models.profile import count_params
from fruitnet.models.proxyless import (
    ProxylessNASNets,
    builtin_arch,
)
from fruitnet.search.latency import latency_loss
from fruitnet.search.space import SearchSpace
from fruitnet.search.supernet import MixedEdge, SuperNet

KEYS_FILE = REPO.parent / "shared" / "docs" / "proxyless_gpu_state_dict_keys.txt"


def tiny_edge(n_ops: int = 4, seed: int = 0) -> MixedEdge:
    torch.manual_seed(seed)
    ops = [nn.Conv2d(3, 4, 3, padding=1, bias=False) for _ in range(n_ops)]
    edge = MixedEdge(ops, [f"op{i}" for i in range(n_ops)])
    with torch.no_grad():
        edge.alpha.copy_(torch.randn(n_ops))  # far from uniform, so every p differs
    return edge


def mbconv_params(c_in: int, c_out: int, k: int, e: int) -> int:
    """Parameters of one MBInvertedConvLayer (convs without bias, BN weight+bias)."""
    mid = c_in * e
    expand = (c_in * mid + 2 * mid) if e > 1 else 0
    return expand + (mid * k * k + 2 * mid) + (mid * c_out + 2 * c_out)


def fused_params(c_in: int, c_out: int, k: int, e: int) -> int:
    """Parameters of one FusedMBConvLayer: full KxK conv to c_in*e, then 1x1 projection."""
    mid = c_in * e
    return (c_in * mid * k * k + 2 * mid) + (mid * c_out + 2 * c_out)


def load_path_weights(net: SuperNet, choices: list[int], exported: nn.Module) -> None:
    """Copy the supernet's weights of one path into the net exported from it."""
    own = net.state_dict()
    mapped = {}
    for key in exported.state_dict():
        parts = key.split(".")
        source = key
        if parts[0] == "blocks" and int(parts[1]) > 0:
            b, rest = int(parts[1]), ".".join(parts[3:])
            source = f"blocks.{b}.mobile_inverted_conv.candidate_ops.{choices[b - 1]}.{rest}"
        mapped[key] = own[source]
    exported.load_state_dict(mapped)


# --- the architecture gradient -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "two"])
def test_arch_gradient_matches_finite_differences(mode):
    """The estimator against central finite differences of the expected loss.

    Sound check: with a loss that is LINEAR in the edge output, L(y) = <w, y> and
    y = sum_k g_k o_k(x), the gate gradient is dL/dg_k = <w, o_k(x)> = L_k (the loss of path k)
    whatever the sampled path. Then the paper's estimate
    sum_j dL/dg_j q_j (delta_ij - q_i) equals sum_j L_j q_j (delta_ij - q_i), which is exactly
    d/d alpha_i of E_q[L] = sum_j q_j L_j with q = softmax over the involved alphas. So every single
    sample must match the finite difference of the enumerated expectation (no Monte Carlo noise):
    ``full``: all alphas, E_p[L]; ``two``: the sampled pair, E over the pair's softmax, and zero
    for the other alphas. A wrong index, sign or probability in the estimator fails this.
    """
    edge = tiny_edge()
    x = torch.randn(2, 3, 5, 5)
    w = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        losses = torch.stack([(w * op(x)).sum() for op in edge.candidate_ops]).double()

    def expected_loss(alpha: torch.Tensor, idx: list[int]) -> float:
        q = torch.softmax(alpha[idx].double(), 0)
        return float((q * losses[idx]).sum())

    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        edge.sample_arch_path(mode, gen)
        edge.alpha.grad = None
        (w * edge(x)).sum().backward()
        est = edge.arch_grad()
        idx = list(edge.involved)
        assert len(idx) == (2 if mode == "two" else 4)
        eps = 1e-4
        alpha = edge.alpha.detach().double()
        for i in range(edge.n):
            if i not in idx:
                assert est[i] == 0
                continue
            up, down = alpha.clone(), alpha.clone()
            up[i] += eps
            down[i] -= eps
            fd = (expected_loss(up, idx) - expected_loss(down, idx)) / (2 * eps)
            assert est[i].item() == pytest.approx(fd, rel=1e-3, abs=1e-3), (mode, i)
        edge.end_arch_step()


def test_gate_gradient_matches_finite_differences_for_a_nonlinear_loss():
    """The estimator's input, dL/dg_k, for a non-linear loss (cross-entropy after a head): the
    gate gradient autograd gives through the one-hot gates (the inactive ops detached) equals
    the finite difference of L(sum_k g_k o_k) in g_k around the sampled one-hot gate vector."""
    edge = tiny_edge(3, seed=3)
    head = nn.Linear(4 * 5 * 5, 6).double()
    x = torch.randn(4, 3, 5, 5)
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        outs = [op(x).double() for op in edge.candidate_ops]

    def loss_at(g: torch.Tensor) -> float:
        out = sum(g[k] * outs[k] for k in range(3))
        with torch.no_grad():
            return float(nn.functional.cross_entropy(head(out.flatten(1)), y))

    edge.sample_arch_path("full", torch.Generator().manual_seed(0))
    out = edge(x).double()
    nn.functional.cross_entropy(head(out.flatten(1)), y).backward()
    g0 = edge.gates.detach().double()
    for k in range(3):
        up, down = g0.clone(), g0.clone()
        up[k] += 1e-5
        down[k] -= 1e-5
        fd = (loss_at(up) - loss_at(down)) / 2e-5
        assert edge.gates.grad[k].item() == pytest.approx(fd, rel=1e-3, abs=1e-5)


def test_two_path_update_keeps_the_other_probabilities():
    edge = tiny_edge(5)
    opt = torch.optim.Adam([edge.alpha], lr=0.1, betas=(0.0, 0.999))
    x, w = torch.randn(1, 3, 5, 5), torch.randn(1, 4, 5, 5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        before = edge.probs().detach()
        edge.sample_arch_path("two", gen)
        opt.zero_grad()
        (w * edge(x)).sum().backward()
        pair = list(edge.involved)
        edge.apply_arch_grad("two")
        opt.step()
        edge.rescale("two")
        after = edge.probs().detach()
        others = [i for i in range(5) if i not in pair]
        assert torch.allclose(before[others], after[others], atol=1e-6)
        assert after[pair].sum() == pytest.approx(before[pair].sum().item(), abs=1e-6)
        edge.end_arch_step()


def test_zero_op_active_leaves_the_edge_alone():
    edge = MixedEdge([nn.Conv2d(3, 3, 1), nn.Identity()], ["conv", "zero"])
    from fruitnet.models.proxyless import ZeroLayer

    edge.candidate_ops[1] = ZeroLayer()
    edge.active, edge.involved = 1, [1, 0]
    edge.gates = torch.tensor([0.0, 1.0], requires_grad=True)
    edge(torch.randn(1, 3, 4, 4)).sum().backward()
    assert edge.arch_grad() is None


def test_mul_log_target_only_scales_the_loss():
    """Documents why `abs` exists: (log LAT / log T)^beta = (log LAT)^beta / (log T)^beta, so the
    target multiplies the whole mul_log loss by a constant, to which Adam's step is invariant."""
    lat = torch.tensor(3.0, requires_grad=True)
    grads = []
    for target in (2.0, 8.0):
        lat.grad = None
        latency_loss(torch.tensor(1.3), lat, target, "mul_log").backward()
        grads.append(lat.grad.item() * math.log(target) ** 0.3)
    assert grads[0] == pytest.approx(grads[1])


# --- supernet and net configs ------------------------------------------------------------------


def test_zero_only_on_non_first_blocks_and_export_round_trips(tmp_path):
    space = SearchSpace.from_config(TINY_SPACE)
    net = SuperNet(space, num_classes=5, input_size=32)
    assert [("zero" in i["names"]) for i in net.edge_info] == [False, True, False, True]
    choices = [1, 3, 2, 0]  # 5x5 e3, zero, 3x3 e6, 3x3 e3
    arch = net.export_arch(choices)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    model = create_model("proxyless", num_classes=5, input_size=32, arch=load_arch(path, 32))
    expected = (
        3 * 8 * 9 + 2 * 8  # first conv
        + mbconv_params(8, 8, 3, 1)  # fixed first block
        + mbconv_params(8, 8, 5, 3)  # stage 1, edge 0
        + 0  # edge 1: zero
        + mbconv_params(8, 16, 3, 6)  # stage 2, edge 0
        + mbconv_params(16, 16, 3, 3)  # edge 1
        + 16 * 32 + 2 * 32  # feature mix
        + 32 * 5 + 5  # classifier
    )  # fmt: skip
    assert count_params(model)[0] == expected
    assert model.blocks[2].is_zero and model.blocks[4].shortcut is not None
    # trainable: one SGD step changes the loss
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert nn.functional.cross_entropy(model(x), y).item() != loss.item()
    # the supernet on the same path computes the same function as the exported net
    net.eval()
    for e, c in zip(net.edges, choices, strict=True):
        e.active, e.involved = c, None
    exported = ProxylessNASNets(num_classes=5, input_size=32, arch=arch).eval()
    load_path_weights(net, choices, exported)
    with torch.no_grad():
        assert torch.allclose(net(x), exported(x), atol=1e-5)


def test_fused_mbconv_candidates_export_build_and_match_the_supernet():
    space = SearchSpace.from_config(
        {
            **TINY_SPACE,
            "candidates": ["3x3_MBConv3", "3x3_FusedMBConv2", "5x5_FusedMBConv1", "zero"],
        }
    )
    net = SuperNet(space, num_classes=5, input_size=32)
    choices = [1, 2, 2, 1]  # fused 3x3 e2, fused 5x5 e1, fused 5x5 e1, fused 3x3 e2
    arch = net.export_arch(choices)
    layers = [b["mobile_inverted_conv"]["name"] for b in arch["blocks"][1:]]
    assert layers == ["FusedMBConvLayer"] * 4
    check_arch(arch, 32)
    model = ProxylessNASNets(num_classes=5, input_size=32, arch=arch).eval()
    expected = (
        3 * 8 * 9 + 2 * 8 + mbconv_params(8, 8, 3, 1)  # stem, fixed first block
        + fused_params(8, 8, 3, 2) + fused_params(8, 8, 5, 1)
        + fused_params(8, 16, 5, 1) + fused_params(16, 16, 3, 2)
        + 16 * 32 + 2 * 32 + 32 * 5 + 5  # feature mix, classifier
    )  # fmt: skip
    assert count_params(model)[0] == expected
    # a full conv, not a depthwise one: groups 1 and the expansion's width
    conv = model.blocks[1].mobile_inverted_conv.expand_conv.conv
    assert conv.groups == 1 and conv.weight.shape == (16, 8, 3, 3)
    net.eval()
    for e, c in zip(net.edges, choices, strict=True):
        e.active, e.involved = c, None
    load_path_weights(net, choices, model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-5)


def test_official_config_round_trips_to_7119848_params(tmp_path):
    config = builtin_arch()
    path = tmp_path / "proxyless_gpu.json"
    path.write_text(json.dumps(config))
    model = ProxylessNASNets(num_classes=1000, input_size=224, arch=load_arch(path, 224))
    assert count_params(model)[0] == 7_119_848
    assert count_params(create_model("proxyless", num_classes=1000))[0] == 7_119_848
    if KEYS_FILE.is_file():
        lines = KEYS_FILE.read_text().splitlines()
        keys = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
        own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
        assert own == keys and len(own) == 217


def test_the_imagenet_space_has_21_mixed_edges():
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "default.yaml"))
    cfg.update(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "imagenet.yaml")))
    cfg.pop("defaults", None)
    net = SuperNet(SearchSpace.from_config(cfg), num_classes=1000, input_size=224)
    assert len(net.edges) == 21
    assert sum("zero" in i["names"] for i in net.edge_info) == 15  # 3+3+3+3+3+0
