"""The worker's logging: SAQ's lines about jobs carry no prompt or callback URL, and a Redis
outage is one warning."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq import Job

from prsm.jobs.worker import REDIS_OUTAGES  # importing it installs the filters on SAQ's logger


def test_saq_error_lines_do_not_print_job_arguments(caplog: pytest.LogCaptureFixture) -> None:
    """SAQ logs `Error processing job <job>` with the job's repr, and at debug level the job's
    full text (its kwargs): the lines keep the job's key and function, not the prompt or the
    callback URL."""
    job = Job(
        function="run_query",
        kwargs={"data": {"prompt": "my secret question"}, "callback_url": "http://127.0.0.1:9/x"},
        key="job-123",
    )
    with caplog.at_level(logging.DEBUG, logger="saq"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("saq").exception("Error processing job %s", job)
        logging.getLogger("saq").debug("Processing %s", job.info(full=True))
    assert caplog.text.count("job-123") == 2
    assert caplog.text.count("run_query") == 2
    assert "run_query" in caplog.text
    assert "my secret question" not in caplog.text
    assert "127.0.0.1:9/x" not in caplog.text


def test_a_redis_outage_is_one_warning_not_a_traceback_a_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nine upkeep failures while Redis is away: one warning without a traceback; once Redis
    has answered, the next outage is said again. Other errors keep their traceback."""
    saq = logging.getLogger("saq")

    def upkeep_fails(error: Exception) -> None:
        try:
            raise error
        except Exception:
            saq.exception("Upkeep task failed unexpectedly")

    with caplog.at_level(logging.INFO):
        for _ in range(9):
            upkeep_fails(RedisTimeoutError("Timeout reading from socket"))
        REDIS_OUTAGES.answered()
        upkeep_fails(RedisConnectionError("Connection refused"))
        upkeep_fails(RuntimeError("a bug"))
        REDIS_OUTAGES.answered()
    outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in outages] == [("WARNING", None)] * 2
    assert "TimeoutError: Timeout reading from socket" in outages[0].getMessage()
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 2
    [bug] = [r for r in caplog.records if r.exc_info]
    assert isinstance(bug.exc_info[1], RuntimeError)  # type: ignore[index]
