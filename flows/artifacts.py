"""The artifact every flow run leaves in Prefect: the scenario's headline metrics before -> after and
the gate decision with its checks (Markdown, under the key `<scenario>-metrics`, so the UI lists the
runs' versions side by side). It reads the JSON the stages wrote (metrics/<scenario>/)."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from atpatch.conventions import artifact_key
from atpatch.core.errors import AtPatchError
from atpatch.eval.report import load_reports, markdown_summary


def publish_summary(workdir: str | Path, scenario: str) -> str:
    """Create the run's metrics artifact; return its Markdown."""
    try:
        text = markdown_summary(scenario, load_reports(scenario, workdir))
    except AtPatchError as exc:  # a run of the first stages only: no evaluate.json yet, and the run says so
        text = f"## {scenario}\n\nno metrics yet: {exc}\n"
    create_markdown_artifact(markdown=text, key=artifact_key(scenario),
                             description=f"{scenario}: headline metrics before -> after, gate decision")
    return text
