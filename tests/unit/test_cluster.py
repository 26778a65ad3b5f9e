import pytest

from atpatch.ops.cluster import THREADS_PER_WORKER, task_runner


def test_local_cluster_runs_one_task_per_worker():
    runner = task_runner(workers=3)
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == THREADS_PER_WORKER == 1


def test_an_address_means_an_existing_scheduler():
    assert task_runner(address="tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize("address, workers, needle", [("tcp://h:1", 2, "not both"), (None, 0, "at least 1")])
def test_bad_runner_requests_are_one_line_errors(address, workers, needle):
    with pytest.raises(ValueError, match=needle):
        task_runner(address, workers)


def test_a_sweep_cell_does_not_inherit_dasks_allocator_setting():
    from atpatch.ops.cluster import DASK_MALLOC_VAR, without_dask_malloc_trim

    assert without_dask_malloc_trim({DASK_MALLOC_VAR: "65536", "PATH": "/bin"}) == {"PATH": "/bin"}


def test_the_allocator_is_reset_only_in_a_process_dask_started_with_its_setting():
    import subprocess
    import sys

    from atpatch.ops.cluster import DASK_MALLOC_VAR

    code = "from atpatch.ops.cluster import undo_dask_malloc_trim as u; print(u(), u())"
    for env, want in (({DASK_MALLOC_VAR: "65536"}, "True True"), ({}, "False False")):
        out = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                             text=True, check=True).stdout.split("\n")[0]
        assert out == want
