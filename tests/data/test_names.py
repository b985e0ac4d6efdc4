"""Class names from any keyboard: a folder name written decomposed (NFD, as macOS writes names) and
the same name written composed (NFC, as Linux and Windows tools write it) are one class, stored in
NFC everywhere (scan, checkpoint, predict output, results); two folders of one split that are one
name in NFC are refused, and a name that still matches nothing shows its near match."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import compose_cfg, read_results, train
from PIL import Image

from fruitnet.checkpoints import class_names_of
from fruitnet.data.scan import ClassMismatchError, DataConflictError, scan_dataset
from fruitnet.data.walk import class_name, name_difference, near_name
from fruitnet.predict import run as run_predict

CAFE = "Pomme Café"  # NFC: é is U+00E9
HANGUL = ("배", "사과", "포도")  # pear, apple, grape: syllables in NFC


def nfd(name: str) -> str:
    return unicodedata.normalize("NFD", name)


def is_nfc(name: str) -> bool:
    return unicodedata.is_normalized("NFC", name)


def make_split(root: Path, split: str, names: list[str], n: int, size: int = 16) -> None:
    for c, name in enumerate(names):
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            color = ((70 * c + 9 * i) % 256, (150 - 40 * c) % 256, (30 + 60 * c) % 256)
            Image.new("RGB", (size, size), color).save(d / f"{i}.jpg", quality=95)


def test_the_forms_differ_on_disk_and_nfc_is_one_name():
    assert nfd(CAFE) != CAFE and len(nfd(CAFE)) == len(CAFE) + 1
    assert nfd("사과") != "사과" and len(nfd("사과")) == 4  # 사 = ㅅ + ㅏ, 과 = ㄱ + ㅘ
    assert class_name(nfd(CAFE)) == CAFE and class_name(nfd("사과")) == "사과"


def test_a_training_class_in_nfc_and_a_test_class_in_nfd_map_to_one_class(tmp_path):
    root = tmp_path / "fruits"
    make_split(root, "Training", [CAFE, "Banana"], 3)
    make_split(root, "Test", [nfd(CAFE), "Banana"], 2)
    scan = scan_dataset(root, "fruits")
    assert scan.class_names == ["Banana", CAFE]
    assert all(is_nfc(n) for n in scan.class_names)
    cafe = scan.class_names.index(CAFE)
    test_labels = {p.parent.name: y for p, y in scan.test}
    assert test_labels == {nfd(CAFE): cafe, "Banana": 1 - cafe}  # paths stay as on disk
    # ... and the other way round: Training written on a Mac, Test on Linux
    shutil.rmtree(root)
    make_split(root, "Training", [nfd(CAFE), "Banana"], 3)
    make_split(root, "Test", [CAFE, "Banana"], 2)
    scan = scan_dataset(root, "fruits")
    assert scan.class_names == ["Banana", CAFE]
    assert sorted({y for _, y in scan.test}) == [0, 1]


def _both_forms_fit(tmp_path: Path) -> bool:
    """False on a disk that keeps one name per NFC form (macOS: APFS and HFS+)."""
    (tmp_path / "probe" / CAFE).mkdir(parents=True)
    try:
        (tmp_path / "probe" / nfd(CAFE)).mkdir()
    except FileExistsError:
        return False
    finally:
        shutil.rmtree(tmp_path / "probe")
    return True


def test_two_class_folders_equal_after_nfc_are_refused_naming_both(tmp_path):
    if not _both_forms_fit(tmp_path):
        pytest.skip("this file system keeps both forms of a name as one folder")
    root = tmp_path / "fruits"
    make_split(root, "Training", [CAFE, nfd(CAFE), "Banana"], 2)
    make_split(root, "Test", [CAFE, "Banana"], 1)
    with pytest.raises(DataConflictError, match="same name in two Unicode forms") as err:
        scan_dataset(root, "fruits")
    msg = str(err.value)
    assert str(root / "Training" / CAFE) in msg and str(root / "Training" / nfd(CAFE)) in msg
    assert "U+0301 COMBINING ACUTE ACCENT" in msg and "U+00E9" in msg


def test_a_name_in_another_unicode_form_shows_the_near_match_and_the_code_points(tmp_path):
    root = tmp_path / "fruits"
    nbsp = CAFE.replace(" ", "\u00a0")  # Option+Space on a Mac keyboard types a no-break space
    make_split(root, "Training", [CAFE, "Banana"], 2)
    make_split(root, "Test", [nbsp, "Banana"], 1)
    with pytest.raises(ClassMismatchError) as err:
        scan_dataset(root, "fruits")
    msg = str(err.value)
    assert f"did you mean {CAFE!r} (the same letters, in another Unicode form)?" in msg
    assert "character 6: U+00A0 NO-BREAK SPACE here, U+0020 SPACE in training" in msg


def test_near_names_and_their_differences():
    known = ["Banana", CAFE, "사과"]
    assert near_name("banana", known) == ("Banana", "in another case")
    assert near_name("Ｂａｎａｎａ", known)[1] == "the same letters, in another Unicode form"
    assert near_name("Bana\u200bna", known)[1] == "the same letters, in another Unicode form"
    assert near_name("Pomme Cafe", known) == (CAFE, "a near spelling")
    assert near_name("Durian", known) is None
    assert name_difference("Pomme Cafe", CAFE) == (
        "character 10: U+0065 LATIN SMALL LETTER E here, "
        "U+00E9 LATIN SMALL LETTER E WITH ACUTE there"
    )


def test_an_older_checkpoint_with_nfd_names_is_read_in_nfc():
    module = SimpleNamespace(hparams={"class_names": [nfd(CAFE), nfd("사과")], "num_classes": 2})
    assert class_names_of(module) == [CAFE, "사과"]


@pytest.fixture(scope="module")
def hangul_run(tmp_path_factory) -> SimpleNamespace:
    """A dataset made on a Mac (every name NFD), trained for one epoch."""
    base = tmp_path_factory.mktemp("hangul")
    root = base / "과일"
    make_split(root, "Training", [nfd(n) for n in HANGUL], 6)
    make_split(root, "Test", [nfd(n) for n in HANGUL], 2)
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as mp:  # the autouse isolation is function-scoped
        mp.setenv("FRUITNET_OFFLINE", "1")
        results = train(
            # Hydra's override grammar takes letters beyond ASCII only in quotes
            ["data=folder", f"data.root='{root}'", "data.image_size=16", "data.batch_size=4",
             "trainer.max_epochs=1", "data.cache=false"],
            run_dir,
        )  # fmt: skip
    return SimpleNamespace(root=root, run_dir=run_dir, results=results)


def test_a_hangul_dataset_made_on_macos_trains_and_reports_in_nfc(hangul_run):
    results = read_results(hangul_run.run_dir)
    assert results["class_names"] == sorted(HANGUL)
    assert all(is_nfc(n) for n in results["class_names"])
    assert sorted(results["per_class_acc"]) == sorted(HANGUL)
    # the checkpoint stores the NFC names
    ckpt = torch.load(hangul_run.results["best_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["class_names"] == sorted(HANGUL)
    # ... and the written results.json holds them as such, not as escapes of NFD jamo
    text = (hangul_run.run_dir / "results.json").read_text(encoding="utf-8")
    assert nfd("사과") not in text and json.dumps(nfd("사과"))[1:-1] not in text


def test_a_hangul_model_predicts_in_nfc(hangul_run, tmp_path):
    output = tmp_path / "preds.json"
    images = hangul_run.root / "Test" / nfd("사과")
    cfg = compose_cfg(
        [f"ckpt_path={hangul_run.results['best_ckpt']}", f"input='{images}'", "topk=3",
         f"output={output}"],
        tmp_path / "run",
        config_name="predict",
    )  # fmt: skip
    rows = run_predict(cfg)
    assert len(rows) == 2
    for row in rows:
        assert sorted(name for name, _ in row["topk"]) == sorted(HANGUL)
    on_disk = json.loads(output.read_text(encoding="utf-8"))
    assert {entry["class"] for row in on_disk for entry in row["topk"]} == set(HANGUL)
