"""A cell's time limit and retries under a scheduler (llmbench.run.limits), no cluster needed."""

from __future__ import annotations

import os
import time
from datetime import datetime

import pytest

from llmbench.run.limits import (
    CELL_ATTEMPTS_VARIABLE,
    cell_attempts,
    effective_timeout,
    export_cell_attempts,
    fail_for_retry,
    parse_slurm_time,
    slurm_job_time_left,
)

RETRIES = 2  # as profiles/slurm/config.yaml (tests/test_slurm.py checks the profile)


@pytest.mark.parametrize(
    "status, attempt, attempts, retry",
    [
        ("crashed", 1, 3, True),
        ("crashed", 2, 3, True),
        ("crashed", 3, 3, False),  # the last attempt keeps the crashed cell
        ("crashed", 1, 1, False),  # no retries configured (a local run)
        ("timeout", 1, 3, False),  # a verdict: retrying would time out again
        ("oom", 1, 3, False),
        ("ok", 1, 3, False),
    ],
)
def test_only_a_crashed_cell_with_attempts_left_fails_its_job(status, attempt, attempts, retry):
    assert fail_for_retry(status, attempt, attempts) is retry


def test_cells_learn_the_attempts_through_the_environment(monkeypatch):
    monkeypatch.delenv(CELL_ATTEMPTS_VARIABLE, raising=False)
    assert cell_attempts() == 1  # nobody said: a crashed cell is kept at once
    export_cell_attempts(retries=RETRIES)
    assert cell_attempts() == RETRIES + 1


@pytest.mark.parametrize(
    "cell_timeout_s, runtime_min, time_left_s, expected",
    [
        (1800, 40, 2390, 1800),  # the profile's runtime leaves the configured limit alone
        (1800, 40, 100, 40),  # late in the job: what is left, less the margin
        (1800, None, 30, 27),  # time left without a runtime: 10 % margin
        (1800, 1, None, 54),  # runtime only, as before
        (1800, 1, 2, 1),  # never below one second
    ],
)
def test_time_limit_counts_the_time_left_in_the_job(
    cell_timeout_s, runtime_min, time_left_s, expected
):
    assert effective_timeout(cell_timeout_s, runtime_min, time_left_s) == pytest.approx(expected)


def test_slurm_times_parse_in_local_time():
    assert (
        parse_slurm_time("2026-11-25T19:42:09\n") == datetime(2026, 11, 25, 19, 42, 9).timestamp()
    )
    assert parse_slurm_time("N/A") is None and parse_slurm_time("Unknown") is None
    assert parse_slurm_time("") is None


def test_time_left_comes_from_squeue_inside_a_slurm_job(tmp_path, monkeypatch):
    assert slurm_job_time_left({}) is None  # not a Slurm job
    end = datetime.fromtimestamp(time.time() + 600).strftime("%Y-%m-%dT%H:%M:%S")
    squeue = tmp_path / "squeue"
    squeue.write_text(f'#!/bin/sh\n[ "$3" = 4242 ] && echo {end}\n')
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm_job_time_left({"SLURM_JOB_ID": "4242"}) == pytest.approx(600, abs=5)
    assert slurm_job_time_left({"SLURM_JOB_ID": "7"}) is None  # squeue does not know it


@pytest.mark.parametrize(
    "timeout, runtime_min, expected",
    [(1800, None, 1800), (1800, 10, 540), (60, 10, 60), (1800, 1, 54)],
)
def test_effective_timeout_leaves_room_before_the_scheduler_kills(timeout, runtime_min, expected):
    assert effective_timeout(timeout, runtime_min) == pytest.approx(expected)
