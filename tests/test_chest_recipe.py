"""Issue 27, the chest X-ray recipe: the decision threshold chosen on validation (saved in the
checkpoint, used by test, eval and predict), the Grad-CAM central-mass share, the validation
warning, the grouped validation split, the crop_erase augmentation and experiment=best_chest."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import compose_cfg, read_results, train
from torchmetrics.functional.classification import multiclass_confusion_matrix

from fruitnet.checkpoints import classifier_from_checkpoint, decide, load_checkpoint, load_network
from fruitnet.data.scan import carve_val
from fruitnet.data.transforms import BatchTransform
from fruitnet.explain.focus import (
    ShareRecorder,
    central_share,
    centre_weights,
    gradient_outside_share,
    summarize,
    twice_differentiable,
)
from fruitnet.models import create_model
from fruitnet.module import choose_threshold
from fruitnet.predict import Predictor
from fruitnet.record import VAL_GAP_WARN, val_check

FIXTURES = Path(__file__).parent / "fixtures"
# A two-class synthetic set: small enough for seconds, big enough for a validation split with
# both classes (10 % of 2 x 30) and 2 x 10 test images.
BINARY = [
    "data=synthetic",
    "data.num_classes=2",
    "data.train_per_class=30",
    "data.test_per_class=10",
    "data.image_size=32",
    "data.batch_size=16",
]


# --------------------------------------------------------------------------- the threshold


def test_choose_threshold_maximises_balanced_accuracy_and_stays_near_argmax():
    # Every PNEUMONIA (1) above 0.7, every NORMAL below 0.6: argmax calls two NORMALs wrong
    probs = torch.tensor([0.1, 0.3, 0.55, 0.6, 0.8, 0.9, 0.95])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    t = choose_threshold(probs, labels)
    assert 0.6 < t < 0.8 and t == pytest.approx(0.7)
    assert decide(torch.stack([1 - probs, probs], -1), t).tolist() == labels.tolist()
    # Separated at 0.5 already: keeps a cut nearest 0.5, so the calls stay argmax's
    sep = choose_threshold(torch.tensor([0.2, 0.45, 0.52, 0.9]), torch.tensor([0, 0, 1, 1]))
    assert 0.45 < sep < 0.52
    assert choose_threshold(torch.tensor([0.2, 0.7]), torch.tensor([1, 1])) is None


def test_decide_is_argmax_without_a_threshold_and_for_many_classes():
    probs = torch.tensor([[0.3, 0.7], [0.6, 0.4]])
    assert decide(probs, None).tolist() == [1, 0]
    assert decide(probs, 0.5).tolist() == [1, 0]
    assert decide(probs, 0.75).tolist() == [0, 0]
    three = torch.tensor([[0.2, 0.3, 0.5]])
    assert decide(three, 0.9).tolist() == [2]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> SimpleNamespace:
    """A two-class training run with model.threshold=auto (a few epochs on tiny images)."""
    run_dir = tmp_path_factory.mktemp("binary_run")
    data_dir = tmp_path_factory.mktemp("binary_data")
    # fp32: the cut is then the same whether the val probabilities come from the run or below
    overrides = [*BINARY, "model.threshold=auto", "trainer.max_epochs=3", "trainer.precision=32"]
    results = train(overrides, run_dir, data_dir)
    return SimpleNamespace(
        run_dir=run_dir, data_dir=data_dir, results=results, ckpt=Path(results["best_ckpt"])
    )


def _split_images(run: SimpleNamespace, split: str) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The run's own val or test images (uint8) and labels, through its datamodule."""
    from fruitnet.assemble import build_datamodule

    cfg = compose_cfg(BINARY, run.run_dir / "rebuild", run.data_dir)
    dm = build_datamodule(cfg.data, "fit" if split == "val" else "test")
    dataset = getattr(dm, f"{split}_set")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    return images, labels, list(dataset.paths)


