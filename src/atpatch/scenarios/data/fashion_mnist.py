"""Read Fashion-MNIST IDX files (gzip) into numpy arrays, with format checks."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from atpatch.core.errors import AtPatchError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise AtPatchError(f"{path}: file not found (run `make setup` or stages/fetch.py)") from exc
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a truncated stream raises EOFError.
        raise AtPatchError(f"{path}: not a readable gzip file (corrupt or truncated): {exc}") from exc


def _header(path: Path, buf: bytes, magic: int, ndim: int) -> tuple[int, ...]:
    need = 4 + 4 * ndim
    if len(buf) < need:
        raise AtPatchError(f"{path}: IDX header expected {need} bytes, got {len(buf)} (truncated file)")
    got_magic = struct.unpack(">I", buf[:4])[0]
    if got_magic != magic:
        raise AtPatchError(f"{path}: IDX magic number expected {magic}, got {got_magic} (wrong file kind?)")
    return struct.unpack(f">{ndim}I", buf[4:need])


def load_idx(images_gz: Path | str, labels_gz: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Load an IDX image file and its label file.

    Returns (images uint8 [N, 28, 28], labels int64 [N]). Raises AtPatchError naming the file
    on a bad gzip stream, wrong magic number, unexpected image size, truncated payload, or
    image/label count mismatch.
    """
    images_gz, labels_gz = Path(images_gz), Path(labels_gz)
    ibuf = _read_gz(images_gz)
    n, rows, cols = _header(images_gz, ibuf, IMAGES_MAGIC, 3)
    if (rows, cols) != (28, 28):
        raise AtPatchError(f"{images_gz}: image size expected 28x28, got {rows}x{cols}")
    if len(ibuf) - 16 != n * rows * cols:
        raise AtPatchError(
            f"{images_gz}: payload expected {n * rows * cols} bytes for {n} images, got {len(ibuf) - 16} (truncated?)"
        )
    images = np.frombuffer(ibuf, np.uint8, offset=16).reshape(n, rows, cols).copy()

    lbuf = _read_gz(labels_gz)
    (m,) = _header(labels_gz, lbuf, LABELS_MAGIC, 1)
    if len(lbuf) - 8 != m:
        raise AtPatchError(f"{labels_gz}: payload expected {m} bytes, got {len(lbuf) - 8} (truncated?)")
    if m != n:
        raise AtPatchError(f"{labels_gz}: label count {m} differs from image count {n} in {images_gz.name}")
    labels = np.frombuffer(lbuf, np.uint8, offset=8).astype(np.int64)
    return images, labels


def load_split(raw_dir: Path | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load split 'train' (60k) or 'test' (10k) from the fetched folder; see `load_idx`."""
    if split not in SPLIT_FILES:
        raise AtPatchError(f"Fashion-MNIST split: expected one of {sorted(SPLIT_FILES)}, got {split!r}")
    img, lab = SPLIT_FILES[split]
    return load_idx(Path(raw_dir) / img, Path(raw_dir) / lab)
