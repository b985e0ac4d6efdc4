"""fruitnet.data.download: offline behaviour, no leaked credentials, safe extraction, data root."""

from __future__ import annotations

import io
import json
import socket
import stat
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from fruitnet.data import download as dl
from fruitnet.data.download import main
from fruitnet.data.extract import UnsafeArchiveError, safe_extract
from fruitnet.data.layout import find_data_root, verify_data_root

SECRET = "fake-kaggle-key-0123456789abcdef"


def _jpeg_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def _chest_members(prefix: str) -> dict[str, bytes]:
    out = {}
    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            for k in range(2):
                out[f"{prefix}{split}/{cls}/person{k}_{split}.jpeg"] = JPEG
    return out


def _fruit_members(
    prefix: str, classes=("Apple Braeburn", "Banana", "Tomato 4")
) -> dict[str, bytes]:
    out = {}
    for split in ("Training", "Test"):
        for cls in classes:
            for k in range(2):
                out[f"{prefix}{split}/{cls}/r_{k}_100.jpg"] = JPEG
    return out


def _write_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def _write_tar(path: Path, members: dict[str, bytes], links: list[tarfile.TarInfo] = ()):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in links:
            tf.addfile(info)
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _tree_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------- offline / credentials


def test_offline_exits_2_with_manual_instructions(tmp_path, capsys):
    dest = tmp_path / "fruits"
    assert main(["fruits", "--dest", str(dest)]) == 2
    out, err = capsys.readouterr()
    text = out + err
    assert "offline" in text
    assert "https://www.kaggle.com/datasets/moltean/fruits" in text
    assert "Training/ and Test/" in text
    assert "data.root=" in text and "--from-archive" in text
    assert not dest.exists()  # nothing half-made


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_offline_switch_blocks_the_download(monkeypatch, tmp_path, capsys, value):
    monkeypatch.setenv("FRUITNET_OFFLINE", value)

    def probe(timeout):
        raise AssertionError("offline: the network must not even be probed")

    monkeypatch.setattr(dl, "_check_connectivity", probe)
    dest = tmp_path / "fruits"
    assert main(["fruits", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "offline mode (FRUITNET_OFFLINE is set)" in err
    assert "--from-archive" in err
    assert not dest.exists()


def test_offline_chest_message(tmp_path, capsys):
    assert main(["chest_xray", "--dest", str(tmp_path / "c")]) == 2
    text = "".join(capsys.readouterr())
    assert "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia" in text
    assert "train/" in text


def test_module_entry_point_offline(tmp_path):
    import subprocess

    env = {"FRUITNET_OFFLINE": "1", "KAGGLE_KEY": SECRET, "KAGGLE_USERNAME": "someone", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "fruitnet.data.download", "fruits", "--dest", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert proc.returncode == 2
    assert "offline" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def _fake_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    cfg = tmp_path / "kaggle"
    cfg.mkdir(exist_ok=True)
    (cfg / "kaggle.json").write_text(json.dumps({"username": "someone", "key": SECRET + "-file"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(cfg))


def test_credentials_never_printed_offline(monkeypatch, tmp_path, capsys):
    _fake_credentials(monkeypatch, tmp_path)
    assert main(["fruits", "--dest", str(tmp_path / "d")]) == 2
    text = "".join(capsys.readouterr())
    assert "credentials: found" in text
    assert SECRET not in text


def test_credentials_scrubbed_from_client_errors(monkeypatch, tmp_path, capsys):
    _fake_credentials(monkeypatch, tmp_path)
    kagglehub = pytest.importorskip("kagglehub")
    monkeypatch.delenv("FRUITNET_OFFLINE")
    monkeypatch.setattr(dl, "_check_connectivity", lambda timeout: None)

    def failing(handle, path=None, *, force_download=False, output_dir=None):
        raise RuntimeError(f"401 Unauthorized for key={SECRET} and {SECRET}-file")

    monkeypatch.setattr(kagglehub, "dataset_download", failing)
    assert main(["chest_xray", "--dest", str(tmp_path / "d")]) == 2
    text = "".join(capsys.readouterr())
    assert "401 Unauthorized" in text
    assert SECRET not in text
    assert "***" in text


def test_download_with_fake_kagglehub_prints_data_root(monkeypatch, tmp_path, capsys):
    kagglehub = pytest.importorskip("kagglehub")
    monkeypatch.delenv("FRUITNET_OFFLINE")
    monkeypatch.setattr(dl, "_check_connectivity", lambda timeout: None)
    calls = []

    def fake(handle, path=None, *, force_download=False, output_dir=None):
        calls.append((handle, output_dir))
        archive = _write_zip(tmp_path / "dl.zip", _chest_members("chest_xray/"))
        safe_extract(archive, output_dir)
        return output_dir

    monkeypatch.setattr(kagglehub, "dataset_download", fake)
    dest = tmp_path / "data" / "chest_xray"
    assert main(["chest_xray", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert calls == [("paultimothymooney/chest-xray-pneumonia", str(dest))]
    root = (dest / "chest_xray").resolve()
    assert f"data.root={root}" in out
    assert "python -m fruitnet.train data=chest_xray" in out

    # A second run finds the data and does not download again, even offline.
    monkeypatch.setenv("FRUITNET_OFFLINE", "1")
    assert main(["chest_xray", "--dest", str(dest)]) == 0
    assert len(calls) == 1
    assert f"data.root={root}" in capsys.readouterr().out


def test_connectivity_probe_is_bounded(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)  # a resolver that never answers (until the test lets the thread end)
        raise TimeoutError("resolver")

    monkeypatch.setattr(socket, "create_connection", hang)
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadUnavailable, match="offline"):
        dl._check_connectivity(0.2)
    assert time.monotonic() - t0 < 5
    release.set()  # the abandoned probe ends with an OSError, as a real timeout would

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(dl.DownloadUnavailable, match="ConnectionRefusedError"):
        dl._check_connectivity(0.2)


# --------------------------------------------------------------------------- safe extraction


@pytest.mark.parametrize(
    "evil",
    [
        "../evil.txt",
        "/tmp/fruitnet-evil-abs.txt",
        "ok/../../evil.txt",
        "..\\evil.txt",
        "C:/evil.txt",
    ],
)
def test_zip_traversal_refused(tmp_path, evil):
    dest = tmp_path / "out" / "dest"
    members = {"good/a.jpg": JPEG, evil: b"pwned"}
    archive = _write_zip(tmp_path / "evil.zip", members)
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, dest)
    assert repr(evil) in str(exc.value)
    assert _tree_files(dest) == []  # checked before anything was written
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not Path("/tmp/fruitnet-evil-abs.txt").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "a/../../.."])
def test_zip_symlink_outside_refused(tmp_path, target):
    archive = _write_zip(tmp_path / "link.zip", {"good/a.jpg": JPEG}, {"good/link": target})
    with pytest.raises(UnsafeArchiveError, match="good/link"):
        safe_extract(archive, tmp_path / "dest")


@pytest.mark.parametrize(
    "member",
    [
        "../evil.txt",
        "/tmp/fruitnet-evil-abs.txt",
        "a/../../evil.txt",
    ],
)
def test_tar_traversal_refused(tmp_path, member):
    archive = _write_tar(tmp_path / "evil.tar.gz", {"good/a.jpg": JPEG, member: b"pwned"})
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, tmp_path / "dest")
    assert repr(member) in str(exc.value)
    assert _tree_files(tmp_path / "dest") == []


@pytest.mark.parametrize(
    "link",
    [
        _link("good/etc", "/etc"),
        _link("good/up", "../../.."),
        _link("good/hard", "../outside.txt", tarfile.LNKTYPE),
        _link("good/hard_abs", "/etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["symlink-abs", "symlink-up", "hardlink-up", "hardlink-abs"],
)
def test_tar_links_outside_refused(tmp_path, link):
    (tmp_path / "outside.txt").write_text("secret")
    archive = _write_tar(tmp_path / "links.tar.gz", {"good/a.jpg": JPEG}, [link])
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, tmp_path / "dest")
    assert repr(link.name) in str(exc.value)


def test_tar_symlink_then_write_through_it_refused(tmp_path):
    # The classic two-step: a link to outside, then a file "inside" the link.
    archive = _write_tar(
        tmp_path / "two.tar.gz", {"escape/pwned.txt": b"x"}, [_link("escape", str(tmp_path))]
    )
    # Members are checked in archive order; either member being refused is fine.
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "pwned.txt").exists()


def test_tar_device_refused(tmp_path):
    dev = tarfile.TarInfo("good/null")
    dev.type = tarfile.CHRTYPE
    archive = _write_tar(tmp_path / "dev.tar.gz", {"good/a.jpg": JPEG}, [dev])
    with pytest.raises(UnsafeArchiveError, match="good/null"):
        safe_extract(archive, tmp_path / "dest")


def test_tar_links_inside_are_kept(tmp_path):
    archive = _write_tar(
        tmp_path / "ok.tar.gz",
        {"d/a.jpg": JPEG},
        [_link("d/alias.jpg", "a.jpg"), _link("d/copy.jpg", "d/a.jpg", tarfile.LNKTYPE)],
    )
    dest = safe_extract(archive, tmp_path / "dest")
    assert (dest / "d" / "alias.jpg").is_symlink()
    assert (dest / "d" / "alias.jpg").read_bytes() == JPEG
    assert (dest / "d" / "copy.jpg").read_bytes() == JPEG


def test_not_an_archive(tmp_path):
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(bogus, tmp_path / "dest")


# --------------------------------------------------------------------------- data root


def _kaggle_chest_zip(tmp_path: Path) -> Path:
    # Kaggle's layout: chest_xray/{train,val,test}, a nested duplicate chest_xray/chest_xray,
    # and __MACOSX AppleDouble junk.
    members = {**_chest_members("chest_xray/"), **_chest_members("chest_xray/chest_xray/")}
    members["__MACOSX/chest_xray/train/NORMAL/._person0_train.jpeg"] = b"\x00\x05\x16\x07junk"
    members["chest_xray/train/NORMAL/._stray.jpeg"] = b"junk"
    return _write_zip(tmp_path / "chest-xray-pneumonia.zip", members)


def test_good_zip_with_nested_chest_and_macosx(tmp_path):
    dest = safe_extract(_kaggle_chest_zip(tmp_path), tmp_path / "dest")
    assert not (dest / "__MACOSX").exists()
    assert not list(dest.rglob("._*"))
    assert find_data_root(dest, "chest_xray") == dest / "chest_xray"
    report = verify_data_root(dest / "chest_xray", "chest_xray")
    assert report == {
        "train": {"classes": 2, "images": 4},
        "test": {"classes": 2, "images": 4},
        "val": {"classes": 2, "images": 4},
    }


def test_only_nested_copy_complete(tmp_path):
    # If the outer folder lacks a split, the nested complete copy is the root.
    members = {k: v for k, v in _chest_members("chest_xray/").items() if "/test/" not in k}
    members.update(_chest_members("chest_xray/chest_xray/"))
    dest = safe_extract(_write_zip(tmp_path / "a.zip", members), tmp_path / "dest")
    assert find_data_root(dest, "chest_xray") == dest / "chest_xray" / "chest_xray"


def test_fruits_prefers_100x100_variant(tmp_path):
    members = {
        **_fruit_members("fruits-360_original-size/fruits-360-original-size/"),
        **_fruit_members("fruits-360_100x100/fruits-360/"),
    }
    dest = safe_extract(_write_tar(tmp_path / "fruits.tar.gz", members), tmp_path / "dest")
    assert find_data_root(dest, "fruits") == dest / "fruits-360_100x100" / "fruits-360"


def test_find_data_root_errors(tmp_path):
    (tmp_path / "x" / "Training" / "Apple").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Training/ and Test/"):
        find_data_root(tmp_path / "x", "fruits")
    (tmp_path / "x" / "Test" / "Apple").mkdir(parents=True)
    (tmp_path / "x" / "Test" / "Pear").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="class folder"):
        find_data_root(tmp_path / "x", "fruits")
    with pytest.raises(ValueError, match="unknown dataset"):
        find_data_root(tmp_path, "mnist")


def test_shared_samples_are_valid_roots(shared_data):
    assert find_data_root(shared_data / "fruits-360-sample", "fruits") == (
        shared_data / "fruits-360-sample"
    )
    assert find_data_root(shared_data / "chest_xray-sample", "chest_xray") == (
        shared_data / "chest_xray-sample"
    )
    report = verify_data_root(shared_data / "fruits-360-sample", "fruits")
    assert report["Training"] == {"classes": 95, "images": 1140}


# --------------------------------------------------------------------------- --from-archive


def test_from_archive_end_to_end(tmp_path, capsys):
    dest = tmp_path / "my data" / "chest"  # a space: the override must stay one Hydra value
    rc = main(
        ["chest_xray", "--from-archive", str(_kaggle_chest_zip(tmp_path)), "--dest", str(dest)]
    )
    assert rc == 0
    out = capsys.readouterr().out
    root = (dest / "chest_xray").resolve()
    assert f"data.root='{root}'" in out
    assert "python -m fruitnet.train data=chest_xray" in out
    assert "train/: 2 classes, 4 images" in out


def test_from_archive_fruits_tar(tmp_path, capsys):
    archive = _write_tar(tmp_path / "fruits.tgz", _fruit_members("fruits-360/"))
    assert main(["fruits", "--from-archive", str(archive), "--dest", str(tmp_path / "f")]) == 0
    root = (tmp_path / "f" / "fruits-360").resolve()
    assert f"data.root={root}" in capsys.readouterr().out


def test_from_archive_malicious_exits_1(tmp_path, capsys):
    archive = _write_zip(tmp_path / "evil.zip", {**_fruit_members(""), "../../evil.txt": b"x"})
    assert main(["fruits", "--from-archive", str(archive), "--dest", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "'../../evil.txt'" in err
    assert not (tmp_path / "evil.txt").exists()


def test_from_archive_wrong_dataset_exits_1(tmp_path, capsys):
    archive = _write_zip(tmp_path / "chest.zip", _chest_members("chest_xray/"))
    assert main(["fruits", "--from-archive", str(archive), "--dest", str(tmp_path / "d")]) == 1
    assert "no fruits data root" in capsys.readouterr().err


def test_tar_symlink_chain_resolving_outside_refused(tmp_path):
    # Each link looks inside on paper, but "a" -> "." makes "x" -> "a/.." the parent of dest.
    archive = _write_tar(
        tmp_path / "chain.tar.gz", {"d/a.jpg": JPEG}, [_link("a", "."), _link("x", "a/..")]
    )
    with pytest.raises(UnsafeArchiveError, match="'x'"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "x").is_symlink()


def test_default_dest_follows_fruitnet_root(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FRUITNET_ROOT", str(tmp_path / "scratch"))
    archive = _write_zip(tmp_path / "chest.zip", _chest_members("chest_xray/"))
    assert main(["chest_xray", "--from-archive", str(archive)]) == 0
    root = (tmp_path / "scratch" / "data" / "chest_xray" / "chest_xray").resolve()
    assert f"data.root={root}" in capsys.readouterr().out