def test_threshold_chosen_on_validation_is_saved_in_the_checkpoint(binary_run):
    ckpt = load_checkpoint(binary_run.ckpt)
    saved = ckpt["decision_threshold"]
    assert isinstance(saved, float) and 0.0 < saved < 1.0
    # The cut is the one the checkpoint's own weights get on the validation images
    images, labels, _ = _split_images(binary_run, "val")
    probs = Predictor(load_network(binary_run.ckpt)).probs(images)
    assert saved == pytest.approx(choose_threshold(probs[:, 1], labels), abs=1e-4)
    assert binary_run.results["threshold"] == pytest.approx(saved)
    assert load_network(binary_run.ckpt).threshold == pytest.approx(saved)
    assert classifier_from_checkpoint(ckpt, binary_run.ckpt).threshold == pytest.approx(saved)
    # weights_only loading still works: the threshold is a plain float
    assert torch.load(binary_run.ckpt, weights_only=True)["decision_threshold"] == saved


@pytest.fixture(scope="module")
def flipping_ckpt(binary_run, tmp_path_factory) -> SimpleNamespace:
    """The run's checkpoint with a threshold that calls at least one test image differently
    from argmax: just past the test probability nearest 0.5."""
    images, labels, paths = _split_images(binary_run, "test")
    probs = Predictor(load_network(binary_run.ckpt)).probs(images)
    p1 = probs[:, 1]
    q = float(p1[(p1 - 0.5).abs().argmin()])
    assert q != 0.5
    t = q + 1e-4 if q > 0.5 else q - 1e-4
    ckpt = load_checkpoint(binary_run.ckpt)
    ckpt["decision_threshold"] = t
    path = tmp_path_factory.mktemp("flip") / "flip.ckpt"
    torch.save(ckpt, path)
    preds = decide(probs, t)
    assert (preds != probs.argmax(-1)).any()
    return SimpleNamespace(path=path, t=t, probs=probs, preds=preds, labels=labels, paths=paths)


def test_eval_uses_the_checkpoints_threshold(binary_run, flipping_ckpt, tmp_path):
    from fruitnet.eval import run as run_eval

    overrides = [f"ckpt_path={flipping_ckpt.path}", *BINARY, "trainer=cpu", "data.num_workers=0",
                 "verbose=false", "explain=false"]  # fmt: skip
    results = run_eval(compose_cfg(overrides, tmp_path, binary_run.data_dir, "eval"))
    labels, preds = flipping_ckpt.labels, flipping_ckpt.preds
    assert results["threshold"] == pytest.approx(flipping_ckpt.t)
    expected = multiclass_confusion_matrix(preds, labels, num_classes=2).tolist()
    argmax = multiclass_confusion_matrix(flipping_ckpt.probs.argmax(-1), labels, 2).tolist()
    assert results["confusion_matrix"] == expected != argmax
    assert results["test_acc"] == pytest.approx(float((preds == labels).float().mean()))
    assert results["num_mistakes"] == int((preds != labels).sum())


def test_predict_uses_the_checkpoints_threshold(binary_run, flipping_ckpt):
    predictor = Predictor(load_network(flipping_ckpt.path))
    rows = predictor.predict([Path(p) for p in flipping_ckpt.paths], topk=2)
    names = predictor.class_names
    assert [r["topk"][0][0] for r in rows] == [names[int(i)] for i in flipping_ckpt.preds]
    # The rank-1 probability is that of the class the threshold picked, not always the larger
    flipped = (flipping_ckpt.preds != flipping_ckpt.probs.argmax(-1)).nonzero().flatten()
    i = int(flipped[0])
    assert rows[i]["topk"][0][1] < rows[i]["topk"][1][1]


def test_a_checkpoint_without_a_threshold_decides_by_argmax():
    legacy = FIXTURES / "legacy_cnn.ckpt"
    assert load_network(legacy).threshold is None
    assert classifier_from_checkpoint(load_checkpoint(legacy), legacy).threshold is None


def test_model_threshold_rejects_a_value_outside_0_1(tmp_path):
    with pytest.raises(ValueError, match="model.threshold"):
        train([*BINARY, "model.threshold=1.5", "++trainer.fast_dev_run=true"], tmp_path)


# --------------------------------------------------------------------------- central mass


def test_central_share_is_one_inside_the_centre_and_the_area_share_for_a_uniform_map():
    m = torch.zeros(64, 64)
    m[16:48, 16:48] = torch.rand(32, 32) + 0.1
    assert float(central_share(m)) == pytest.approx(1.0)
    assert float(central_share(torch.ones(64, 64))) == pytest.approx(0.25)
    # An odd side: the box's area is exact (pixel fractions), so a uniform map still gives 0.25
    assert float(central_share(torch.full((37, 53), 3.0))) == pytest.approx(0.25)
    assert float(centre_weights(37, 53).sum()) == pytest.approx(0.25 * 37 * 53)
    border = torch.ones(64, 64)
    border[16:48, 16:48] = 0
    assert float(central_share(border)) == 0.0


