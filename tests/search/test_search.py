"""ProxylessNAS search (`fruitnet.search`): architecture gradient, latency table, net configs,
bad inputs, and a tiny end-to-end search whose arch.json then trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import FAST, REPO, compose_cfg
from torch import nn

from fruitnet.models import create_model
from fruitnet.models.net_config import ArchConfigError, check_arch, load_arch
from fruitnet.models.profile import count_params
from fruitnet.models.proxyless import (
    MBInvertedConvLayer,
    MobileInvertedResidualBlock,
    ProxylessNASNets,
    builtin_arch,
)
from fruitnet.search.latency import (
    LatencyTable,
    _fit_line,
    build_latency_table,
    calibrate,
    check_target,
    latency_loss,
    time_module,
)
from fruitnet.search.space import Op, SearchConfigError, SearchSpace, parse_op
from fruitnet.search.supernet import MixedEdge, SuperNet

KEYS_FILE = REPO.parent / "shared" / "docs" / "proxyless_gpu_state_dict_keys.txt"

TINY_SPACE = {
    "first_conv": 8,
    "first_block": 8,
    "widths": [8, 16],
    "depths": [2, 2],
    "strides": [2, 2],
    "candidates": ["3x3_MBConv3", "5x5_MBConv3", "3x3_MBConv6", "zero"],
    "feature_mix": 32,
}


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


# --- latency table -----------------------------------------------------------------------------


@pytest.mark.slow  # timed on a shared CPU: beside a second pytest worker it can swap a close pair
def test_latency_table_is_monotone_in_kernel_and_expand():
    """On this CPU, for one fixed shape: 3x3 < 5x5 < 7x7 at each expand ratio, and expand 3 <
    expand 6 at each kernel.

    Why this shape (8 -> 8 channels, 64x64, batch 1): with few channels the depthwise conv is a
    large share of the block's work, so the kernel size shows in the time (here the steps are
    8-15 %, well above the timing noise); with many channels the 1x1 convs dominate and all kernels
    cost nearly the same. Monotonicity is not a law of this CPU: oneDNN picks different depthwise
    kernels per shape, and at 8 channels 112x112 a 5x5 block measured slower than a 7x7 one.
    One thread, so another job on this shared 2-core box cannot stall an OpenMP barrier; each op
    is timed in five interleaved rounds and its best round counts. Still a real check: any
    swapped pair of timings fails it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        grid = {(k, e): [] for k in (3, 5, 7) for e in (3, 6)}
        for _ in range(5):
            for k, e in grid:
                block = MobileInvertedResidualBlock(
                    MBInvertedConvLayer(8, 8, k, 1, e), nn.Identity()
                )
                grid[(k, e)].append(
                    time_module(block, (1, 8, 64, 64), device=torch.device("cpu"), repeats=15)
                )
    finally:
        torch.set_num_threads(threads)
    t = {key: min(v) for key, v in grid.items()}
    for e in (3, 6):
        assert t[(3, e)] < t[(5, e)] < t[(7, e)], t
    for k in (3, 5, 7):
        assert t[(k, 3)] < t[(k, 6)], t


def test_latency_table_cache_and_expected_latency(tmp_path):
    net = SuperNet(SearchSpace.from_config(TINY_SPACE), num_classes=5, input_size=32)
    kw = dict(device=torch.device("cpu"), warmup=1, repeats=2, cache_dir=tmp_path)
    table = build_latency_table(net, **kw)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and "cpu" in files[0].name
    again = build_latency_table(net, **kw)
    assert again.edges == table.edges and again.fixed_ms == table.fixed_ms
    assert [row[-1] for row in table.edges] == [table.edges[0][-1], 0.0, table.edges[2][-1], 0.0]
    probs = [e.probs() for e in net.edges]
    expected = table.expected_ms(probs)
    manual = table.fixed_total + sum(
        float((p * torch.tensor(r)).sum()) for p, r in zip(probs, table.edges, strict=True)
    )
    assert expected.item() == pytest.approx(manual, rel=1e-6)
    assert table.min_ms() <= expected.item() <= table.max_ms()
    # calibration on whole nets: a line through (table sum, measured), cached with the table
    cal = calibrate(table, net, device=torch.device("cpu"), warmup=1, repeats=2, cache_dir=tmp_path)
    fit = cal.meta["calibration"]
    assert len(fit["points"]) == 4 and fit["scale"] > 0
    assert cal.fixed_ms["overhead"] == fit["offset_ms"]
    assert cal.min_ms() == pytest.approx(fit["scale"] * table.min_ms() + fit["offset_ms"])
    again = calibrate(table, net, device=torch.device("cpu"), cache_dir=tmp_path)
    assert again.meta["calibration"]["points"] == fit["points"]


