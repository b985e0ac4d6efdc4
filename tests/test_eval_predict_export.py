"""eval / predict / export: one tiny checkpoint, trained once, through every entry point."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import shared_data_dir
from helpers import TRAINED_DATA, cli, compose_cfg, read_results, train
from omegaconf import DictConfig
from PIL import Image

from fruitnet import plots
from fruitnet.checkpoints import CheckpointError, load_classifier, load_network
from fruitnet.data import SyntheticDataModule
from fruitnet.data.transforms import preprocess_spec
from fruitnet.eval import run as run_eval
from fruitnet.eval_data import ClassNamesError
from fruitnet.export import load_exported, output_path, read_metadata
from fruitnet.export import run as run_export
from fruitnet.predict import PredictInputError, Predictor
from fruitnet.predict import run as run_predict

# The synthetic set of the training run (conftest.trained_cnn); eval must see the same one.
SYNTHETIC = TRAINED_DATA
EVAL_FAST = ["trainer=cpu", "data.num_workers=0", "verbose=false"]


def compose_entry(name: str, overrides: list[str], run_dir: Path, data_dir: Path) -> DictConfig:
    """Compose conf/<name>.yaml like the CLI does, with every path inside run_dir."""
    return compose_cfg(overrides, run_dir, data_dir, config_name=name)


def assert_png(path: str | Path, min_side: int = 300) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("L"))
    assert min(pixels.shape) >= min_side, pixels.shape
    assert pixels.std() > 5, f"{path} looks blank"
    return pixels.shape[1], pixels.shape[0]


@pytest.fixture(scope="module")
def trained(trained_cnn) -> SimpleNamespace:
    return trained_cnn


@pytest.fixture
def image_dir(trained, tmp_path) -> Path:
    """Three test images (one in a subfolder) plus files predict must skip."""
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    for i, src in enumerate(trained.test_paths[:2]):
        shutil.copy(src, root / f"img{i}.jpg")
    shutil.copy(trained.test_paths[-1], root / "more" / "img2.jpg")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "notes.txt").write_text("not a picture\n")
    return root


# --------------------------------------------------------------------------- eval


def test_eval_cli_reproduces_the_training_test_accuracy(trained, data_dir, tmp_path):
    out = tmp_path / "eval"
    proc = cli(
        "-m", "fruitnet.eval", f"ckpt_path={trained.ckpt}", *SYNTHETIC, *EVAL_FAST,
        f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(out)
    assert abs(results["test_acc"] - trained.results["test_acc"]) <= 1e-6
    assert 0.1 < results["test_acc"] <= 1.0
    # Eval's own record (fruitnet.record.EVAL_KEYS): the training run's numbers under `trained`
    assert (results["kind"], trained.results["kind"]) == ("eval", "train")
    assert results["trained"]["test_acc"] == trained.results["test_acc"]
    assert results["class_names"] == trained.results["class_names"]
    assert results["confusion_matrix"] == trained.results["confusion_matrix"]
    assert results["task_name"] == "eval" and results["data"] == "synthetic"

    with open(out / "per_class.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == trained.results["class_names"]
    assert sum(int(r["support"]) for r in rows) == results["num_test"] == 80
    for r in rows:
        assert 0.0 <= float(r["precision"]) <= 1.0 and 0.0 <= float(r["recall"]) <= 1.0
    assert_png(out / "confusion_matrix.png")
    if results["num_mistakes"]:
        assert_png(out / "mistakes.png", min_side=150)
        with open(out / "mistakes.csv", newline="") as fh:
            mistakes = list(csv.DictReader(fh))
        assert len(mistakes) == results["num_mistakes"]
        assert all(m["true"] != m["pred"] and Path(m["path"]).is_file() for m in mistakes)
        probs = [float(m["prob"]) for m in mistakes]
        assert probs == sorted(probs, reverse=True)


def test_eval_norm_follows_the_checkpoint(trained, data_dir, tmp_path, caplog):
    overrides = [f"ckpt_path={trained.ckpt}", *SYNTHETIC, *EVAL_FAST, "norm=true"]
    cfg = compose_entry("eval", overrides, tmp_path, data_dir)
    with caplog.at_level(logging.WARNING, logger="fruitnet.eval"):
        results = run_eval(cfg)
    assert "norm=True ignored" in caplog.text
    assert results["norm"] is False and results["input_size"] == 100
    assert abs(results["test_acc"] - trained.results["test_acc"]) <= 1e-6


def _jpeg(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), color).save(path)


def test_eval_refuses_a_dataset_with_other_classes(trained, data_dir, tmp_path):
    root = tmp_path / "other"
    for split in ("Training", "Test"):
        for i, name in enumerate(["Durian", "Synthetic Orange"]):
            for j in range(2):
                _jpeg(root / split / name / f"{j}.jpg", (200 * i, 100, 50 * j))
    overrides = [f"ckpt_path={trained.ckpt}", "data=folder", f"data.root={root}", *EVAL_FAST]
    cfg = compose_entry("eval", overrides, tmp_path / "run", data_dir)
    with pytest.raises(ClassNamesError, match="Durian") as err:
        run_eval(cfg)
    assert "Synthetic Apple Red" in str(err.value)


def test_eval_without_data_uses_the_recorded_training_data(trained, data_dir, tmp_path):
    cfg = compose_entry("eval", [f"ckpt_path={trained.ckpt}", *EVAL_FAST], tmp_path, data_dir)
    results = run_eval(cfg)
    assert results["data"] == "synthetic" and results["num_test"] == 80
    assert abs(results["test_acc"] - trained.results["test_acc"]) <= 1e-6


def _edited_checkpoint(trained, tmp_path: Path, edit) -> Path:
    """A copy of the trained checkpoint (beside its run's results.json), hparams edited."""
    ckpt = torch.load(trained.ckpt, weights_only=True)
    edit(ckpt["hyper_parameters"])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained.run_dir / "results.json", run / "results.json")
    torch.save(ckpt, run / "checkpoints" / "edited.ckpt")
    return run / "checkpoints" / "edited.ckpt"


