"""The scale-out model of benchmarks/scale.py, and its section of RESULTS.md. A model, not a measurement.

Stage evaluate runs its passes over the test sets one after another (each waits for its merged result);
each pass is cut into shards of whole batches. In the model a shard of r rows costs `overhead + r *
row_cost[pass]` seconds: the overhead (Prefect task states, Dask scheduling, moving the rows) is paid one
shard after another, as if all of it were serial (a pessimistic assumption: part of it overlaps with other
shards' compute); the compute runs on the first free worker, shards taken in input order (as Dask hands
them out), so a pass takes as long as its busiest worker:

    T(W) = sum over passes p of ( shards_p * overhead + makespan of the shards' compute on W workers )

Both constants come from the one-worker run (`fit`): row_cost[pass] = the pass's compute seconds on the
worker / its rows; overhead = (wall time - all compute) / shards. The two-worker run then checks the model.
"""

from __future__ import annotations

import heapq

from atpatch.eval.shards import plan

PROJECTED_WORKERS = (1, 8, 64)
SWEEP_SECTION = "sweep"  # benchmarks/sweep_timing.py's key in scale.json; the rest is benchmarks/scale.py's


def shard_rows(rows: int, batch: int, shard_size: int, workers: int = 1) -> list[int]:
    """Rows of each shard of a pass, as the shard runner plans them (atpatch.eval.shards.plan)."""
    return [len(s) for s in plan(rows, batch, shard_size, workers)]


def makespan(costs: list[float], workers: int) -> float:
    """Seconds until the last of `costs` is done, each started in order on the first free of `workers`."""
    free = [0.0] * min(workers, len(costs) or 1)
    for cost in costs:
        heapq.heappush(free, heapq.heappop(free) + cost)
    return max(free)


def modelled_seconds(passes: list[dict], shard_size: int, workers: int, overhead: float, batch: int) -> float:
    """T(W) of the module docstring; passes: [{"rows", "row_cost"}]."""
    total = 0.0
    for p in passes:
        sizes = shard_rows(p["rows"], batch, shard_size, workers)
        total += len(sizes) * overhead + makespan([r * p["row_cost"] for r in sizes], workers)
    return total


def fit(run: dict) -> dict:
    """The model's constants from a run on one worker: {"passes": [{"label", "rows", "row_cost"}], "overhead"}.
    run: {"seconds" (wall time of the passes), "passes": [{"label", "rows", "shard_seconds"}]}."""
    compute = sum(sum(p["shard_seconds"]) for p in run["passes"])
    shards = sum(len(p["shard_seconds"]) for p in run["passes"])
    return {"passes": [{"label": p["label"], "rows": p["rows"], "row_cost": sum(p["shard_seconds"]) / p["rows"]}
                       for p in run["passes"]],
            "overhead": max(run["seconds"] - compute, 0.0) / shards}


def projection(model: dict, inputs: int, batch: int, shard_size: int, workers=PROJECTED_WORKERS) -> list[dict]:
    """Modelled time, throughput and speed-up for each worker count, at the measured shard size and at the
    finest one (one batch a shard, the most shards: the most workers a pass can keep busy)."""
    rows = []
    for size in dict.fromkeys((shard_size, batch)):
        base = modelled_seconds(model["passes"], size, 1, model["overhead"], batch)
        for w in workers:
            t = modelled_seconds(model["passes"], size, w, model["overhead"], batch)
            rows.append({"workers": w, "shard_size": size,
                         "shards_per_pass": max(len(shard_rows(p["rows"], batch, size, w)) for p in model["passes"]),
                         "seconds": t, "inputs_per_s": inputs / t, "speedup": base / t, "efficiency": base / t / w})
    return rows