def test_central_share_counts_evidence_either_way():
    signed = torch.zeros(3, 40, 40)
    signed[0, 10:30, 10:30] = 2.0  # for the class, in the centre
    signed[1] = -1.0  # against it, everywhere: spread evenly
    shares = central_share(signed)
    assert shares[0] == pytest.approx(1.0) and shares[1] == pytest.approx(0.25)
    assert math.isnan(float(shares[2]))  # no evidence at all: no share
    nan_edges = torch.ones(40, 40)
    nan_edges[:, :5] = math.nan  # outside a norm=true crop
    assert 0.25 < float(central_share(nan_edges)) < 0.3


def test_gradient_outside_share_is_where_the_input_moves_the_output():
    def share(weights: torch.Tensor) -> float:
        x = torch.rand(4, 3, 32, 32, requires_grad=True)
        score = (x * weights).sum((1, 2, 3))
        logits = torch.stack([score, torch.zeros_like(score)], 1)
        return float(gradient_outside_share(x, logits).detach())

    centre = torch.zeros(32, 32)
    centre[8:24, 8:24] = 1.0
    assert share(centre) == pytest.approx(0.0, abs=1e-6)
    assert share(1 - centre) == pytest.approx(1.0)
    assert share(torch.ones(32, 32)) == pytest.approx(0.75)
    assert share(torch.ones(32, 32)) == pytest.approx(float(1 - centre_weights(32, 32).mean()))


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_focus_penalty_adds_to_the_training_loss_only_and_trains_the_net():
    from fruitnet.module import ClassifierModule

    def module(**kwargs) -> ClassifierModule:
        torch.manual_seed(0)
        return ClassifierModule(
            model_name="cnn", num_classes=2, input_size=32, task="binary",
            optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}, **kwargs,
        )  # fmt: skip

    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 0, 1, 1, 0])
    plain, focused = module(), module(focus_penalty=2.0, focus_images=4)
    plain.train(), focused.train()
    torch.manual_seed(1)  # the same dropout masks in both nets' first forward
    base, _, _ = plain._step((x, y))
    torch.manual_seed(1)
    loss, _, _ = focused._step((x, y))
    extra = float((loss - base).detach())  # + 2 x a share in (0, 1]
    assert 0.0 < extra <= 2.0 + 1e-4
    loss.backward()
    base.backward()
    first = "net.features.conv1.weight"
    grads = {n: p.grad for n, p in focused.named_parameters()}
    assert not torch.allclose(grads[first], dict(plain.named_parameters())[first].grad)
    plain.eval(), focused.eval()
    with torch.no_grad():
        torch.testing.assert_close(focused._step((x, y))[0], plain._step((x, y))[0])
    bad_values = [{"focus_penalty": -1.0}, {"focus_fraction": 0.0}, {"focus_fraction": 1.5}]
    for bad in [*bad_values, {"focus_images": 0}]:
        with pytest.raises(ValueError, match="model.focus_"):
            module(**bad)


def test_focus_penalty_runs_through_hydra_and_travels_with_the_checkpoint(tmp_path):
    from fruitnet.report import read_metrics

    results = train([*BINARY, "model.focus_penalty=0.5", "trainer.max_epochs=2"], tmp_path)
    hparams = load_checkpoint(results["best_ckpt"])["hyper_parameters"]
    assert (hparams["focus_penalty"], hparams["focus_fraction"]) == (0.5, 0.5)
    shares = [r["train/grad_outside"] for r in read_metrics(tmp_path) if "train/grad_outside" in r]
    assert len(shares) == 2 and all(0.0 < v < 1.0 for v in shares)


