"""Model registry, architectures, weights loading (offline, weights_only) and profiling helpers."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet50_Weights

from fruitnet.models import (
    ModelSpec,
    UnknownModelError,
    WeightsFileError,
    WeightsUnavailableError,
    create_model,
    get_model_spec,
    list_models,
    register_model,
    registry,
)
from fruitnet.models.profile import count_params, flops, fp32_mib, latency_ms, state_dict_mib
from fruitnet.models.weights import (
    PROXYLESS_GPU,
    WeightsSource,
    fetch,
    git_blob_sha1,
    load_state_dict_file,
)

REPO = Path(__file__).resolve().parents[2]
PROXYLESS_BACKBONE = 5_390_848
PROXYLESS_PER_CLASS = 1_729


def n_params(model: torch.nn.Module) -> int:
    return count_params(model)[0]


def hub_checkpoints() -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def without_counters(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    # Non-default values everywhere (BN stats included) so "loaded" differs from "initialised".
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    return model


def assert_backbone_equal(model, state: dict, head: str) -> None:
    got = model.state_dict()
    for k, v in without_counters(state).items():
        if not k.startswith(head + "."):
            assert torch.equal(got[k], v), k


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_three_models_with_specs():
    assert list_models() == ["cnn", "proxyless", "resnet50"]
    sizes = {n: get_model_spec(n).input_size for n in list_models()}
    assert sizes == {"cnn": 100, "resnet50": 224, "proxyless": 224}
    for name in list_models():
        spec = get_model_spec(name)
        assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert get_model_spec("cnn").weights_url is None
    assert get_model_spec("proxyless").weights_url == PROXYLESS_GPU.url
    assert get_model_spec("resnet50").weights_url == ResNet50_Weights.IMAGENET1K_V2.url


def test_each_model_registers_next_to_its_code():
    modules = {n: get_model_spec(n).builder.__module__ for n in list_models()}
    assert modules == {
        "cnn": "fruitnet.models.cnn",
        "proxyless": "fruitnet.models.proxyless",
        "resnet50": "fruitnet.models.resnet",
    }


def test_register_model_as_decorator_and_as_call(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model(name="tiny", input_size=8, description="a test model")
    def tiny(*, num_classes: int, input_size: int = 8, hidden: int = 4) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(3 * input_size**2, hidden),
            torch.nn.Linear(hidden, num_classes),
        )

    assert callable(tiny) and get_model_spec("tiny").builder is tiny
    assert get_model_spec("tiny").mean == (0.485, 0.456, 0.406)
    assert create_model("tiny", num_classes=2, hidden=5)(torch.zeros(1, 3, 8, 8)).shape == (1, 2)
    spec = register_model(ModelSpec(name="Tiny2", builder=tiny, input_size=8))
    assert get_model_spec("tiny2") is spec and "tiny2" in list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_model(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="tiny", input_size=8)(tiny)


def test_unknown_model_names_valid_ones():
    with pytest.raises(UnknownModelError, match="cnn, proxyless, resnet50"):
        get_model_spec("vgg16")
    with pytest.raises(KeyError):
        create_model("vgg16", num_classes=3)
    with pytest.raises(ValueError):
        create_model("vgg16", num_classes=3)


def test_unknown_kwargs_raise_type_error_naming_them():
    with pytest.raises(TypeError, match="bogus, other"):
        create_model("cnn", num_classes=3, bogus=1, other=2)
    with pytest.raises(TypeError, match="weights_name"):
        create_model("proxyless", num_classes=3, weights_name="x")


def test_model_kwargs():
    cnn = create_model("cnn", num_classes=3, dropout=0.2)
    assert cnn.classifier.dropout.p == 0.2
    assert create_model("cnn", num_classes=3).classifier.dropout.p == 0.5
    prox = create_model("proxyless", num_classes=3, dropout=0.3)
    assert prox.classifier.dropout.p == 0.3
    assert create_model("proxyless", num_classes=3).classifier.dropout is None
    with pytest.raises(ValueError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        create_model("resnet50", num_classes=3, weights_name="NOPE")


# --- architectures --------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 131])
@pytest.mark.parametrize("size", [100, 224])
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, size, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, input_size=size).train()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_exact_param_counts():
    assert n_params(create_model("cnn", num_classes=131, input_size=100)) == 3_060_071
    assert n_params(create_model("cnn", num_classes=131, input_size=224)) == 15_860_071
    assert n_params(create_model("resnet50", num_classes=1000)) == 25_557_032
    assert n_params(create_model("proxyless", num_classes=1000)) == 7_119_848
    assert n_params(create_model("proxyless", num_classes=10)) == 5_408_138
    for k in (1, 2, 131):
        expected = PROXYLESS_BACKBONE + PROXYLESS_PER_CLASS * k
        assert n_params(create_model("proxyless", num_classes=k)) == expected


def test_cnn_layout_and_init():
    model = create_model("cnn", num_classes=131)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert model.classifier.fc1.in_features == 6 * 6 * 128
    assert model.classifier.fc1.out_features == 625
    with pytest.raises(ValueError, match="16"):
        create_model("cnn", num_classes=2, input_size=15)


def test_cnn_default_head_is_the_studys_flatten_head():
    default = create_model("cnn", num_classes=131, input_size=100)
    flatten = create_model("cnn", num_classes=131, input_size=100, head="flatten")
    assert list(default.classifier._modules) == ["flatten", "fc1", "relu", "dropout", "fc2"]
    assert default.state_dict().keys() == flatten.state_dict().keys()
    assert n_params(flatten) == n_params(default) == 3_060_071


def test_cnn_avg_head_pools_before_fc1_at_any_input_size():
    torch.manual_seed(0)
    small = create_model("cnn", num_classes=131, input_size=100, head="avg")
    big = create_model("cnn", num_classes=131, input_size=224, head="avg")
    assert list(small.classifier._modules)[:2] == ["pool", "flatten"]
    assert small.classifier.fc1.in_features == big.classifier.fc1.in_features == 128
    # 4 convs + fc1 (128 -> 625) + fc2 (625 -> 131): no weight depends on the input size
    assert n_params(small) == n_params(big) == 97_440 + (128 * 625 + 625) + (625 * 131 + 131)
    # Same keys as the study's head (the pool has no weights): loads across input sizes
    assert small.state_dict().keys() == create_model("cnn", num_classes=131).state_dict().keys()
    big.load_state_dict(small.state_dict())
    x = torch.randn(2, 3, 100, 100)
    small.eval(), big.eval()
    with torch.no_grad():
        assert torch.equal(small(x), big(x))
        # Position-free: the logits are a function of the spatial mean of the features alone
        pooled = small.classifier.pool(small.features(x)).flatten(1)
        assert torch.allclose(small.classifier[2:](pooled), small(x))
    with pytest.raises(ValueError, match="head"):
        create_model("cnn", num_classes=2, head="max")


def _plain_and_normed(input_norm: str, size: int):
    """The CNN without and with ``input_norm``, the same weights in both: the norm is weight-free,
    so its state_dict has the study's keys and the study's weights load into it."""
    torch.manual_seed(0)
    plain = create_model("cnn", num_classes=2, input_size=size).eval()
    normed = create_model("cnn", num_classes=2, input_size=size, input_norm=input_norm).eval()
    assert normed.state_dict().keys() == plain.state_dict().keys()
    normed.load_state_dict(plain.state_dict())
    return plain, normed


def test_cnn_input_norm_image_ignores_exposure_and_contrast():
    plain, norm = _plain_and_normed("image", 64)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        # Per image: one image's exposure does not change another's logits
        darker = torch.cat([x[:1] * 0.5 + 0.1, x[1:] * 2.0 - 0.3])
        assert torch.allclose(norm(darker), norm(x), atol=1e-4)
        assert not torch.allclose(plain(darker), plain(x), atol=1e-2)
        # It is the plain net on each image standardised over all its pixels
        z = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), correction=0, keepdim=True)
        assert torch.allclose(norm(x), plain(z), atol=1e-4)
    with pytest.raises(ValueError, match="input_norm"):
        create_model("cnn", num_classes=2, input_norm="batch")


def test_cnn_instance_norm_measures_early_responses_against_the_image_own():
    torch.manual_seed(0)
    plain = create_model("cnn", num_classes=2, input_size=32).eval()
    ibn = create_model("cnn", num_classes=2, input_size=32, instance_norm=2).eval()
    # The study's keys plus the two norms' affine weights: study weights load into it
    extra = ibn.state_dict().keys() - plain.state_dict().keys()
    assert extra == {f"features.norm{i}.{w}" for i in (1, 2) for w in ("weight", "bias")}
    assert [n for n, _ in ibn.features.named_children()][:5] == [
        "conv1", "pool1", "norm1", "relu1", "conv2"]  # fmt: skip
    ibn.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    # A film with twice the contrast (every edge response twice as strong) is the same film to it,
    # per image and at eval too (no running statistics: nothing is fitted to the test data)
    twice = torch.cat([x[:1] * 2.0, x[1:]])
    with torch.no_grad():
        assert torch.allclose(ibn(twice), ibn(x), atol=1e-4)
        assert not torch.allclose(plain(twice), plain(x), atol=1e-2)
        # norm1 is InstanceNorm: each channel of the pooled conv1 map standardised per image
        # (its affine weights at their init, 1 and 0)
        pooled = ibn.features.pool1(ibn.features.conv1(x))
        var, mean = torch.var_mean(pooled, dim=(2, 3), correction=0, keepdim=True)
        expected = (pooled - mean) / torch.sqrt(var + 1e-5)
        assert torch.allclose(ibn.features.norm1(pooled), expected, atol=1e-5)
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="instance_norm"):
            create_model("cnn", num_classes=2, instance_norm=bad)


def test_cnn_input_norm_equalize_undoes_any_monotonic_change_of_grey_levels():
    plain, eq = _plain_and_normed("equalize", 32)
    # 32 grey levels, the same in the three channels (an X-ray), a flat black border
    grey = torch.randint(0, 32, (2, 1, 32, 32)).float() / 31
    grey[:, :, :4] = 0.0
    x = grey.expand(-1, 3, -1, -1)
    with torch.no_grad():
        out = eq.features.equalize(x)
        # Mid-ranks: in (0, 1), equal levels equal (the border is one value, not a ramp), order kept
        assert out.min() > 0 and out.max() < 1
        assert out[:, :, :4].unique().numel() == 2  # one value per image
        a, b = x[0].flatten(), out[0].flatten()
        assert torch.equal(torch.sign(a[:, None] - a[None]), torch.sign(b[:, None] - b[None]))
        # The mean mid-rank is 1/2 whatever the image
        assert torch.allclose(out.mean((1, 2, 3)), torch.full((2,), 0.5), atol=1e-6)
        # A monotonic change of the levels (gamma, then exposure and contrast) changes nothing
        # (the levels 8 apart in 0..255, so no two merge when they are cut into 256 again)
        changed = (x**1.5) * 0.6 + 0.2
        assert torch.allclose(eq(changed), eq(x), atol=1e-5)
        assert not torch.allclose(plain(changed), plain(x), atol=1e-3)
        # ImageNet-style normalisation of the input neither
        assert torch.allclose(eq((x - 0.45) / 0.22), eq(x), atol=1e-5)


def test_cnn_computes_the_study_order_conv_relu_pool():
    model = create_model("cnn", num_classes=7).eval()
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    study = torch.nn.Sequential(
        *[layer for c in convs for layer in (c, torch.nn.ReLU(), torch.nn.MaxPool2d(2))]
    )
    x = torch.randn(2, 3, 100, 100)
    with torch.no_grad():
        assert torch.equal(model.features(x), study(x))


def test_proxyless_structure():
    model = create_model("proxyless", num_classes=1000)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 43
    assert all(bn.eps == 1e-3 and bn.momentum == 0.1 for bn in bns)
    assert len(model.blocks) == 22
    zero = [i for i, b in enumerate(model.blocks) if b.is_zero]
    assert zero == [2, 3, 4, 6, 7, 10, 11, 14]
    assert all(n_params(model.blocks[i]) == 0 for i in zero)
    assert n_params(model.blocks[21]) == 1_139_040
    x = torch.randn(1, 40, 8, 8)
    assert torch.equal(model.blocks[2](x), x)


def test_proxyless_keys_sanity_without_datasheet():
    keys = list(without_counters(create_model("proxyless", num_classes=1000).state_dict()))
    assert len(keys) == 217
    assert keys[0] == "first_conv.conv.weight"
    assert keys[-2:] == ["classifier.linear.weight", "classifier.linear.bias"]
    assert "blocks.21.mobile_inverted_conv.depth_conv.bn.weight" in keys
    assert "blocks.1.mobile_inverted_conv.inverted_bottleneck.conv.weight" in keys
    assert not any(k.startswith("blocks.0.mobile_inverted_conv.inverted_bottleneck") for k in keys)
    assert not any(k.startswith("blocks.14.") for k in keys)


def shared_docs() -> Path | None:
    env = os.environ.get("FRUITNET_SHARED_DOCS")
    for candidate in [Path(env)] if env else [REPO.parent / "shared" / "docs"]:
        if (candidate / "proxyless_gpu_state_dict_keys.txt").is_file():
            return candidate
    return None


def test_proxyless_keys_equal_official_list():
    docs = shared_docs()
    if docs is None:
        pytest.skip("proxyless_gpu_state_dict_keys.txt not found (set FRUITNET_SHARED_DOCS)")
    official = {}
    for line in (docs / "proxyless_gpu_state_dict_keys.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            official[key] = tuple(ast.literal_eval(shape))
    model = create_model("proxyless", num_classes=1000)
    ours = {k: tuple(v.shape) for k, v in without_counters(model.state_dict()).items()}
    assert list(ours) == list(official)
    assert ours == official


# --- weights loading ------------------------------------------------------------------------


def test_proxyless_pretrained_from_hub_cache():
    ref = randomized(create_model("proxyless", num_classes=1000))
    state = without_counters(ref.state_dict())  # like the 2018 file: no num_batches_tracked
    torch.save({"state_dict": state}, hub_checkpoints() / "proxyless_gpu.pth")
    with pytest.warns(UserWarning, match="not byte-identical"):
        model = create_model("proxyless", num_classes=5, pretrained=True)
    assert model.classifier.linear.out_features == 5
    assert_backbone_equal(model, state, "classifier.linear")
    with pytest.warns(UserWarning, match="loading it anyway"):
        full = create_model("proxyless", num_classes=1000, pretrained=True)
    assert torch.equal(full.classifier.linear.weight, state["classifier.linear.weight"])


def test_pretrained_auto_uses_cached_weights_else_random_init(caplog):
    offline = create_model("proxyless", num_classes=3, pretrained="auto")
    assert offline.weights_source is None
    assert "random init" in caplog.text and "model.weights" in caplog.text
    ref = randomized(create_model("proxyless", num_classes=1000))
    state = without_counters(ref.state_dict())
    torch.save({"state_dict": state}, hub_checkpoints() / "proxyless_gpu.pth")
    with pytest.warns(UserWarning, match="not byte-identical"):
        cached = create_model("proxyless", num_classes=3, pretrained="auto")
    assert cached.weights_source == str(hub_checkpoints() / "proxyless_gpu.pth")
    assert_backbone_equal(cached, state, "classifier.linear")
    with pytest.raises(ValueError, match="true, false or auto"):
        create_model("proxyless", num_classes=3, pretrained="yes")


def test_resnet50_pretrained_from_hub_cache():
    ref = randomized(create_model("resnet50", num_classes=1000))
    file_name = Path(ResNet50_Weights.IMAGENET1K_V2.url).name  # torchvision's cache name
    torch.save(ref.state_dict(), hub_checkpoints() / file_name)
    with pytest.warns(UserWarning, match="sha256"):
        model = create_model("resnet50", num_classes=7, pretrained=True)
    assert model.fc.out_features == 7
    assert_backbone_equal(model, ref.state_dict(), "fc")


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "module_prefix"])
def test_weights_path_replaces_head(tmp_path, wrap):
    ref = randomized(create_model("proxyless", num_classes=1000))
    state = ref.state_dict()
    if wrap == "module_prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "w.pt"
    torch.save({"state_dict": state} if wrap == "state_dict" else state, path)
    model = create_model("proxyless", num_classes=3, weights=path)
    assert model.classifier.linear.out_features == 3
    assert_backbone_equal(model, ref.state_dict(), "classifier.linear")


def test_weights_path_with_matching_head_loads_strictly(tmp_path):
    ref = randomized(create_model("cnn", num_classes=4))
    path = tmp_path / "cnn.pt"
    torch.save(ref.state_dict(), path)
    model = create_model("cnn", num_classes=4, weights=path, pretrained=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_lightning_style_checkpoint_keeps_only_the_network(tmp_path):
    ref = randomized(create_model("cnn", num_classes=4))
    state = {f"net.{k}": v for k, v in ref.state_dict().items()}
    state["criterion.weight"] = torch.ones(4)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = create_model("cnn", num_classes=4, weights=path)
    assert torch.equal(model.classifier.fc2.weight, ref.classifier.fc2.weight)


def test_wrong_keys_error_names_file_and_keys(tmp_path):
    state = create_model("proxyless", num_classes=1000).state_dict()
    state["extra.weight"] = state.pop("feature_mix_layer.conv.weight")
    path = tmp_path / "bad_keys.pth"
    torch.save(state, path)
    with pytest.raises(WeightsFileError) as info:
        create_model("proxyless", num_classes=10, weights=path)
    msg = str(info.value)
    assert str(path) in msg
    assert "missing keys (1): feature_mix_layer.conv.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert isinstance(info.value, ValueError)


def test_wrong_shapes_error_names_file_and_shapes(tmp_path):
    state = create_model("resnet50", num_classes=1000).state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    path = tmp_path / "bad_shapes.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"conv1.weight: file \(32, 3, 7, 7\) vs model \(64, 3"):
        create_model("resnet50", num_classes=10, weights=path)


def test_cnn_file_from_other_input_size_is_a_shape_error(tmp_path):
    path = tmp_path / "cnn100.pt"
    torch.save(create_model("cnn", num_classes=4, input_size=100).state_dict(), path)
    with pytest.raises(WeightsFileError, match="classifier.fc1.weight"):
        create_model("cnn", num_classes=4, input_size=224, weights=path)


def test_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(create_model("cnn", num_classes=2).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a checkpoint")
    for path in (truncated, garbage):
        with pytest.raises(WeightsFileError, match=str(path.name)):
            create_model("cnn", num_classes=2, weights=path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_model("cnn", num_classes=2, weights=tmp_path / "missing.pt")


class Payload:
    """A pickled custom object: weights_only=True must refuse it rather than build it."""


def test_pickled_custom_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(WeightsFileError, match="refused"):
        load_state_dict_file(path)


def test_non_tensor_entries_are_rejected(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(WeightsFileError, match="not a state_dict"):
        load_state_dict_file(path)


def test_cnn_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="no pretrained weights for cnn"):
        create_model("cnn", num_classes=3, pretrained=True)


@pytest.mark.parametrize("name", ["proxyless", "resnet50"])
def test_offline_without_cache_fails_fast_with_instructions(name):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_model(name, num_classes=3, pretrained=True)
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    spec = get_model_spec(name)
    assert spec.weights_url in msg
    expected_path = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.weights_url).name
    assert str(expected_path) in msg
    assert "model.weights=PATH" in msg
    assert not expected_path.exists()


def fake_download(payload: bytes | None):
    def download(url, dst, hash_prefix=None, progress=True):
        if payload is None:
            raise OSError("network unreachable")
        Path(dst).write_bytes(payload)

    return download


def recording_download(calls: list[str]):
    def download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise OSError("no network in tests")

    return download


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", " Yes "])
def test_offline_words_block_the_weights_download(monkeypatch, value):
    # The dataset downloader reads the same switch (fruitnet.settings.is_offline): "true" and
    # "yes" must not let a weights download through.
    calls: list[str] = []
    monkeypatch.setenv("FRUITNET_OFFLINE", value)
    monkeypatch.setattr(torch.hub, "download_url_to_file", recording_download(calls))
    with pytest.raises(WeightsUnavailableError, match="FRUITNET_OFFLINE is set") as info:
        create_model("proxyless", num_classes=3, pretrained=True)
    assert calls == []
    assert "model.weights=PATH" in str(info.value)


@pytest.mark.parametrize("value", ["0", "", None])
def test_not_offline_tries_the_download(monkeypatch, value):
    calls: list[str] = []
    if value is None:
        monkeypatch.delenv("FRUITNET_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("FRUITNET_OFFLINE", value)
    monkeypatch.setattr(torch.hub, "download_url_to_file", recording_download(calls))
    with pytest.raises(WeightsUnavailableError, match="no network in tests"):
        create_model("proxyless", num_classes=3, pretrained=True)
    assert calls == [PROXYLESS_GPU.url]


def test_download_failure_is_weights_unavailable(monkeypatch):
    monkeypatch.setenv("FRUITNET_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download(None))
    with pytest.raises(WeightsUnavailableError, match="network unreachable") as info:
        create_model("proxyless", num_classes=3, pretrained=True)
    assert "model.weights=PATH" in str(info.value)


def test_download_with_wrong_blob_id_is_deleted(monkeypatch):
    monkeypatch.setenv("FRUITNET_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download(b"<html>"))
    with pytest.raises(WeightsUnavailableError, match="git blob id .* was deleted"):
        create_model("proxyless", num_classes=3, pretrained=True)
    assert not PROXYLESS_GPU.cache_path().exists()


def test_verified_download_lands_in_cache(monkeypatch, tmp_path):
    payload = b"weights"
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    source = WeightsSource(url="https://example.invalid/x/w.pth", git_blob_sha1=git_blob_sha1(src))
    monkeypatch.setenv("FRUITNET_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download(payload))
    path = fetch(source, model="demo")
    assert path == hub_checkpoints() / "w.pth" and path.read_bytes() == payload


def test_git_blob_sha1_matches_git(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello\n")
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"


# --- profiling ------------------------------------------------------------------------------


def test_profile_helpers():
    model = create_model("proxyless", num_classes=1000).train()
    total, trainable = count_params(model)
    assert total == trainable == 7_119_848
    assert fp32_mib(model) == pytest.approx((7_119_848 + 45_520) * 4 / 2**20)
    assert 27.0 < state_dict_mib(model) < 28.0
    # The datasheet counts 465.26 M multiply-adds; FlopCounterMode counts 2 per multiply-add.
    assert flops(model, 224) == pytest.approx(2 * 465.26e6, rel=0.05)
    assert model.training
    cnn = create_model("cnn", num_classes=131)
    assert flops(cnn, 100) > 0
    assert latency_ms(cnn, 100, batch=2, warmup=1, iters=2) > 0
    assert latency_ms(cnn, 100, batch=2, warmup=1, iters=2, channels_last=True) > 0
    assert cnn.training and cnn.features.conv1.weight.is_contiguous()


def test_size_table_prints_exact_counts(capsys):
    from fruitnet.models.__main__ import main

    main([])
    out = capsys.readouterr().out
    for count in ("3,060,071", "25,557,032", "7,119,848"):
        assert count in out
    assert out.count("\n| ") >= 6