def test_eval_says_when_the_training_data_is_gone(trained, data_dir, tmp_path):
    def moved(hp):
        node = hp["data_config"]["node"]
        node.update(_target_="fruitnet.data.ImageFolderDataModule", root=str(tmp_path / "gone"))

    ckpt = _edited_checkpoint(trained, tmp_path, moved)
    cfg = compose_entry("eval", [f"ckpt_path={ckpt}", *EVAL_FAST], tmp_path / "out", data_dir)
    with pytest.raises(ValueError, match="training data no longer exists: data=synthetic") as err:
        run_eval(cfg)
    assert str(tmp_path / "gone") in str(err.value) and "data.root=" in str(err.value)


def test_eval_of_an_older_checkpoint_asks_for_the_data_root_and_says_what_training_used(
    trained, data_dir, tmp_path
):
    ckpt = _edited_checkpoint(trained, tmp_path, lambda hp: hp.pop("data_config"))
    cfg = compose_entry("eval", [f"ckpt_path={ckpt}", *EVAL_FAST], tmp_path / "out", data_dir)
    with pytest.raises(ValueError, match="data.root is required") as err:
        run_eval(cfg)
    assert "used data=synthetic" in str(err.value)


@pytest.mark.parametrize("load", [load_classifier, load_network], ids=["module", "network"])
def test_a_broken_checkpoint_is_named(load, trained, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained.ckpt.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        load(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.ckpt is not a fruitnet checkpoint"):
        load(foreign)


# --------------------------------------------------------------------------- predict


def test_predict_feeds_the_network_what_the_datamodule_feeds(trained, data_dir):
    dm = SyntheticDataModule(
        root=data_dir / "synthetic", train_per_class=20, test_per_class=8, num_workers=0
    )
    dm.setup("test")
    predictor = Predictor(load_network(trained.ckpt))
    for i in (0, len(dm.test_set) - 1):
        image, _ = dm.test_set[i]
        mine = predictor.decode(dm.test_set.paths[i])
        assert torch.equal(mine, image)
        assert torch.equal(predictor.transform(mine), dm.batch_transform(image.unsqueeze(0)))


def test_predict_a_folder_one_row_per_image(trained, data_dir, image_dir, tmp_path, caplog):
    output = tmp_path / "preds.json"
    overrides = [f"ckpt_path={trained.ckpt}", f"input={image_dir}", "topk=3", f"output={output}"]
    cfg = compose_entry("predict", overrides, tmp_path / "run", data_dir)
    with caplog.at_level(logging.INFO, logger="fruitnet.predict"):
        rows = run_predict(cfg)
    assert "skipped 2 non-image file(s)" in caplog.text
    names = set(trained.results["class_names"])
    assert [Path(r["path"]).name for r in rows] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    for r in rows:
        probs = [p for _, p in r["topk"]]
        assert len(r["topk"]) == 3 and {c for c, _ in r["topk"]} <= names
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    on_disk = json.loads(output.read_text())
    assert [Path(r["path"]).name for r in on_disk] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert on_disk[0]["topk"][0]["class"] == rows[0]["topk"][0][0]


def test_predict_names_a_non_image_input(trained, data_dir, image_dir, tmp_path):
    for bad, message in [("notes.txt", "notes.txt is not a readable image"), ("nope", "not found")]:
        overrides = [f"ckpt_path={trained.ckpt}", f"input={image_dir / bad}"]
        cfg = compose_entry("predict", overrides, tmp_path / "run", data_dir)
        with pytest.raises(PredictInputError, match=message):
            run_predict(cfg)


def test_predict_cli_writes_preds_csv(trained, image_dir, tmp_path):
    out = tmp_path / "predict"
    proc = cli(
        "-m", "fruitnet.predict", f"ckpt_path={trained.ckpt}", f"input={image_dir}",
        "topk=2", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top-1" in proc.stdout and "img2.jpg" in proc.stdout
    with open(out / "preds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2"]
    assert all(r["class_1"] in trained.results["class_names"] for r in rows)


# --------------------------------------------------------------------------- export


def _check_roundtrip(path: Path, fmt: str, trained) -> None:
    meta = read_metadata(path)
    assert meta["class_names"] == trained.results["class_names"]
    assert meta["preprocess"]["size"] == 100 and meta["model_name"] == "cnn"
    assert {k: v for k, v in meta["input"].items() if k != "resize"} == {
        "name": "images", "dtype": "uint8", "layout": "NCHW", "channels": "RGB",
        "shape": ["N", 3, 100, 100], "range": [0, 255],
    }  # fmt: skip
    assert meta["input"]["resize"]["rule"] == "stretch" and "fruitnet" not in meta["input_contract"]
    predictor = Predictor(load_classifier(trained.ckpt))
    runner = load_exported(path, fmt)
    for paths in (trained.test_paths[:1], trained.test_paths[:5]):  # batch 1 and 5: dynamic N
        images = torch.stack([predictor.decode(p) for p in paths])
        logits, probs = runner(images.numpy())
        assert logits.shape == (len(paths), len(meta["class_names"]))
        np.testing.assert_allclose(probs, predictor.probs(images).numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "exported_program"])
def test_export_round_trips(fmt, trained, data_dir, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [onnx]/[dev] extras")
    cfg = compose_entry(
        "export",
        [f"ckpt_path={trained.ckpt}", f"format={fmt}", "latency_iters=5"],
        tmp_path,
        data_dir,
    )
    record = run_export(cfg)
    path = Path(record["output"])
    assert path.is_file() and record["file_mib"] > 0
    assert record["max_abs_diff_logits"] <= 1e-4 and record["max_abs_diff_probs"] <= 1e-4
    assert record["latency_ms_b1_pytorch"] > 0 and record["latency_ms_b1_exported"] > 0
    assert json.loads(Path(f"{path}.json").read_text())["output"] == str(path)
    _check_roundtrip(path, fmt, trained)


def test_export_output_suffix_follows_the_format(tmp_path):
    assert output_path(None, tmp_path, "exported_program") == tmp_path / "model.pt2"
    assert output_path("m.ts", tmp_path, "torchscript") == Path("m.ts")
    with pytest.raises(ValueError, match=r"format=exported_program must end in \.pt2"):
        output_path("model.onnx", tmp_path, "exported_program")
    with pytest.raises(ValueError, match="format must be one of"):
        output_path(None, tmp_path, "tflite")


def test_export_cli_torchscript(trained, tmp_path):
    output = tmp_path / "fruits.pt"
    proc = cli(
        "-m", "fruitnet.export", f"ckpt_path={trained.ckpt}", "format=torchscript",
        f"output={output}", "latency_iters=5", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "outputs match PyTorch" in proc.stdout + proc.stderr
    # The contract, in words, on stdout: input name, dtype, shape, layout, range, resize rule
    assert "input:  images, uint8 [N, 3, 100, 100], RGB, NCHW, values 0..255" in proc.stdout
    assert "stretch the whole image to 100 x 100" in proc.stdout and "bilinear" in proc.stdout
    _check_roundtrip(output, "torchscript", trained)


# --------------------------------------------------------------------------- figures


def test_confusion_helpers_small_and_large():
    cm = np.diag([5, 5, 5])
    cm[0, 2] = 3
    cm[1, 0] = 1
    names = ["a", "b", "c"]
    assert plots.top_confusions(cm, names) == [("a", "c", 3, 3 / 8), ("b", "a", 1, 1 / 6)]
    assert plots.most_confused_classes(cm, 2) == [0, 2]
    assert len(plots.confusion_matrix_figure(cm, names).axes) == 2  # matrix + colour bar
    big = np.eye(40, dtype=int) * 3
    big[5, 7] = 2
    fig = plots.confusion_matrix_figure(big, [f"class {i}" for i in range(40)])
    assert len(fig.axes) == 3  # most-confused matrix + colour bar + table


def test_eval_figures_with_95_real_classes(shared_data, tmp_path):
    root = shared_data / "fruits-360-small"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    data = ["data=fruits", f"data.root={root}", "data.max_samples_per_class=4"]
    results = train([*data, "trainer.max_epochs=1"], tmp_path / "train")
    assert results["num_classes"] == 95
    cfg = compose_entry(
        "eval",
        [f"ckpt_path={results['best_ckpt']}", *data, *EVAL_FAST],
        tmp_path / "eval",
        tmp_path,
    )
    ev = run_eval(cfg)
    assert ev["num_classes"] == 95
    assert abs(ev["test_acc"] - results["test_acc"]) <= 1e-6
    width, height = assert_png(ev["artifacts"]["confusion_matrix_png"], min_side=800)
    assert width > height  # the most-confused matrix plus the table beside it
    assert_png(ev["artifacts"]["mistakes_png"], min_side=150)


# --------------------------------------------------------------------------- what each one loads


def test_eval_caches_the_test_split_only(trained, data_dir, tmp_path):
    cfg = compose_entry(
        "eval", [f"ckpt_path={trained.ckpt}", *EVAL_FAST, "data.cache=true"], tmp_path, data_dir
    )
    results = run_eval(cfg)
    assert abs(results["test_acc"] - trained.results["test_acc"]) <= 1e-6
    # One decoded file, holding the 80 test images: none for train (144) or val (16)
    shapes = [np.load(p, mmap_mode="r").shape for p in (tmp_path / "cache").rglob("*.npy")]
    assert shapes == [(results["num_test"], 3, 100, 100)]


def test_predict_and_export_do_not_load_lightning():
    code = (
        "import sys, fruitnet.export; assert 'lightning.pytorch' not in sys.modules, 'export'; "
        "import fruitnet.predict; assert 'lightning.pytorch' not in sys.modules, 'predict'"
    )
    proc = cli("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_plain_network_is_the_lightning_module_s(trained):
    plain = Predictor(load_network(trained.ckpt))
    lightning = Predictor(load_classifier(trained.ckpt))
    assert type(plain.module).__name__ == "Classifier"
    images = torch.stack([plain.decode(p) for p in trained.test_paths[:8]])
    assert torch.equal(plain.probs(images), lightning.probs(images))
    assert plain.class_names == lightning.class_names == trained.results["class_names"]


def test_load_network_names_a_checkpoint_whose_weights_do_not_fit(trained, tmp_path):
    ckpt = torch.load(trained.ckpt, weights_only=True)
    ckpt["state_dict"].pop(next(k for k in ckpt["state_dict"] if k.startswith("net.")))
    torch.save(ckpt, tmp_path / "short.ckpt")
    with pytest.raises(CheckpointError, match=r"short.ckpt: weights do not fit the model"):
        load_network(tmp_path / "short.ckpt")


def test_predict_topk_above_the_class_count_says_so(trained, data_dir, image_dir, tmp_path, caplog):
    base = [f"ckpt_path={trained.ckpt}", f"input={image_dir}", f"output={tmp_path / 'p.csv'}"]
    cfg = compose_entry("predict", [*base, "topk=50"], tmp_path / "run", data_dir)
    with caplog.at_level(logging.INFO, logger="fruitnet.predict"):
        rows = run_predict(cfg)
    n = len(trained.results["class_names"])
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("topk")]
    assert said == [f"topk=50 is more than the model's {n} classes: showing all {n}"]
    assert [len(r["topk"]) for r in rows] == [n, n, n]
    cfg = compose_entry("predict", [*base, "topk=0"], tmp_path / "run0", data_dir)
    with pytest.raises(ValueError, match="topk must be a whole number >= 1, got 0"):
        run_predict(cfg)


def test_a_mistyped_predict_key_asks_did_you_mean(tmp_path):
    from fruitnet.config import check_keys

    check_keys(
        ["topk=2", "+extra=1", "~show", "hydra.run.dir=x", "paths.log_dir=y", "-m"], "predict"
    )
    proc = cli(
        "-m", "fruitnet.predict", "ckpt_path=x.ckpt", "input=y.jpg", "top_k=3",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "fruitnet: unknown key 'top_k' in 'top_k=3': did you mean topk?"
    )
    assert "+top_k" not in proc.stderr


# --------------------------------------------------------------------------- README's ONNX example

README = Path(__file__).resolve().parents[1] / "README.md"
# Blocked while the example runs: it must need onnxruntime, Pillow and numpy only.
ONLY_ONNX = (
    "import runpy, sys; sys.modules.update(dict.fromkeys(['torch', 'torchvision', 'fruitnet'])); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
# The example resizes with Pillow, fruitnet with torchvision: pixels differ by at most 1 of 255,
# probabilities by 1.2e-4 (trained CNN) and 2.3e-4 (the norm=true one below). Leaving out the
# JPEG draft step gave 3.1e-3; stretching instead of cropping 0.19; nearest-neighbour 0.03.
PROB_ATOL = 1e-3


def readme_onnx_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if "onnxruntime" in b]
    assert len(found) == 1, f"README.md has {len(found)} python blocks using onnxruntime, not 1"
    return found[0]


def _norm_true_checkpoint(path: Path) -> Path:
    """An untrained basic CNN under the norm=true pipeline (shorter side 256, centre crop 224),
    its last layer scaled up so that its probabilities move with the pixels."""
    from fruitnet.module import ClassifierModule

    torch.manual_seed(0)
    module = ClassifierModule(
        model_name="cnn", num_classes=3, input_size=224, class_names=["left", "mid", "right"],
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        preprocess=preprocess_spec(True),
    )  # fmt: skip
    with torch.no_grad():
        module.net.classifier.fc2.weight.mul_(10)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def _odd_images(root: Path) -> list[Path]:
    """A large non-square JPEG (decoded at a reduced scale) and a tall grayscale PNG."""
    root.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:500, 0:900]
    rgb = np.stack([x * 255 // 900, y * 255 // 500, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "wide.jpg", quality=90)
    gray = np.random.default_rng(0).integers(0, 256, (300, 120), dtype=np.uint8)
    Image.fromarray(gray, "L").save(root / "tall.png")
    return [root / "wide.jpg", root / "tall.png"]


def _printed(stdout: str) -> dict[str, list[tuple[str, float]]]:
    """The example's output: each path, then `  <prob> <class name>` lines."""
    rows: dict[str, list[tuple[str, float]]] = {}
    for line in stdout.splitlines():
        if not line.startswith("  "):
            rows[line] = []
            continue
        prob, name = line.strip().split(" ", 1)
        rows[list(rows)[-1]].append((name, float(prob)))
    return rows


def test_readme_onnx_example_agrees_with_predict(trained, data_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [onnx]/[dev] extras")
    images = [*trained.test_paths[:3], *_odd_images(tmp_path / "odd")]
    shared = shared_data_dir()
    if shared is not None:  # real photos: 100 px fruit, grayscale X-rays of varying shape
        images += sorted((shared / "fruits-360-sample" / "Test").glob("*/*.jpg"))[::97][:3]
        images += sorted((shared / "chest_xray-sample" / "test").glob("*/*.jpeg"))[::11][:4]
    script = tmp_path / "classify.py"
    script.write_text(readme_onnx_example())
    for ckpt in (trained.ckpt, _norm_true_checkpoint(tmp_path / "crop.ckpt")):
        onnx_path = tmp_path / f"{Path(ckpt).stem}.onnx"
        overrides = [f"ckpt_path={ckpt}", f"output={onnx_path}", "verify=false"]
        run_export(compose_entry("export", overrides, tmp_path / "export", data_dir))
        proc = cli("-c", ONLY_ONNX, str(script), str(onnx_path), *map(str, images))
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed = _printed(proc.stdout)
        assert list(printed) == [str(p) for p in images]
        predictor = Predictor(load_network(ckpt))
        probs = predictor.probs(torch.stack([predictor.decode(p) for p in images]))
        for path, ref in zip(images, probs.tolist(), strict=True):
            ranked = sorted(zip(predictor.class_names, ref, strict=True), key=lambda c: -c[1])
            shown = printed[str(path)]
            assert len(shown) == min(5, len(ranked))
            # The same top-1 class, unless predict's own top two are closer than the tolerance
            top_two_apart = ranked[0][1] - ranked[1][1] > PROB_ATOL
            assert shown[0][0] == ranked[0][0] or not top_two_apart, (path, shown, ranked[:3])
            for name, prob in shown:
                assert abs(prob - dict(ranked)[name]) <= PROB_ATOL, (path, name, prob, ranked)