def test_focus_penalty_trains_mobilenet_v3_whose_hardsigmoid_has_no_second_derivative():
    torch.manual_seed(0)
    net = create_model("torchvision", num_classes=2, input_size=32, arch="mobilenet_v3_small")
    x = torch.rand(2, 3, 32, 32, requires_grad=True)

    def penalty_backward() -> None:
        gradient_outside_share(x, net(x)).backward()

    net.train()
    with pytest.raises(RuntimeError, match="hardsigmoid"):  # torch's own error, unswapped
        penalty_backward()
    net.eval()
    before = net(x).detach()
    assert twice_differentiable(net) is net
    assert not any(isinstance(m, torch.nn.Hardsigmoid) for m in net.modules())
    torch.testing.assert_close(net(x).detach(), before)  # the same function
    net.train()
    penalty_backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_share_recorder_files_each_maps_share_under_its_class():
    class Fake:
        input_size = 8

        def maps(self, images, targets=None, **kwargs):
            out = torch.zeros(images.shape[0], 8, 8)
            out[:, 2:6, 2:6] = 1.0  # all in the centre
            out[torch.as_tensor(targets).expand(images.shape[0]) == 1] = 1.0  # uniform
            return out

    rec = ShareRecorder(Fake(), 2)
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    rec.maps(images, 0)
    rec.maps(images[:2], [1, 1])
    summary = summarize(rec.per_class(), ["NORMAL", "PNEUMONIA"])
    assert summary["per_class"] == {"NORMAL": pytest.approx(1.0), "PNEUMONIA": pytest.approx(0.25)}
    assert summary["overall"] == pytest.approx((3 * 1.0 + 2 * 0.25) / 5)
    assert summary["images"] == 5


def test_eval_reports_the_central_share_and_draws_it(binary_run, tmp_path):
    pytest.importorskip("captum")
    from fruitnet.eval import run as run_eval

    overrides = [f"ckpt_path={binary_run.ckpt}", *BINARY, "trainer=cpu", "data.num_workers=0",
                 "verbose=false", "explain=true"]  # fmt: skip
    results = run_eval(compose_cfg(overrides, tmp_path, binary_run.data_dir, "eval"))
    share = results["cam_central_share"]
    per_class = results["cam_central_share_per_class"]
    assert set(per_class) == set(results["class_names"])
    values = [v for v in per_class.values() if v is not None]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    assert min(values) - 1e-9 <= share <= max(values) + 1e-9
    assert Path(results["artifacts"]["cam_mean_png"]).is_file()
    assert results["val_warning"] in (True, False)


# --------------------------------------------------------------------------- validation warning


def test_val_check_flags_validation_far_above_test(caplog):
    with caplog.at_level(logging.WARNING, logger="fruitnet.record"):
        far = val_check(0.971, 0.817)
    assert far["val_warning"] is True and far["val_test_gap"] == pytest.approx(0.154)
    assert len(caplog.records) == 1 and "does not look like the test data" in caplog.text
    caplog.clear()
    near = val_check(0.85, 0.85 - VAL_GAP_WARN + 0.01)
    assert near["val_warning"] is False and not caplog.records
    assert val_check(None, 0.8) == {"val_test_gap": None, "val_warning": None}


def test_training_results_carry_the_validation_gap(binary_run):
    r = binary_run.results
    assert r["val_test_gap"] == pytest.approx(r["val_acc"] - r["test_acc"])
    assert r["val_warning"] is (r["val_test_gap"] > VAL_GAP_WARN)


# --------------------------------------------------------------------------- grouped val


def _patients(n_pneumonia: int, n_normal: int, per_patient: int = 3):
    samples = [
        (Path(f"PNEUMONIA/person{p}_bacteria_{k}.jpeg"), 1)
        for p in range(n_pneumonia) for k in range(per_patient)
    ] + [
        (Path(f"NORMAL/IM-{p:04d}-{k:04d}.jpeg"), 0)
        for p in range(n_normal) for k in range(per_patient)
    ]  # fmt: skip
    return samples


def test_carve_val_by_patient_keeps_each_patient_on_one_side():
    samples = _patients(20, 20)
    train_s, val_s = carve_val(samples, 0.2, seed=3, group=r"person\d+|IM-\d+")
    assert len(train_s) + len(val_s) == len(samples)

    def patient(p: Path) -> str:
        return p.name.split("_")[0] if p.name.startswith("person") else p.name[:7]

    assert not {patient(p) for p, _ in train_s} & {patient(p) for p, _ in val_s}
    for c in (0, 1):  # about 20 % of each class, whole patients
        n_val = sum(1 for _, y in val_s if y == c)
        assert 6 <= n_val <= 12 and n_val % 3 == 0
    # Image by image (no group) the same patients land on both sides
    plain_train, plain_val = carve_val(samples, 0.2, seed=3)
    assert {patient(p) for p, _ in plain_train} & {patient(p) for p, _ in plain_val}
    with pytest.raises(ValueError, match="val_group"):
        carve_val(samples, 0.2, group="person(")


