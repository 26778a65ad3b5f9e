"""The trade-off plot of one scenario: accuracy against the fault each method repairs."""

from __future__ import annotations

from pathlib import Path


def ablation_points(result: dict, ykey: str) -> dict[str, list[tuple[float, float]]]:
    """group -> (accuracy %, fault %) of its measured rows; rows that reuse another row's numbers are that row."""
    groups: dict[str, list] = {}
    for r in result["ablations"]:
        m = r.get("metrics")
        if m and not str(r.get("note") or "").startswith(("reference", "=")):
            groups.setdefault(r["group"], []).append((100 * m["CA"], 100 * m[ykey]))
    return groups


def tradeoff_plot(result: dict, path: Path) -> None:
    """CA vs ASR (backdoor) or accuracy vs flip rate (fairness): methods as large markers, ablations small."""
    from atpatch.eval.plots import pyplot

    plt = pyplot()
    fair = result["task"] == "fairness"
    ykey, ylabel = ("flip_rate", f"counterfactual flip rate % ({result['primary_attribute']})") if fair else \
        ("ASR", "attack success rate %")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    markers = {"reference": "s", "atpatch": "*", "baseline": "o"}
    atpatch_markers = iter("*P")
    for r in result["rows"]:
        m = r.get("metrics")
        if not m:
            continue
        marker = next(atpatch_markers, "*") if r["family"] == "atpatch" else markers[r["family"]]
        ax.scatter(100 * m["CA"], 100 * m[ykey], s=140 if r["family"] == "atpatch" else 70, marker=marker,
                   label=r["method"], zorder=3, alpha=0.85)
    for i, (group, points) in enumerate(ablation_points(result, ykey).items()):
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=22, marker="xd+1v^"[i % 6], color="0.45", zorder=2, label=f"ablation: {group}")
    if not fair and result.get("ASR_floor") is not None:
        ax.axhline(100 * result["ASR_floor"], ls="--", lw=0.8, color="grey", label="ASR floor")
    ax.set_xlabel("clean accuracy %")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{result['scenario']} ({result['profile']} profile): methods (large) and AtPatch ablations (grey)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
