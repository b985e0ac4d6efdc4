"""Grad-CAM (`fruitnet.explain`): maps that point at the evidence, for every registered model,
through predict (`explain=true`) and eval's mistakes grid, and the missing-extra error."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_cfg
from PIL import Image
from torch import nn

from fruitnet import explain
from fruitnet.data.transforms import preprocess_spec
from fruitnet.explain import (
    INSTALL_HINT,
    CamExplainer,
    ExplainUnavailableError,
    cam_layer_of,
    find_cam_layer,
    input_region,
    overlay_names,
    to_image_geometry,
)
from fruitnet.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_model,
    get_model_spec,
    list_models,
)
from fruitnet.module import ClassifierModule
from fruitnet.predict import Predictor

# The dev extra installs Captum; without it only the geometry and missing-extra tests run.
needs_captum = pytest.mark.skipif(
    not explain.available(), reason=f"the explain extra is not installed ({INSTALL_HINT})"
)

ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def assert_png(path: Path, min_side: int = 150) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("L"))
    assert min(pixels.shape) >= min_side, pixels.shape
    assert pixels.std() > 5, f"{path} looks blank"


# --------------------------------------------------------------------------- the map is right

SIDE, SQUARE, TOP, LEFT = 32, 8, 5, 17  # class 1: a bright 8 x 8 square at rows 5-12, cols 17-24


def square_images(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images; every other one (class 1) has the bright square, class 0 has none."""
    x = torch.randint(0, 128, (n, 3, SIDE, SIDE), generator=gen, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 1, :, TOP : TOP + SQUARE, LEFT : LEFT + SQUARE] = 255
    return x, y