def test_datamodule_carves_val_by_group(tmp_path):
    from PIL import Image

    from fruitnet.data import ImageFolderDataModule

    for split, n in (("train", 8), ("test", 2)):
        for cls in ("NORMAL", "PNEUMONIA"):
            for p in range(n):
                for k in range(2):
                    path = tmp_path / split / cls / f"person{p}{cls[0]}_x_{k}.jpeg"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (16, 16), (40 * p, 0, 0)).save(path)
    dm = ImageFolderDataModule(
        root=tmp_path, image_size=16, val_fraction=0.25, val_group=r"person\d+[NP]",
        num_workers=0, cache=False,
    )  # fmt: skip
    dm.setup("fit")
    group = lambda p: p.name.split("_")[0]  # noqa: E731
    train_groups = {group(p) for p in dm.train_set.paths}
    val_groups = {group(p) for p in dm.val_set.paths}
    assert val_groups and not train_groups & val_groups
    assert dm.num_val == 8 and dm.num_train == 24


# --------------------------------------------------------------------------- the recipe


def test_crop_erase_changes_training_batches_only_and_per_sample():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    x[:] = x[:1]  # six copies of one image
    t = BatchTransform(augment="crop_erase")
    out = t(x, train=True)
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) == 6  # drawn per sample
    assert torch.equal(t(x, train=False), BatchTransform()(x))  # eval: untouched
    assert BatchTransform(augment="basic")(x, train=False).shape == out.shape


def test_sharpness_draws_per_image_between_smoothed_and_sharpened():
    import torchvision.transforms.v2.functional as F

    from fruitnet.data.transforms import adjust_sharpness

    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 24, 24), dtype=torch.uint8)
    x[:] = x[:1]
    plain = BatchTransform(augment="crop_erase", erase_p=0.0, jitter=0.0, crop_side=(1.0, 1.0))
    plain.max_rotate = 0.0
    t = BatchTransform(augment="crop_erase", erase_p=0.0, jitter=0.0, crop_side=(1.0, 1.0),
                       sharpness=1.0)  # fmt: skip
    t.max_rotate = 0.0
    base, out = plain(x, train=True), t(x, train=True)

    def rough(a: torch.Tensor) -> torch.Tensor:  # mean |vertical step| inside the frame
        return a[..., 1:-1, 1:-1].diff(dim=-2).abs().mean((1, 2, 3))

    ratio = rough(out) / rough(base)
    assert 0.3 < ratio.min() < 0.7 and 1.2 < ratio.max() < 1.6  # smoothed ... sharpened
    # One factor per image, each as torchvision's adjust_sharpness gives it
    for factor in (0.0, 0.5, 2.0):
        got = adjust_sharpness(base[:2], torch.tensor([factor, 1.0]))
        assert torch.allclose(got[:1], F.adjust_sharpness(base[:1], factor), atol=1e-6)
        assert torch.allclose(got[1], base[0])  # factor 1: as it was
    assert torch.equal(t(x, train=False), plain(x, train=False))  # eval: untouched
    with pytest.raises(ValueError, match="data.sharpness"):
        BatchTransform(sharpness=0.5)  # augment=none
    with pytest.raises(ValueError, match="data.sharpness"):
        BatchTransform(augment="basic", sharpness=1.5)
    with pytest.raises(ValueError, match="data.sharpness must be a number"):
        BatchTransform(augment="basic", sharpness="high")


