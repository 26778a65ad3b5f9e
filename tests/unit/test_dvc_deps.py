"""dvc.yaml declares what each stage really depends on: every library module a stage imports (static
import graph, lazy imports included) and, for every params section a stage reads, both its
`defaults.<section>` and `scenarios.<name>.<section>` keys."""

from __future__ import annotations

import re

import pytest
import yaml

from dvc_graph import REPO, covered, needed_files

DVC_FILE = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
DVC = DVC_FILE["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def deps(stage: str) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in DVC[stage]["do"]["deps"]]


def params(stage: str) -> list[str]:
    return [p for p in DVC[stage]["do"].get("params") or [] if isinstance(p, str)]


@pytest.mark.parametrize("stage", sorted(DVC))
def test_a_stage_depends_on_every_module_it_imports(stage):
    missing = sorted(str(f) for f in needed_files(stage) if not covered(f, deps(stage)))
    assert not missing, f"dvc.yaml stage {stage}: add deps {missing}"


@pytest.mark.parametrize("stage", sorted(DVC))
def test_code_deps_exist(stage):
    code = [d for d in deps(stage) if d.startswith(("src/", "stages/"))]
    assert code and all((REPO / d).exists() for d in code), [d for d in code if not (REPO / d).exists()]


@pytest.mark.parametrize("stage", sorted(DVC))
def test_scenario_sections_are_declared_with_their_defaults(stage):
    declared = params(stage)
    sections = {m.group(1) for p in declared if (m := re.fullmatch(r"scenarios\.\$\{key\}\.(\w+)", p))}
    defaults = {p.split(".", 1)[1] for p in declared if p.startswith("defaults.")}
    assert sections - {"kind"} == defaults, f"{stage}: scenario sections {sections} vs defaults {defaults}"


def test_every_declared_section_exists_in_every_scenario_and_in_defaults():
    """DVC refuses to run a stage whose declared params key is missing (an empty mapping is fine)."""
    for stage in DVC:
        for p in params(stage):
            if p.startswith("defaults."):
                assert p.split(".", 1)[1] in PARAMS["defaults"], f"params.yaml: {p} missing ({stage})"
            elif p.startswith("scenarios."):
                section = p.rsplit(".", 1)[1]
                absent = [name for name, sc in PARAMS["scenarios"].items() if section not in sc]
                assert not absent, f"params.yaml: scenarios {absent} lack section {section!r} ({stage})"


def test_outputs_follow_the_conventions():
    """dvc.yaml writes each stage's output where atpatch.conventions says it is (the CLI, report and
    registry read it there), and its top-level metrics and plots are the conventions' folders."""
    from atpatch.conventions import EXTRA_PATHS, HEADLINE_DIR, OUT_PATHS, PLOTS_DIR

    def declared(stage: str) -> set[str]:
        return {o if isinstance(o, str) else next(iter(o)) for o in DVC[stage]["do"].get("outs") or []}

    for stage, pattern in OUT_PATHS.items():
        assert pattern.format(s="${key}") in declared(stage), stage
    for (stage, _), pattern in EXTRA_PATHS.items():
        assert pattern.format(s="${key}") in declared(stage), stage
    assert DVC_FILE["metrics"] == [HEADLINE_DIR]
    assert [next(iter(p)) if isinstance(p, dict) else p for p in DVC_FILE["plots"]] == [PLOTS_DIR]
    assert not any(DVC[s]["do"].get(key) for s in DVC for key in ("metrics", "plots")), \
        "stage-level metrics/plots list every scenario's files, and a scenario that has not run is an error"



@pytest.mark.parametrize("stage", ["generate", "extract", "evaluate"])
def test_a_stage_depends_on_the_stored_suites_it_runs(stage):
    from atpatch.conventions import SUITES_DIR
    from atpatch.scenarios.checks import STAGE_SUITES

    missing = [f"{SUITES_DIR}/{name}.json" for name in STAGE_SUITES[stage]
               if f"{SUITES_DIR}/{name}.json" not in deps(stage)]
    assert not missing, f"dvc.yaml stage {stage}: add deps {missing}"
