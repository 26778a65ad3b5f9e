"""Readable figures for the evaluate stage (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def before_after_bars(path: Path, rows: dict[str, dict[str, float]], title: str) -> None:
    """Grouped bars: rows = {method: {metric: value in [0, 1]}}; values printed as percentages."""
    plt = pyplot()
    metrics = list(next(iter(rows.values())))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (method, values) in enumerate(rows.items()):
        xs = np.arange(len(metrics)) + i * width
        bars = ax.bar(xs, [100 * values[m] for m in metrics], width, label=method)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(rows) - 1) / 2, metrics)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def roc_curve_plot(path: Path, fpr: np.ndarray, tpr: np.ndarray, auroc: float, title: str) -> None:
    """The detector's column-level ROC curve."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUROC {auroc:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("false positive rate (benign columns)")
    ax.set_ylabel("true positive rate (fault columns)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attention_grid(path: Path, images: np.ndarray, before: np.ndarray, after: np.ndarray, flagged: np.ndarray,
                   grid: int, titles: list[str]) -> None:
    """Per input: the image, layer attention to each patch before and after the patch.

    images [M, H, W]; before/after [M, grid*grid] column mass per patch (CLS excluded);
    flagged [M, grid*grid] bool, outlined in red.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.5 * len(images)), squeeze=False)
    vmax = float(max(before.max(), after.max()))
    for row, (img, b, a, f, t) in enumerate(zip(images, before, after, flagged, titles)):
        axes[row, 0].imshow(img, cmap="gray")
        axes[row, 0].set_title(t, fontsize=8)
        for col, (mass, name) in enumerate([(b, "before"), (a, "after")], start=1):
            ax = axes[row, col]
            im = ax.imshow(mass.reshape(grid, grid), cmap="viridis", vmin=0, vmax=vmax)
            ax.set_title(f"attention to patch ({name})", fontsize=8)
            for idx in np.flatnonzero(f):
                r, c = divmod(int(idx), grid)
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2))
            fig.colorbar(im, ax=ax, fraction=0.046)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def attention_tokens(path: Path, tokens: list[list[str]], before: np.ndarray, after: np.ndarray,
                     flagged: np.ndarray, titles: list[str]) -> None:
    """Per input (one row each): attention to each token before and after the patch, as bars.

    tokens[m] the token strings of input m (K entries, CLS included); before/after [M, K] column
    mass; flagged [M, K] bool, drawn red. Padding (empty token strings) is left out.
    """
    plt = pyplot()
    fig, axes = plt.subplots(len(tokens), 1, figsize=(11, 2.6 * len(tokens)), squeeze=False)
    for ax, toks, b, a, f, t in zip(axes[:, 0], tokens, before, after, flagged, titles):
        k = len([s for s in toks if s])
        x = np.arange(k)
        ax.bar(x - 0.2, b[:k], 0.4, label="before", color=np.where(f[:k], "red", "tab:blue"))
        ax.bar(x + 0.2, a[:k], 0.4, label="after", color="tab:green")
        ax.set_xticks(x, toks[:k], rotation=90, fontsize=6)
        ax.set_title(f"{t}: attention to each token (red: flagged)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