def test_best_chest_composes_and_trains_with_fast_dev_run(tmp_path):
    cfg = compose_cfg(["experiment=best_chest"], tmp_path)
    assert cfg.hydra.runtime.choices.data == "chest_xray"
    assert cfg.model.threshold == "auto" and cfg.data.augment == "crop_erase"
    assert cfg.model.kwargs.input_norm == "none"  # tried, not kept (bench/RECIPES.md)
    assert cfg.hydra.runtime.choices.scheduler == "onecycle_time"
    results = train(["experiment=best_chest", *BINARY, "++trainer.fast_dev_run=true"], tmp_path)
    assert results["experiment"] == "best_chest" and results["task"] == "binary"
    assert results["input_size"] == 32
    assert read_results(tmp_path)["threshold"] is not None


# --------------------------------------------------------------------------- centre crop, pooled head


def test_crop_fraction_keeps_the_centre_and_maps_back_onto_it(tmp_path):
    from PIL import Image

    from fruitnet.data import ImageFolderDataModule
    from fruitnet.data.transforms import preprocess_spec
    from fruitnet.explain.geometry import input_region, to_image_geometry

    # A dark 40 x 40 centre on a white 64 x 64 film: the central half (32 x 32) is all dark
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            for k in range(4):
                img = Image.new("RGB", (64, 64), (255, 255, 255))
                img.paste((10 * k, 10 * k, 10 * k), (12, 12, 52, 52))
                path = tmp_path / split / cls / f"{cls}_{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path)
    common = dict(root=tmp_path, image_size=16, val_fraction=0.25, num_workers=0, cache=False)
    cropped = ImageFolderDataModule(crop_fraction=0.5, **common)
    cropped.setup("fit")
    assert cropped.preprocess["resize"] == 32 and cropped.preprocess["crop"] == 16
    assert cropped.preprocess["mean"] == [0.0] * 3 and cropped.preprocess["std"] == [1.0] * 3
    images = torch.stack([cropped.train_set[i][0] for i in range(len(cropped.train_set))])
    assert images.shape[-2:] == (16, 16) and int(images.max()) <= 40  # no white border left
    whole = ImageFolderDataModule(**common)
    whole.setup("fit")
    assert int(whole.train_set[0][0].max()) > 200  # squashed: the border is still there
    # Grad-CAM overlays: the map lands on the central 32 x 32 of the 64 x 64 image, NaN outside
    assert input_region(64, 64, cropped.preprocess) == (16.0, 16.0, 32.0, 32.0)
    on_image = to_image_geometry(torch.ones(16, 16), 64, 64, cropped.preprocess)
    assert math.isnan(on_image[0, 0]) and math.isnan(on_image[15, 32]) and on_image[32, 32] == 1
    assert not math.isnan(on_image[16, 16]) and math.isnan(on_image[63, 63])
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocess_spec(False, 16, 1.5)
    with pytest.raises(ValueError, match="norm=false"):
        preprocess_spec(True, None, 0.8)


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory) -> SimpleNamespace:
    """A two-class run with the two chest options: a centre crop and the pooled CNN head."""
    run_dir = tmp_path_factory.mktemp("cropped_run")
    data_dir = tmp_path_factory.mktemp("cropped_data")
    overrides = [*BINARY, "data.crop_fraction=0.5", "model.kwargs.head=avg",
                 "trainer.max_epochs=2", "trainer.precision=32"]  # fmt: skip
    results = train(overrides, run_dir, data_dir)
    return SimpleNamespace(
        run_dir=run_dir, data_dir=data_dir, results=results, ckpt=Path(results["best_ckpt"])
    )


def test_pooled_head_trains_and_rebuilds_from_the_checkpoint(cropped_run):
    net = load_network(cropped_run.ckpt)
    assert net.hparams["model_kwargs"]["head"] == "avg"
    assert isinstance(net.net.classifier.pool, torch.nn.AdaptiveAvgPool2d)
    assert net.net.classifier.fc1.in_features == 128
    assert cropped_run.results["params"] < 200_000  # no 5 M-weight flatten FC
    assert 0.0 <= cropped_run.results["test_acc"] <= 1.0