def markdown(result: dict) -> str:
    """The scale-out section of RESULTS.md from benchmarks/results/scale.json."""
    runs = {r["workers"]: r for r in result["runs"]}
    per, batches = result["per_shard"], result["shard_size"] // result["batch_size"]
    lines = [
        "## Scale-out: sharded evaluate on Dask (vision-backdoor)\n",
        f"Made by `.venv/bin/python {result['command']}` ({result['cpus']} cores, {result['threads']} torch thread "
        f"per shard, shards of {result['shard_size']} rows = {batches} batch{'es' if batches > 1 else ''}). "
        f"Stage evaluate's passes over the test sets ({result['inputs']['clean']:,} clean + "
        f"{result['inputs']['triggered']:,} triggered images: {', '.join(result['passes'])}), through "
        "flows/sharded.py's shard task on a local Dask cluster; the stage's serial work (latency timing, bootstrap, "
        "figures) is not in it. Results identical bit for bit across the runs: "
        f"{'yes' if result['identical'] else '**no**'}.\n",
        "| run | seconds | inputs/s | speed-up vs 1 worker | shards | seconds per shard (median) |",
        "|---|---|---|---|---|---|",
        f"| in process, no Dask | {result['serial']['seconds']:.1f} | {result['serial']['inputs_per_s']:.0f} | "
        f"{runs[1]['seconds'] / result['serial']['seconds']:.2f} | | |",
    ]
    for w, r in sorted(runs.items()):
        lines.append(f"| {w} worker{'s' if w > 1 else ''} | {r['seconds']:.1f} | {r['inputs_per_s']:.0f} | "
                     f"{runs[1]['seconds'] / r['seconds']:.2f} | {r['shards']} | {r['shard_seconds_median']:.3f} |")
    target = (f" Target: 2 workers at least {result['target_speedup']}x one worker: {result['speedup_2']:.2f}x, "
              f"{'met' if result['target_met'] else '**missed**'}." if "speedup_2" in result else "")
    check = result["model"].get("check")
    checked = (f"; fitted on the one-worker run, it gives {check['modelled_s']:.1f} s for 2 workers against "
               f"{check['measured_s']:.1f} s measured" if check else "; fitted on the one-worker run")
    lines += [
        "",
        f"Per shard, measured: compute {per['cost_s']:.3f} s on average; overhead {per['overhead_s']:.3f} s "
        f"(wall time of the one-worker run less its compute, per shard: scheduling, Prefect task states, moving "
        f"the rows); an empty shard (one row) takes {per['empty_round_trip_s']:.3f} s from submission to its "
        f"merged result.{target}\n",
        f"**Projection (a model, not a measurement;** benchmarks/scale_model.py): each pass costs, per shard, the "
        f"overhead, paid serially, plus its rows' compute on the first free worker{checked}.\n",
        "| workers | shard size | shards per pass | modelled seconds | modelled inputs/s | modelled speed-up | efficiency |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {p['workers']} | {p['shard_size']} | {p['shards_per_pass']} | {p['seconds']:.1f} | "
              f"{p['inputs_per_s']:.0f} | {p['speedup']:.2f} | {100 * p['efficiency']:.0f}% |"
              for p in result["model"]["projection"]]
    return "\n".join(lines) + "\n"


def sweep_markdown(section: dict) -> str:
    """The sweep-timing section of RESULTS.md (scale.json's SWEEP_SECTION, benchmarks/sweep_timing.py)."""
    lines = [
        f"## Scale-out: a {len(section['cells'])}-cell sweep on {section['workers']} Dask workers\n",
        f"Made by `.venv/bin/python {section['command']}` ({section['profile']} profile, each cell the pipeline "
        f"from scratch in its own workspace). Serially, one cell after another with {section['serial_threads']} "
        f"torch threads each (the machine's cores, as a user runs them); on the local cluster, {section['threads']} "
        "thread per cell, one cell per worker.\n",
        "| cell | serial seconds | on the cluster, seconds |", "|---|---|---|"]
    lines += [f"| {c['scenario']} {c['cell']} | {c['serial_seconds']:.0f} | {c['parallel_seconds']:.0f} |"
              for c in section["cells"]]
    verdict = "met" if section["met"] else "**missed**"
    lines += ["", f"Wall time: serial {section['serial_seconds']:.0f} s, {section['workers']} workers "
                  f"{section['parallel_seconds']:.0f} s, ratio {section['ratio']:.2f}; target at most "
                  f"{section['target_ratio']}: {verdict}.\n"]
    return "\n".join(lines)
