"""DecodedImageCache: byte-identical to decoding, decodes once, rebuilds on change, survives races."""

from __future__ import annotations

import functools
import inspect
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from fruitnet.data.cache import DecodedImageCache, cache_digest, default_cache_dir

REPO = Path(__file__).resolve().parents[2]
S = 64


def simple_decode(path: Path, size: int = S) -> torch.Tensor:
    with Image.open(path) as img:
        t = F.pil_to_tensor(img.convert("RGB"))
    return F.resize(t, [size, size], antialias=True)


class CountingDecode:
    """simple_decode that appends a line per call to a file: counts across threads and processes."""

    def __init__(self, log: Path, size: int = S, sleep: float = 0.0) -> None:
        self.log = Path(log)
        self.size = size
        self.sleep = sleep

    def __call__(self, path: Path) -> torch.Tensor:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {Path(path).name}\n".encode())
        finally:
            os.close(fd)
        if self.sleep:
            time.sleep(self.sleep)
        return simple_decode(path, self.size)

    @property
    def calls(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


def _make_tree(root: Path) -> list[Path]:
    """JPEGs/PNGs with mixed sizes and modes, in class folders, names with spaces."""
    rng = np.random.default_rng(0)
    specs = [
        ("RGB", (100, 100), "jpg"),
        ("RGB", (257, 130), "jpg"),
        ("L", (80, 200), "jpeg"),
        ("L", (64, 64), "jpg"),
        ("CMYK", (90, 70), "jpg"),
        ("RGBA", (50, 120), "png"),
        ("P", (33, 47), "png"),
        ("RGB", (640, 480), "jpg"),
        ("L", (12, 9), "png"),
        ("RGB", (64, 64), "png"),
    ]
    paths = []
    for k in range(3):
        cls = root / f"class {k}"
        cls.mkdir(parents=True)
        for j, (mode, (w, h), ext) in enumerate(specs):
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            img = Image.fromarray(arr, "RGB")
            if mode == "P":
                img = img.quantize(16)
            elif mode != "RGB":
                img = img.convert(mode)
            p = cls / f"img {j}.{ext}"
            img.save(p)
            paths.append(p)
    return paths


@pytest.fixture
def tree(tmp_path) -> list[Path]:
    return _make_tree(tmp_path / "images")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def _assert_identical(cache: DecodedImageCache, decode) -> None:
    for i, p in enumerate(cache.paths):
        got = cache[i]
        want = decode(p)
        assert got.dtype == torch.uint8
        assert got.shape == want.shape
        assert torch.equal(got, want), p


def test_byte_identical_to_decode(tree, cache_dir):
    cache = DecodedImageCache(tree, simple_decode, cache_dir=cache_dir, key="simple-64")
    assert len(cache) == len(tree)
    assert not cache.is_built()
    _assert_identical(cache, simple_decode)
    assert cache.is_built()
    assert cache.shape == (len(tree), 3, S, S)
    full = cache.as_tensor()
    assert full.shape == (len(tree), 3, S, S) and full.dtype == torch.uint8
    assert torch.equal(full, torch.stack([simple_decode(p) for p in tree]))
    assert torch.equal(cache.take([5, 0, 5]), full[[5, 0, 5]])
    assert torch.equal(cache[-1], full[-1])
    with pytest.raises(IndexError):
        cache[len(tree)]
    # Items are copies: writing into one must not touch the cache or later reads.
    item = cache[0]
    item.zero_()
    assert torch.equal(cache[0], full[0])

    meta = json.loads(cache.meta_path.read_text())
    assert meta["shape"] == [len(tree), 3, S, S]
    assert meta["key"] == "simple-64" and meta["file_count"] == len(tree)
    assert cache.path.name == f"{cache.digest}.npy"
    assert not list(cache_dir.glob(".*tmp*"))


def test_explicit_build_then_second_instance_does_not_decode(tree, cache_dir, tmp_path):
    dec = CountingDecode(tmp_path / "calls.log")
    first = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="k")
    assert first.build() == first.path
    assert dec.calls == len(tree)
    first.build()  # idempotent
    assert dec.calls == len(tree)

    second = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="k")
    assert second.path == first.path
    assert torch.equal(second.as_tensor(), first.as_tensor())
    for i in range(len(second)):
        second[i]
    assert dec.calls == len(tree)