def test_crop_fraction_travels_into_predict_and_eval(cropped_run, tmp_path):
    from fruitnet.data.io import load_image
    from fruitnet.eval import run as run_eval

    pre = load_checkpoint(cropped_run.ckpt)["hyper_parameters"]["preprocess"]
    assert (pre["resize"], pre["crop"], pre["size"]) == (64, 32, 32)
    images, labels, paths = _split_images(cropped_run, "test")  # the config's own (uncropped)
    predictor = Predictor(load_network(cropped_run.ckpt))
    decoded = torch.stack([predictor.decode(Path(p)) for p in paths])
    expected = torch.stack([load_image(p, resize=64, crop=32, size=32) for p in paths])
    assert torch.equal(decoded, expected) and not torch.equal(decoded, images)
    preds = decide(predictor.probs(decoded), predictor.threshold)
    # eval without data.crop_fraction on its command line: the checkpoint's crop still applies
    overrides = [f"ckpt_path={cropped_run.ckpt}", *BINARY, "trainer=cpu", "data.num_workers=0",
                 "verbose=false", "explain=false"]  # fmt: skip
    results = run_eval(compose_cfg(overrides, tmp_path, cropped_run.data_dir, "eval"))
    assert results["preprocess"]["crop"] == 32 and results["norm"] is False
    assert results["confusion_matrix"] == multiclass_confusion_matrix(preds, labels, 2).tolist()


@pytest.mark.parametrize(
    ("input_norm", "module"), [("image", "standardize"), ("equalize", "equalize")]
)
def test_per_image_input_norm_travels_into_predict_and_export(input_norm, module, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [onnx]/[dev] extras")
    from fruitnet.export import load_exported
    from fruitnet.export import run as run_export

    overrides = [*BINARY, f"model.kwargs.input_norm={input_norm}", "trainer.max_epochs=1",
                 "trainer.precision=32"]  # fmt: skip
    results = train(overrides, tmp_path / "run", tmp_path / "data")
    net = load_network(Path(results["best_ckpt"]))
    assert hasattr(net.net.features, module)
    cfg = compose_cfg([f"ckpt_path={results['best_ckpt']}", "format=onnx", "latency_iters=2",
                       f"output={tmp_path / 'chest.onnx'}"], tmp_path / "export", None, "export")  # fmt: skip
    record = run_export(cfg)
    assert record["max_abs_diff_probs"] <= 1e-4
    # The exported graph normalises too: a darker, flatter copy of a film gets (nearly) the same
    # logits, which the same weights without the normalisation do not give it
    film = torch.randint(40, 200, (1, 3, 32, 32), dtype=torch.uint8)
    flat = ((film.float() - 40) * 0.5 + 20).round().to(torch.uint8)
    pair = torch.cat([film, flat])
    logits, _ = load_exported(Path(record["output"]), "onnx")(pair.numpy())
    plain = create_model("cnn", num_classes=2, input_size=32).eval()
    plain.load_state_dict(net.net.state_dict())
    with torch.no_grad():
        raw = plain(pair.float() / 255)
    moved = float((raw[0] - raw[1]).abs().max())
    assert float(abs(logits[0] - logits[1]).max()) < 0.1 * moved
    assert torch.allclose(torch.from_numpy(logits[:1]), net(pair[:1].float() / 255), atol=1e-4)


def test_instance_norm_travels_into_export(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [onnx]/[dev] extras")
    from fruitnet.export import load_exported
    from fruitnet.export import run as run_export

    overrides = [*BINARY, "model.kwargs.instance_norm=2", "trainer.max_epochs=1",
                 "trainer.precision=32"]  # fmt: skip
    results = train(overrides, tmp_path / "run", tmp_path / "data")
    net = load_network(Path(results["best_ckpt"]))
    assert isinstance(net.net.features.norm2, torch.nn.InstanceNorm2d)
    cfg = compose_cfg([f"ckpt_path={results['best_ckpt']}", "format=onnx", "latency_iters=2",
                       f"output={tmp_path / 'chest.onnx'}"], tmp_path / "export", None, "export")  # fmt: skip
    record = run_export(cfg)
    assert record["max_abs_diff_probs"] <= 1e-4
    # The exported graph normalises each image by its own statistics: the same film at half the
    # contrast (every pixel value halved exactly) gets the same logits
    film = torch.randint(40, 250, (1, 3, 32, 32), dtype=torch.uint8)
    pair = torch.cat([film, (film // 2) * 2, film // 2])
    logits, _ = load_exported(Path(record["output"]), "onnx")(pair.numpy())
    assert float(abs(logits[1] - logits[2]).max()) < 1e-3
    assert torch.allclose(torch.from_numpy(logits[:1]), net(pair[:1].float() / 255), atol=1e-4)
