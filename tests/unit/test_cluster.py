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