def test_calibration_line_holds_against_one_net_timed_in_a_slow_spell():
    """The (table, measured) ms a 2-core EPYC gave the default space's calibration nets: the
    fourth net read 1.7x its table sum, then 1.1x a minute later. Least squares put the space's
    fastest net at 0.75 ms (it measured 0.26-0.36 ms, under the basic CNN's 0.69)."""
    points = [(0.3554, 0.3552), (4.4217, 4.4691), (1.8080, 1.9350), (2.4089, 4.0754)]
    scale, offset = _fit_line(points)
    assert scale == pytest.approx(1.05, abs=0.01)
    assert scale * 0.3554 + offset == pytest.approx(0.36, abs=0.03)
    # on points on a line it is that line; one point or one x: scale 1 through their median
    assert _fit_line([(1.0, 2.5), (2.0, 4.5), (4.0, 8.5)]) == pytest.approx((2.0, 0.5))
    assert _fit_line([(1.0, 1.0), (1.0, 2.0)]) == pytest.approx((1.0, 0.5))


# --- bad input ---------------------------------------------------------------------------------


def test_unknown_op_name_is_one_clear_error():
    with pytest.raises(SearchConfigError, match=r"search.candidates: unknown op '9x9_Conv'"):
        SearchSpace.from_config({**TINY_SPACE, "candidates": ["3x3_MBConv3", "9x9_Conv"]})
    for bad in ("3x3_Fused4", "4x4_FusedMBConv2", "3x5_MBConv3", "3x3_FusedMBConv0"):
        with pytest.raises(SearchConfigError, match=f"unknown op '{bad}'"):
            parse_op(bad)
    assert parse_op("7x7_MBConv6") == Op("MBConv", 7, 6) and parse_op("zero") is None
    assert parse_op("3x3_FusedMBConv4") == Op("FusedMBConv", 3, 4)


def test_target_below_the_smallest_net_is_refused_with_the_number():
    table = LatencyTable({"first_conv": 0.5, "head": 0.25}, [[1.0, 2.0], [0.5, 0.0]], {})
    with pytest.raises(SearchConfigError, match=r"smallest net in the space: 1\.750 ms"):
        check_target(table, 1.5, "add")
    check_target(table, 2.0, "add")
    with pytest.raises(SearchConfigError, match="latency_loss"):
        check_target(table, 2.0, "square")


def test_arch_files_that_do_not_fit_name_the_file_and_key(tmp_path):
    net = SuperNet(SearchSpace.from_config(TINY_SPACE), num_classes=5, input_size=32)
    arch = net.export_arch([0, 0, 0, 0])
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    load_arch(path, 32)
    # input too small for the strides: 4 -> 2 -> 1 -> 1 is fine, but 1 px -> stem 1 -> ...
    deep = json.loads(json.dumps(arch))
    for _ in range(4):
        block = json.loads(json.dumps(deep["blocks"][-1]))
        block["mobile_inverted_conv"]["stride"] = 2
        block["shortcut"] = None
        deep["blocks"].append(block)
    path.write_text(json.dumps(deep))
    with pytest.raises(ArchConfigError, match=rf"{path}: key 'blocks\.\d+\.mobile_inverted_conv"):
        load_arch(path, 8)
    bad = json.loads(json.dumps(arch))
    bad["blocks"][3]["mobile_inverted_conv"]["in_channels"] = 99
    path.write_text(json.dumps(bad))
    with pytest.raises(ArchConfigError, match=r"blocks\.3\.mobile_inverted_conv\.in_channels"):
        load_arch(path, 32)
    bad = json.loads(json.dumps(arch))
    bad["blocks"][1]["mobile_inverted_conv"]["name"] = "SepConv"
    with pytest.raises(ArchConfigError, match=r"blocks\.1\.mobile_inverted_conv\.name.*SepConv"):
        check_arch(bad, 32)
    with pytest.raises(ArchConfigError, match="does not exist"):
        load_arch(tmp_path / "missing.json")


def test_official_weights_only_for_the_builtin_arch(caplog):
    net = SuperNet(SearchSpace.from_config(TINY_SPACE), num_classes=5, input_size=32)
    arch = net.export_arch([0, 0, 0, 0])
    with caplog.at_level("WARNING"):
        model = create_model(
            "proxyless", num_classes=5, input_size=32, pretrained="auto", arch=arch
        )
    assert model.weights_source is None and not caplog.records
    with pytest.raises(ValueError, match=r"no pretrained weights for proxyless for this arch"):
        create_model("proxyless", num_classes=5, input_size=32, pretrained=True, arch=arch)


# --- end to end --------------------------------------------------------------------------------


def test_search_config_options_compose(tmp_path):
    for option in ("default", "imagenet"):
        cfg = compose_cfg([f"search={option}"], tmp_path, config_name="search")
        assert cfg.search.target_latency_ms > 0 and cfg.test is False