@needs_captum
def test_the_map_for_the_square_class_peaks_inside_the_square():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    # A small conv net with a global-average-pool head (for which Grad-CAM is exact CAM), trained
    # for a few seconds; no layer is named, so the fallback probe picks its last conv.
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )  # fmt: skip
    x, y = square_images(320, gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(8):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            loss = nn.functional.cross_entropy(net(x[idx].float() / 255), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    explainer = CamExplainer(net)  # mean 0 / std 1: the /255 scaling above, as norm=false
    assert explainer.layer_name == "3"
    test_x, test_y = square_images(40, gen)
    assert (explainer.probs(test_x).argmax(-1) == test_y).float().mean() >= 0.95

    squares = test_x[test_y == 1]
    maps = explainer.maps(squares, 1, batch_size=7)  # batches of 7: a ragged last batch
    assert maps.shape == (len(squares), SIDE, SIDE) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    inside = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    inside[TOP : TOP + SQUARE, LEFT : LEFT + SQUARE] = True
    for m in maps:
        row, col = divmod(int(m.argmax()), SIDE)
        assert inside[row, col], (row, col)
        assert m[inside].mean() > 3 * m[~inside].mean()
    # Same maps one by one as in batches, and targets=None explains the predicted class (1).
    assert torch.allclose(explainer.maps(squares[:1], [1]), maps[:1], atol=1e-5)
    assert torch.allclose(explainer.maps(squares[:3]), maps[:3], atol=1e-5)
    with torch.inference_mode():  # as predict runs; the maps still need autograd
        assert torch.allclose(explainer.maps(squares[:2], 1), maps[:2], atol=1e-5)


# --------------------------------------------------------------------------- two classes


@needs_captum
def test_two_class_maps_are_signed_so_the_absence_class_is_not_blank():
    # Class 0 is only the absence of class 1's evidence (NORMAL vs PNEUMONIA): non-negative
    # features, logit_0 = -logit_1. Plain (ReLU'd) Grad-CAM of class 0 is zero everywhere; the
    # signed map of the logit difference is not, and the two classes' maps are each other's
    # negative.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    w = torch.rand(4) + 0.1
    with torch.no_grad():
        net[4].weight.copy_(torch.stack([-w, w]))
        net[4].bias.zero_()
    explainer = CamExplainer(net, layer="1")
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    assert (explainer.maps(images, 0) == 0).all()  # the blank map of the issue
    assert explainer.maps(images, 1).amax() > 0
    signed0 = explainer.maps(images, 0, contrast=True, batch_size=2)
    signed1 = explainer.maps(images, [1, 1, 1], contrast=True)
    torch.testing.assert_close(signed0, -signed1)
    # By hand: sum_k mean(d(z0 - z1) / dA_k) * A_k, no ReLU; here -2 w_k / (16 * 16) * A_k.
    acts = net[1](net[0](images.float() / 255))
    expected = (-2 * w / 256)[None, :, None, None].mul(acts).sum(1).detach()
    torch.testing.assert_close(signed0, expected, atol=1e-6, rtol=1e-4)
    assert (signed0 < 0).any() and (signed0 <= 0).all()  # all of it speaks for class 1

    norm = explain.normalize_maps(signed0)
    assert norm.amin() == pytest.approx(-1.0) and norm.amax() <= 0  # sign kept, -1..1
    # The figures say what red and blue mean; two classes: one signed map per mistake.
    fig = explain.mistakes_cam_figure(images, signed1, None, ["a"] * 3, ["b"] * 3, [0.9] * 3)
    text = " ".join(t.get_text() for t in fig.texts)
    assert "red: evidence for the predicted class" in text
    assert "blue: evidence for the true class" in text
    assert len(fig.axes) == 3 * 2 + 1  # image + signed map per row, the colour bar
    assert fig.axes[1].images[1].get_cmap().name == "RdBu_r"
    assert fig.axes[1].images[1].get_clim() == (-1.0, 1.0)
    means = [explain.normalize_maps(signed0).mean(0), explain.normalize_maps(signed1).mean(0)]
    fig = explain.mean_map_figure(images[:2], means, ["NORMAL", "PNEUMONIA"], [3, 3], signed=True)
    text = " ".join(t.get_text() for t in fig.texts)
    assert "red: evidence for the column's class, blue: for the other" in text
    plain = explain.mistakes_cam_figure(
        images, signed1.relu(), signed0.relu(), ["a"] * 3, ["b"] * 3, [0.9] * 3
    )
    text = " ".join(t.get_text() for t in plain.texts)
    assert "red: strongest evidence for the class, blue: none" in text
    assert len(plain.axes) == 3 * 3 + 1 and "no positive\nevidence" in [
        t.get_text() for ax in plain.axes for t in ax.texts
    ]


# --------------------------------------------------------------------------- every model


@needs_captum
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_has_a_target_layer_that_gives_a_map(name):
    torch.manual_seed(0)
    size = 64
    net = create_model(name, num_classes=3, input_size=size).eval()
    spec = get_model_spec(name)
    assert spec.cam_layer, f"{name} names no cam_layer in the registry"
    layer = net.get_submodule(spec.cam_layer)
    assert isinstance(layer, nn.Module) and any(isinstance(m, nn.Conv2d) for m in layer.modules())
    # The registry's choice is the last conv stage, which is what the fallback probe finds too.
    assert find_cam_layer(net, size) == spec.cam_layer
    explainer = CamExplainer(net, model_name=name, input_size=size)
    assert explainer.layer_name == spec.cam_layer
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    maps = explainer.maps(images, [0, 2])
    assert maps.shape == (2, size, size)
    assert torch.isfinite(maps).all() and (maps >= 0).all()


def test_a_layer_the_net_lacks_falls_back_to_the_last_conv_stage(caplog):
    # e.g. a searched ProxylessNAS config without a feature_mix_layer: "cnn" names `features`,
    # which this net does not have.
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="fruitnet.explain"):
        assert cam_layer_of(net, "cnn", 32) == "3"
    assert "not a module" in caplog.text
    assert cam_layer_of(net, None, 32) == "3"
    with pytest.raises(ValueError, match="no conv module"):
        find_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), 8)


# --------------------------------------------------------------------------- geometry


