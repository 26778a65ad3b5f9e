"""The sweep's bookkeeping, without running a pipeline: the grid (scenario x variant x seed), its argument
errors, the `atpatch sweep` command, merging cells into one results file per scenario, and the flow
collecting its cells: a cell that keeps failing is retried, then named, and the others' results are
written. Cells on a real Dask cluster: tests/e2e/test_sweep_cluster.py."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "flows")]

from atpatch.ops.sweep import Cell, expand_grid  # noqa: E402
from benchmarks import scenarios as bench  # noqa: E402


def template_row(scenario: str = "tabular-fairness") -> dict:
    """A real result row (the committed benchmark's first cell, without the command that made it) to build
    fabricated rows from."""
    row = json.loads((REPO / "benchmarks" / "results" / f"{scenario}.json").read_text())["results"][0]
    return {k: v for k, v in row.items() if k != "command"}


def fake_row(cell: Cell, flip_rate: float) -> dict:
    row = copy.deepcopy(template_row(cell.scenario))
    row.update(scenario=cell.scenario, variant=cell.variant, seed=cell.seed, repro_seconds=1.0,
               ran_on={"host": "h", "pid": 1, "worker": None})
    row["evaluate"]["unpatched"]["flip_rate"] = flip_rate
    return row


def test_the_grid_is_scenario_by_variant_by_seed_in_table_order():
    cells = expand_grid(bench.VARIANTS, ["text-fairness", "tabular-fairness"], ["sex", "default"], ["1", 0, "1"])
    assert [(c.scenario, c.variant, c.seed) for c in cells] == [
        ("text-fairness", "default", 1), ("text-fairness", "default", 0),
        ("tabular-fairness", "sex", 1), ("tabular-fairness", "sex", 0)]
    assert cells[0].name == "text-fairness-default-seed1"
    assert cells[0].overrides == {"seed": 1, "scenarios": {"text-fairness": {}}}
    # Without seeds: params.yaml's own seed, one cell per variant, the variant's own seed kept.
    plain = expand_grid(bench.VARIANTS, ["text-backdoor"])
    assert [(c.label, c.overrides.get("seed")) for c in plain][:3] == [("default", None), ("seed-1", 1), ("seed-2", 2)]
    assert [c.label for c in plain] == list(bench.VARIANTS["text-backdoor"])  # table order, one cell each
    # With seeds, variants that are a seed of their own step aside unless named.
    assert [c.label for c in expand_grid(bench.VARIANTS, ["text-backdoor"], seeds=[3])] == ["default-seed3"]
    assert [c.label for c in expand_grid(bench.VARIANTS, ["vision-backdoor"], seeds=[3])] == [
        "corner-seed3", "value-borne-seed3", "checker-seed3", "random-seed3", "blend-seed3"]


@pytest.mark.parametrize("args, message", [
    (["--scenarios", "nope"], "scenarios: expected names from vision-backdoor, "),
    (["--scenarios", "text-fairness", "--variants", "sex"], "variants: 'sex' is not a variant of text-fairness"),
    (["--seeds", "0", "-1"], "seeds: expected integers >= 0, got '-1'"),
    (["--scenarios", "text-backdoor", "--variants", "seed-1", "--seeds", "0"], "variants: text-backdoor seed-1 sets its own seed (1)"),
    (["--profile", "huge"], "--profile huge: "),
    (["--threads", "0"], "threads: expected at least 1, got 0"),
    (["--workers", "2", "--address", "tcp://127.0.0.1:8786"], "give a scheduler address or a number of local workers, not both"),
    (["--workers", "0"], "workers: expected at least 1, got 0"),
])
def test_bad_arguments_are_named_before_anything_runs(args, message, monkeypatch):
    import sweep

    monkeypatch.setattr(sweep, "sweep", None)  # reaching the flow would be a TypeError, not the message
    with pytest.raises(Exception, match="^" + re.escape(message)) as err:
        sweep.main(args)
    assert "\n" not in str(err.value)


def test_the_command_forwards_the_grid_and_its_errors_are_one_line(tmp_path):
    from atpatch.cli import app

    # --root: an earlier CLI call in this process may have set ATPATCH_ROOT to a project of its own.
    result = CliRunner().invoke(app, ["sweep", "--root", str(REPO), "--scenarios", "tabular-fairness,text-fairness",
                                      "--seeds", "0", "--seeds", "1", "--profile", "small", "--workers", "2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (f"flows/sweep.py --scenarios tabular-fairness text-fairness --seeds 0 1 --profile small --workers 2"
            in " ".join(result.output.split()))
    # As a user runs it: the flow's own error line, the exit code passed on, nothing else on stderr.
    proc = subprocess.run([sys.executable, "-m", "atpatch.cli", "sweep", "--root", str(REPO), "--seeds", "x"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == ["error: seeds: expected integers >= 0, got 'x'"]


def test_publishing_merges_cells_by_variant_and_seed_into_one_file_and_an_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ATPATCH_ROOT", str(tmp_path))
    results = tmp_path / "results" / "tabular-fairness.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"command": "earlier", "results": [template_row()]}))  # variant sex, no seed
    cells = expand_grid(bench.VARIANTS, ["tabular-fairness"], ["sex"], [0, 1])
    bench.publish([fake_row(c, 0.5 + c.seed) for c in cells], "flows/sweep.py --seeds 0 1", tmp_path)

    rows = json.loads(results.read_text())["results"]
    assert [(r.get("seed"), r["command"]) for r in rows] == [
        (None, "earlier"), (0, "flows/sweep.py --seeds 0 1"), (1, "flows/sweep.py --seeds 0 1")]
    assert [r["evaluate"]["unpatched"]["flip_rate"] for r in rows[1:]] == [0.5, 1.5]
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "| sex-seed1 | unpatched |" in markdown and "| sex | unpatched |" in markdown
    from mlflow import MlflowClient

    client = MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("atpatch").experiment_id])
    assert run.info.run_name == "benchmark:tabular-fairness"
    assert run.data.metrics["sex-seed1.unpatched.flip_rate"] == 1.5 and "sex.unpatched.flip_rate" in run.data.metrics


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect")))
        with prefect_test_harness(server_startup_timeout=90):
            yield


def test_a_failing_cell_is_retried_then_named_and_the_other_cells_are_written(prefect_api, tmp_path, monkeypatch):
    import sweep
    from prefect.task_runners import ThreadPoolTaskRunner

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ATPATCH_ROOT", str(tmp_path))
    attempts = {}

    def run_cell(cell, profile, root, threads, reuse):
        attempts[cell.name] = attempts.get(cell.name, 0) + 1
        if cell.scenario == "text-fairness":
            raise RuntimeError(f"{cell.scenario} {cell.label}: dvc repro failed at stage generate\nmore lines")
        return fake_row(cell, 0.25)

    monkeypatch.setattr(sweep, "run_cell", run_cell)
    monkeypatch.setattr(sweep, "sweep_cell", sweep.sweep_cell.with_options(retry_delay_seconds=0))
    cells = expand_grid(bench.VARIANTS, ["tabular-fairness", "text-fairness"], ["sex", "default"], [0, 1])
    flow = sweep.sweep.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    with pytest.raises(RuntimeError) as err:
        flow(cells, "small", str(tmp_path / "work"), out=str(tmp_path))
    assert str(err.value) == ("2 of 4 cells failed after 2 retries (the other cells' results are written): "
                              "text-fairness default-seed0: dvc repro failed at stage generate; "
                              "text-fairness default-seed1: dvc repro failed at stage generate")
    assert attempts == {c.name: 1 + sweep.CELL_RETRIES if c.scenario == "text-fairness" else 1 for c in cells}
    rows = json.loads((tmp_path / "results" / "tabular-fairness.json").read_text())["results"]
    assert [(r["variant"], r["seed"]) for r in rows] == [("sex", 0), ("sex", 1)]
    assert not (tmp_path / "results" / "text-fairness.json").exists()
