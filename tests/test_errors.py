from __future__ import annotations

import pytest

from prsm import errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (413, errors.PayloadTooLargeError),
        (422, errors.ValidationError),
        (429, errors.RateLimitedError),
        (503, errors.ServiceUnavailableError),
        (504, errors.GatewayTimeoutError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (418, errors.HTTPStatusError),
    ],
)
def test_error_for_status_picks_the_class(status: int, cls: type[errors.HTTPStatusError]) -> None:
    """Each status maps to its branch of the tree and keeps the status itself."""
    error = errors.error_for_status(status, "m", correlation_id="c", retry_after=2)
    assert type(error) is cls
    assert (error.status_code, error.correlation_id, error.retry_after) == (status, "c", 2)


def test_tree_has_separate_branches() -> None:
    """Transport, HTTP-status, engine and usage errors share only the root."""
    branches = [
        errors.TransportError,
        errors.HTTPStatusError,
        errors.EngineError,
        errors.UsageError,
    ]
    for branch in branches:
        assert issubclass(branch, errors.PRSMError)
        others = [b for b in branches if b is not branch]
        assert not any(issubclass(branch, other) for other in others)
    assert issubclass(errors.TimeoutError, TimeoutError)
    assert issubclass(errors.ConfigError, errors.UsageError)


def test_default_code_and_repr() -> None:
    """Without a code, the class's default is used; repr shows status and correlation id."""
    error = errors.RateLimitedError("slow down", correlation_id="abc")
    assert error.code == "rate_limited"
    assert "429" in repr(error)
    assert "abc" in repr(error)
