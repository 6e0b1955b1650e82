"""with_worker_retries: a failed attempt rebuilds the workers and runs again; repeated failures stop."""

import pytest

from tgrpo.errors import TgrpoError
from tgrpo.rollout.workers import WorkerError, with_worker_retries


class FakePool:
    def __init__(self):
        self.rebuilds = 0

    def rebuild(self):
        self.rebuilds += 1


def failing(times: int):
    calls = []

    def attempt():
        calls.append(len(calls))
        if len(calls) <= times:
            raise WorkerError(1, "step", 7, "no reply within 120 s (hung)")
        return "group"
    return attempt, calls


def test_a_failed_attempt_rebuilds_and_runs_again(capsys):
    pool = FakePool()
    attempt, calls = failing(times=2)
    assert with_worker_retries(pool, attempt, retries=3, what="evaluation rollout") == ("group", 2)
    assert len(calls) == 3 and pool.rebuilds == 2
    err = capsys.readouterr().err
    assert "evaluation rollout attempt 1 failed (no reply within 120 s (hung); env 1, step 7)" in err


def test_no_failure_runs_once():
    pool = FakePool()
    attempt, calls = failing(times=0)
    assert with_worker_retries(pool, attempt) == ("group", 0)
    assert len(calls) == 1 and pool.rebuilds == 0


def test_repeated_failures_stop_with_the_last_one_and_the_hint():
    pool = FakePool()
    attempt, calls = failing(times=5)
    with pytest.raises(TgrpoError, match=r"(?s)the demonstration rollout failed 3 times in a row.*worker 1 failed "
                                         r"during 'step' at step 7.*kept in x.jsonl"):
        with_worker_retries(pool, attempt, retries=2, what="demonstration rollout", hint="kept in x.jsonl")
    assert len(calls) == 3 and pool.rebuilds == 2  # no rebuild after the last failure