def test_maps_go_back_onto_the_original_image_geometry():
    cam = torch.zeros(10, 10)
    cam[:5, 5:] = 1.0  # the top-right quarter of what the network saw
    # norm=false squashes the whole image: the map stretches over all of it.
    squash = preprocess_spec(False, 10)
    out = to_image_geometry(cam, 40, 80, squash)
    assert out.shape == (40, 80) and np.isfinite(out).all()
    assert out[5, 70] == pytest.approx(1.0) and out[35, 10] == pytest.approx(0.0)
    # norm=true: shorter side 256, centre crop 224; a 512 x 256 image shows rows 144..368.
    crop = preprocess_spec(True)
    assert input_region(512, 256, crop) == (144.0, 16.0, 224.0, 224.0)
    out = to_image_geometry(torch.ones(224, 224), 512, 256, crop)
    assert np.isnan(out[:144]).all() and np.isnan(out[368:]).all() and np.isnan(out[:, :16]).all()
    assert np.isfinite(out[144:368, 16:240]).all() and np.nanmax(out) == pytest.approx(1.0)
    # Any drawing size keeps the proportions: the 128 x 64 copy has the crop at rows 36..92.
    small = to_image_geometry(torch.ones(224, 224), 128, 64, crop)
    assert np.isnan(small[35]).all() and np.isfinite(small[36:92, 4:60]).all()


def test_overlay_names_keep_subfolders_and_never_collide(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "sub" / "a.jpg", tmp_path / "b.bmp"]
    names = overlay_names(paths, tmp_path)
    assert names == [Path("a_jpg.png"), Path("a_png.png"), Path("sub/a.png"), Path("b.png")]
    assert overlay_names([tmp_path / "x.jpeg"], None) == [Path("x.png")]


# --------------------------------------------------------------------------- predict


