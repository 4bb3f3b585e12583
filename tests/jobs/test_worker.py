"""The worker's logging: SAQ's lines about jobs carry no prompt or callback URL."""

from __future__ import annotations

import logging

import pytest
from saq import Job

import prsm.jobs.worker  # noqa: F401 - installs the filter on SAQ's logger


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