def test_changed_key_file_list_or_touched_file_rebuilds(tree, cache_dir, tmp_path):
    dec = CountingDecode(tmp_path / "calls.log")
    base = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="resize=64")
    base.build()
    n = len(tree)
    assert dec.calls == n

    other_key = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="resize=32")
    assert other_key.path != base.path
    other_key.build()
    assert dec.calls == 2 * n

    subset = DecodedImageCache(tree[:-1], dec, cache_dir=cache_dir, key="resize=64")
    assert subset.path != base.path
    reordered = DecodedImageCache(tree[::-1], dec, cache_dir=cache_dir, key="resize=64")
    assert reordered.path != base.path

    # Touch one file: same bytes, new mtime -> new cache (a re-saved image may differ).
    st = tree[3].stat()
    os.utime(tree[3], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    touched = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="resize=64")
    assert touched.path != base.path
    calls = dec.calls
    touched.build()
    assert dec.calls == calls + n

    # A rewritten file with different pixels is served fresh, not from the old cache.
    Image.new("RGB", (70, 70), (255, 0, 0)).save(tree[0])
    rewritten = DecodedImageCache(tree, simple_decode, cache_dir=cache_dir, key="resize=64")
    assert torch.equal(rewritten[0], simple_decode(tree[0]))
    assert not torch.equal(rewritten[0], base[0])


def test_leftover_temp_file_is_ignored_and_removed(tree, cache_dir, tmp_path):
    digest = cache_digest(tree, "k")
    cache_dir.mkdir(parents=True)
    leftover = cache_dir / f".{digest}.npy.99999.tmp"  # atomic_path's temp name
    leftover.write_bytes(b"\x93NUMPY half-written garbage")
    dec = CountingDecode(tmp_path / "calls.log")
    cache = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="k")
    assert not cache.is_built()
    _assert_identical(cache, simple_decode)
    assert not leftover.exists()
    assert dec.calls == len(tree)


def test_corrupt_final_file_is_rebuilt(tree, cache_dir):
    cache = DecodedImageCache(tree, simple_decode, cache_dir=cache_dir, key="k")
    cache.build()
    cache.path.write_bytes(cache.path.read_bytes()[:1000])  # truncated by a crashed filesystem
    again = DecodedImageCache(tree, simple_decode, cache_dir=cache_dir, key="k")
    assert not again.is_built()
    _assert_identical(again, simple_decode)


def test_failed_build_leaves_nothing(tree, cache_dir):
    def bad_decode(path: Path) -> torch.Tensor:
        if path == tree[7]:
            return simple_decode(path, size=32)  # a size mismatch mid-way
        return simple_decode(path)

    cache = DecodedImageCache(tree, bad_decode, cache_dir=cache_dir, key="k", num_threads=2)
    with pytest.raises(ValueError, match="img 7"):
        cache.build()
    assert not cache.path.exists()
    assert not list(cache_dir.glob(".*tmp*"))

    def float_decode(path: Path) -> torch.Tensor:
        return simple_decode(path).float()

    with pytest.raises(ValueError, match="uint8"):
        DecodedImageCache(tree, float_decode, cache_dir=cache_dir, key="f").build()


