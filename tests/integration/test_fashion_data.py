"""Fetching and reading the real Fashion-MNIST files."""

import gzip

import numpy as np
import pytest
from _fashion import fashion_dir

from atpatch.scenarios.data.fashion_mnist import load_idx, load_split
from atpatch.scenarios.data.fetch import FASHION_MNIST_SHA256, fetch_fashion_mnist, sha256_file
from atpatch.core.errors import AtPatchError


def test_fetch_returns_verified_hashes():
    raw = fashion_dir()
    assert fetch_fashion_mnist(raw) == FASHION_MNIST_SHA256  # second call: no download
    for name, sha in FASHION_MNIST_SHA256.items():
        assert sha256_file(raw / name) == sha


def test_load_test_split_shapes_and_labels():
    images, labels = load_split(fashion_dir(), "test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1000] * 10  # balanced classes
    assert images[:100].max() == 255 and images[:100].min() == 0


def _slice_idx(tmp_path, raw, n):
    """Write valid IDX gz files holding the first n test images/labels."""
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz") as fh:
        img = fh.read(16 + n * 784)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as fh:
        lab = fh.read(8 + n)
    img = img[:4] + n.to_bytes(4, "big") + img[8:]
    lab = lab[:4] + n.to_bytes(4, "big") + lab[8:]
    ip, lp = tmp_path / "img.gz", tmp_path / "lab.gz"
    ip.write_bytes(gzip.compress(img, mtime=0))
    lp.write_bytes(gzip.compress(lab, mtime=0))
    return ip, lp


def test_load_idx_on_slice_matches_full(tmp_path):
    raw = fashion_dir()
    ip, lp = _slice_idx(tmp_path, raw, 50)
    images, labels = load_idx(ip, lp)
    full_img, full_lab = load_split(raw, "test")
    assert np.array_equal(images, full_img[:50]) and np.array_equal(labels, full_lab[:50])


def test_truncated_gzip_names_file(tmp_path):
    raw = fashion_dir()
    bad = tmp_path / "cut-images.gz"
    bad.write_bytes((raw / "t10k-images-idx3-ubyte.gz").read_bytes()[:5000])
    with pytest.raises(AtPatchError, match="cut-images.gz") as err:
        load_idx(bad, raw / "t10k-labels-idx1-ubyte.gz")
    assert "truncated" in str(err.value)


def test_truncated_payload_names_file(tmp_path):
    ip, lp = _slice_idx(tmp_path, fashion_dir(), 10)
    raw_bytes = gzip.decompress(ip.read_bytes())[:-100]
    ip.write_bytes(gzip.compress(raw_bytes, mtime=0))
    with pytest.raises(AtPatchError, match=r"img\.gz: payload expected 7840 bytes"):
        load_idx(ip, lp)


def test_wrong_magic_names_file(tmp_path):
    ip, lp = _slice_idx(tmp_path, fashion_dir(), 10)
    # Labels file given as images: magic 2049 instead of 2051.
    with pytest.raises(AtPatchError, match=r"lab\.gz: IDX magic number expected 2051, got 2049"):
        load_idx(lp, lp)


def test_not_gzip_names_file(tmp_path):
    p = tmp_path / "plain.gz"
    p.write_bytes(b"not a gzip stream at all")
    with pytest.raises(AtPatchError, match="plain.gz"):
        load_idx(p, p)