def test_tiny_search_writes_arch_json_that_trains(tmp_path, shared_data):
    from fruitnet.search.__main__ import run as search_run
    from fruitnet.train import run as train_run

    data = [
        "data=fruits",
        f"data.root={shared_data / 'fruits-360-sample'}",
        "data.max_samples_per_class=4",
        "data.batch_size=16",
        "data.num_workers=0",
    ]
    tiny = [
        "search.widths=[8,16]",
        "search.depths=[2,1]",
        "search.strides=[2,2]",
        "search.first_conv=8",
        "search.first_block=8",
        "search.feature_mix=32",
        "search.latency_repeats=2",
        "search.latency_warmup=1",
        "search.latency_loss=add",
        "search.target_latency_ms=1000",
        "search.runtime=torch",
        "search.warmup_epochs=1",
        "search.arch_every=1",
        # Fused-MBConv only: the arch then holds the layer that is fruitnet's own extension
        "search.candidates=[3x3_FusedMBConv1,3x3_FusedMBConv2,zero]",
    ]
    fast = [f for f in FAST if "model_size" not in f]
    limits = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
    ]
    run_dir = tmp_path / "search"
    cfg = compose_cfg(fast + data + tiny + limits, run_dir, config_name="search")
    results = search_run(cfg)
    arch_path = Path(results["arch_path"])
    assert arch_path == run_dir / "arch.json" and arch_path.is_file()
    layers = {b["mobile_inverted_conv"]["name"] for b in load_arch(arch_path)["blocks"][1:]}
    assert "FusedMBConvLayer" in layers
    for name in ("search_report.md", "edge_probs.png", "results.json"):
        assert (run_dir / name).is_file(), name
    assert results["arch_steps"] == 3 and len(results["history"]) == 2
    assert results["history"][0]["warmup"] and not results["history"][1]["warmup"]
    assert results["measured_latency_ms"] > 0 and results["predicted_latency_ms"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    # a killed (here: finished) search resumes from last.ckpt and keeps its history
    limits3 = [*limits[1:], "trainer.max_epochs=3", "ckpt_path=last"]
    resumed = search_run(compose_cfg(fast + data + tiny + limits3, run_dir, config_name="search"))
    assert resumed["resumed_from"] and len(resumed["history"]) == 3
    assert resumed["arch_steps"] == 6

    out = tmp_path / "train"
    one_step = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    cfg = compose_cfg(FAST + data + ["model=proxyless", f"model.arch={arch_path}", *one_step], out)
    trained = train_run(cfg)
    assert trained["arch"] == str(arch_path) and trained["weights_source"] is None
    expected = count_params(
        ProxylessNASNets(
            num_classes=trained["num_classes"], input_size=100, arch=load_arch(arch_path)
        )
    )[0]
    assert trained["params"] == expected

    assert trained["global_step"] == 1
    # the checkpoint holds the net config itself: it rebuilds without the arch file
    from fruitnet.module import ClassifierModule

    ckpts = sorted((out / "checkpoints").glob("*.ckpt"))
    assert ckpts
    arch_path.unlink()
    module = ClassifierModule.load_from_checkpoint(ckpts[0], weights_only=True)
    assert count_params(module.net)[0] == expected
    assert module.hparams.arch_path == str(arch_path)

    # ... and exports, explains and evaluates like a built-in model, from the checkpoint alone
    from fruitnet.eval import run as run_eval
    from fruitnet.export import run as run_export

    exported = run_export(compose_cfg([f"ckpt_path={ckpts[0]}", "format=onnx", "latency_iters=2"],
                                      tmp_path / "export", config_name="export"))  # fmt: skip
    assert Path(exported["output"]).is_file() and exported["max_abs_diff_probs"] <= 1e-4
    evaluated = run_eval(compose_cfg(
        [f"ckpt_path={ckpts[0]}", *data, "trainer=cpu", "verbose=false", "explain=true",
         "mistakes=4"], tmp_path / "eval", config_name="eval"))  # fmt: skip
    assert 0.0 <= evaluated["test_acc"] <= 1.0 and evaluated["num_mistakes"] > 0
    assert Path(evaluated["artifacts"]["mistakes_png"]).is_file()


def test_arch_that_does_not_fit_the_input_stops_before_training(tmp_path, shared_data):
    from fruitnet.train import run as train_run

    arch = builtin_arch()
    for block in arch["blocks"][9:]:
        if block["mobile_inverted_conv"]["name"] != "ZeroLayer":
            block["mobile_inverted_conv"]["stride"] = 2
            block["shortcut"] = None
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(arch))
    cfg = compose_cfg(
        FAST
        + [
            "data=fruits",
            f"data.root={shared_data / 'fruits-360-sample'}",
            "data.max_samples_per_class=2",
            "model=proxyless",
            f"model.arch={path}",
            "trainer.fast_dev_run=1",
        ],
        tmp_path / "run",
    )
    with pytest.raises(ArchConfigError, match=rf"{path}: key 'blocks\.\d+\.mobile_inverted_conv"):
        train_run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