def _varied_images(root: Path) -> list[str]:
    """Images of several sizes and modes, two with the same stem, one in a subfolder."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)).save(root / "wide.jpg")
    Image.fromarray(rng.integers(0, 255, (300, 120), dtype=np.uint8), "L").save(root / "gray.png")
    rgba = rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "sub" / "cutout.png")
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(root / "wide.png")
    (root / "notes.txt").write_text("not an image\n")
    return ["gray.png", "sub/cutout.png", "wide_jpg.png", "wide_png.png"]


@needs_captum
def test_predict_explain_writes_one_overlay_per_image(trained_cnn, data_dir, tmp_path):
    photos = tmp_path / "photos"
    expected = _varied_images(photos)
    from fruitnet.predict import run as run_predict

    output = tmp_path / "out" / "preds.json"
    overrides = [
        f"ckpt_path={trained_cnn.ckpt}", f"input={photos}", f"output={output}",
        "explain=true", "batch_size=3",
    ]  # fmt: skip
    rows = run_predict(compose_cfg(overrides, tmp_path / "run", data_dir, config_name="predict"))
    assert len(rows) == 4
    out_dir = tmp_path / "out" / "preds_explain"
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert written == expected
    for name in expected:
        assert_png(out_dir / name)


@needs_captum
def test_explain_under_the_norm_true_pipeline(tmp_path):
    # The norm=true path (ImageNet mean/std, shorter side 256, centre crop 224) on a tall
    # grayscale image, with an untrained model: the map covers the crop, the PNG is written.
    module = ClassifierModule(
        model_name="cnn", num_classes=2, input_size=224, optimizer=ADAM,
        class_names=["left", "right"], preprocess=preprocess_spec(True),
    ).eval()  # fmt: skip
    predictor = Predictor(module)
    image = tmp_path / "tall.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (600, 300), dtype=np.uint8)).save(
        image
    )
    rows = predictor.predict([image], topk=1)
    written = explain.write_overlays(predictor, rows, tmp_path / "cams")
    assert [p.name for p in written] == ["tall.png"]
    assert_png(written[0])
    maps = CamExplainer(module).maps(predictor.decode(image)[None])
    assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all()


@needs_captum
def test_maps_equal_grad_cam_computed_by_hand_under_the_checkpoint_preprocessing():
    # The basic CNN is features -> classifier, so Grad-CAM needs no hooks to compute by hand:
    # relu(sum_k mean(d logit_c / d A_k) * A_k) on the ImageNet-normalised input, upsampled.
    torch.manual_seed(0)
    module = ClassifierModule(
        model_name="cnn", num_classes=3, input_size=48, optimizer=ADAM,
        preprocess={**preprocess_spec(True), "resize": 48, "crop": 48, "size": 48},
    ).eval()  # fmt: skip
    images = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)
    targets = [0, 1, 2, 1, 0]
    maps = CamExplainer(module).maps(images, targets, batch_size=2)

    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = (images.float() / 255 - mean) / std
    acts = module.net.features(x)
    logits = module.net.classifier(acts)
    grads = torch.autograd.grad(logits[torch.arange(5), targets].sum(), acts)[0]
    cam = (grads.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True).relu()
    expected = nn.functional.interpolate(cam, (48, 48), mode="bilinear")[:, 0].detach()
    assert expected.amax() > 0
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- eval


def _binary_folder(root: Path) -> None:
    rng = np.random.default_rng(2)
    for split, n in (("Training", 4), ("Test", 6)):
        for c, name in enumerate(("dark", "light")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                lo = 0 if c == 0 else 120
                arr = rng.integers(lo, lo + 135, (40 + 4 * i, 48, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i}.jpg")


@needs_captum
def test_eval_adds_maps_to_the_mistakes_grid_and_a_mean_map_per_class(data_dir, tmp_path):
    from fruitnet.eval import run as run_eval

    root = tmp_path / "binary"
    _binary_folder(root)
    # An untrained two-class model: it gets about half the test images wrong, so there are
    # mistakes to show. Saved the way a training run saves (hyper_parameters + state_dict).
    torch.manual_seed(0)
    module = ClassifierModule(
        model_name="cnn", num_classes=2, input_size=32, optimizer=ADAM, task="binary",
        class_names=["dark", "light"], preprocess=preprocess_spec(False, 32),
    )  # fmt: skip
    ckpt = tmp_path / "random.ckpt"
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "epoch": 0},
        ckpt,
    )
    overrides = [
        f"ckpt_path={ckpt}", "data=folder", f"data.root={root}", "trainer=cpu",
        "data.num_workers=0", "verbose=false", "explain=true", "mistakes=4",
    ]  # fmt: skip
    results = run_eval(compose_cfg(overrides, tmp_path / "eval", data_dir, config_name="eval"))
    art = results["artifacts"]
    assert results["num_mistakes"] > 0 and art["mistakes_png"] and art["cam_mean_png"]
    assert_png(Path(art["mistakes_png"]))
    assert_png(Path(art["cam_mean_png"]))
    with Image.open(art["mistakes_png"]) as img:
        assert img.height > img.width  # one row per mistake: taller than wide


# --------------------------------------------------------------------------- without the extra


def test_without_the_extra_the_error_says_how_to_install(monkeypatch, tmp_path, data_dir, caplog):
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum...` now raises ImportError
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ExplainUnavailableError, match=r"pip install 'fruitnet\[explain\]'"):
        explain.require()
    assert not explain.available()
    with pytest.raises(ImportError, match=r"fruitnet\[explain\]"):
        CamExplainer(nn.Sequential(nn.Conv2d(3, 2, 3)))
    # eval: explain=true stops, auto says so in one line and goes on without maps
    with pytest.raises(ExplainUnavailableError):
        explain.wanted(True)
    with caplog.at_level(logging.INFO, logger="fruitnet.explain"):
        assert explain.wanted("auto") is False
    assert INSTALL_HINT in caplog.text
    assert explain.wanted(False) is False
    with pytest.raises(ValueError, match="true, false or auto"):
        explain.wanted("sometimes")
    # predict explain=true: refused before any image is read
    from fruitnet.predict import run as run_predict

    overrides = [f"ckpt_path={tmp_path / 'none.ckpt'}", f"input={tmp_path}", "explain=true"]
    cfg = compose_cfg(overrides, tmp_path / "run", data_dir, config_name="predict")
    with pytest.raises(ExplainUnavailableError, match=r"pip install 'fruitnet\[explain\]'"):
        run_predict(cfg)