_BUILD_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_cache import CountingDecode
    from fruitnet.data.cache import DecodedImageCache
    logging.basicConfig(level=logging.INFO)
    paths = [Path(p) for p in Path({listing!r}).read_text().splitlines()]
    dec = CountingDecode(Path({log!r}), sleep={sleep})
    cache = DecodedImageCache(paths, dec, cache_dir=Path({cache_dir!r}), key="race",
                              num_threads=1)
    cache.build()
    print("SUM", int(cache.as_tensor().sum()))
    """
)


def _build_script(tree, tmp_path, cache_dir, log, sleep) -> str:
    listing = tmp_path / "listing.txt"
    listing.write_text("\n".join(map(str, tree)))
    return _BUILD_SCRIPT.format(
        tests=str(Path(__file__).parent),
        listing=str(listing),
        log=str(log),
        sleep=sleep,
        cache_dir=str(cache_dir),
    )


def test_killed_build_leaves_no_trusted_cache(tree, cache_dir, tmp_path):
    log = tmp_path / "calls.log"
    script = _build_script(tree, tmp_path, cache_dir, log, sleep=0.2)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # Kill it once it is decoding into the temp file.
        while (
            time.monotonic() < deadline
            and len(log.read_text().splitlines() if log.exists() else []) < 4
        ):
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    digest = cache_digest(tree, "race")
    assert not (cache_dir / f"{digest}.npy").exists()
    assert list(cache_dir.glob(f".{digest}.npy.*")), "expected the killed build's temp file"

    cache = DecodedImageCache(tree, simple_decode, cache_dir=cache_dir, key="race")
    assert not cache.is_built()
    _assert_identical(cache, simple_decode)
    assert not list(cache_dir.glob(f".{digest}.npy.*"))


def test_two_processes_racing_decode_once(tree, cache_dir, tmp_path):
    log = tmp_path / "calls.log"
    script = _build_script(tree, tmp_path, cache_dir, log, sleep=0.01)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    sums = {line for out in outs for line in out.splitlines() if line.startswith("SUM")}
    assert len(sums) == 1
    assert len(log.read_text().splitlines()) == len(tree)  # decoded once in total
    expected = int(torch.stack([simple_decode(p) for p in tree]).sum())
    assert sums == {f"SUM {expected}"}


class _Labelled(Dataset):
    def __init__(self, cache: DecodedImageCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        return self.cache[i], i


@pytest.mark.parametrize("prebuild", [True, False], ids=["prebuilt", "lazy-in-workers"])
def test_dataloader_with_two_workers(tree, cache_dir, tmp_path, prebuild):
    dec = CountingDecode(tmp_path / "calls.log")
    cache = DecodedImageCache(tree, dec, cache_dir=cache_dir, key="dl")
    if prebuild:
        cache.build()
    loader = DataLoader(_Labelled(cache), batch_size=4, shuffle=True, num_workers=2)
    expected = torch.stack([simple_decode(p) for p in tree])
    for _epoch in range(2):
        seen = []
        for images, idx in loader:
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, S, S)
            assert torch.equal(images, expected[idx])
            seen += idx.tolist()
        assert sorted(seen) == list(range(len(tree)))
    # Lazy: the workers raced for the build lock and decoded each file once between them.
    assert dec.calls == len(tree)


def test_pickles_without_the_memmap(tree, cache_dir):
    cache = DecodedImageCache(tree, simple_decode, cache_dir=cache_dir, key="p")
    cache.build()
    cache[0]
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000  # not the pixels
    clone = pickle.loads(blob)
    assert torch.equal(clone[3], cache[3])


def test_empty_and_default_dir(cache_dir, monkeypatch, tmp_path):
    empty = DecodedImageCache([], simple_decode, cache_dir=cache_dir, key="e")
    assert len(empty) == 0 and empty.is_built()
    assert empty.as_tensor().shape == (0, 3, 0, 0)
    monkeypatch.setenv("FRUITNET_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    monkeypatch.delenv("FRUITNET_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fruitnet" / "decoded"


def _load_image_decode(size: int):
    io = pytest.importorskip("fruitnet.data.io")
    load_image = getattr(io, "load_image", None)
    if load_image is None:
        pytest.skip("fruitnet.data.io.load_image not written yet")
    params = inspect.signature(load_image).parameters
    if not {"resize", "crop", "size"} <= params.keys():
        pytest.skip(f"load_image has an unexpected signature {inspect.signature(load_image)}")
    return functools.partial(load_image, resize=None, crop=None, size=size)


def test_with_real_load_image(tree, cache_dir):
    decode = _load_image_decode(48)
    cache = DecodedImageCache(tree, decode, cache_dir=cache_dir, key="load_image-48")
    _assert_identical(cache, decode)


def test_shared_sample_data(shared_data, cache_dir):
    fruits = sorted((shared_data / "fruits-360-sample" / "Test").glob("*/*.jpg"))
    chest = sorted((shared_data / "chest_xray-sample").glob("*/*/*.jpeg"))
    assert len(fruits) == 380 and len(chest) == 136
    decode = functools.partial(simple_decode, size=100)
    cache = DecodedImageCache(fruits + chest, decode, cache_dir=cache_dir, key="sample-100")
    cache.build()
    _assert_identical(cache, decode)
    assert cache.shape == (len(fruits) + len(chest), 3, 100, 100)
    # Grayscale X-rays come out as three equal channels.
    x = cache[len(fruits)]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
