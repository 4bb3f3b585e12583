from __future__ import annotations

from prsm.resilience.clock import ManualClock
from prsm.sd.outliers import OutlierDetector


def detector(clock: ManualClock) -> OutlierDetector:
    return OutlierDetector(
        consecutive_failures=3, base_ejection_seconds=10, max_ejection_seconds=25, clock=clock
    )


def test_consecutive_failures_eject_and_success_resets() -> None:
    """Two failures, a success, two failures: not ejected; a third in a row ejects."""
    outliers = detector(ManualClock())
    for _ in range(2):
        outliers.failure("a", pool_size=4)
    outliers.success("a")
    assert not outliers.failure("a", 4)
    assert not outliers.failure("a", 4)
    assert outliers.failure("a", 4)
    assert outliers.ejected() == {"a"}


def test_ejection_grows_each_time_up_to_the_cap() -> None:
    """Ejections last 10 s, then 20 s, then at most 25 s; the instance comes back after."""
    clock = ManualClock()
    outliers = detector(clock)
    for expected in (10, 20, 25):
        for _ in range(3):
            outliers.failure("a", 4)
        clock.advance(expected - 0.5)
        assert outliers.ejected() == {"a"}
        clock.advance(0.5)
        assert outliers.ejected() == set()


def test_never_more_than_the_allowed_share_of_the_pool() -> None:
    """In a pool of 4 at most half may be out: the third failing instance stays in."""
    outliers = detector(ManualClock())
    for name in ("a", "b", "c"):
        for _ in range(3):
            outliers.failure(name, pool_size=4)
    assert outliers.ejected() == {"a", "b"}


def test_a_pool_of_one_can_still_eject_its_instance() -> None:
    """At least one instance may be ejected, whatever the share."""
    outliers = detector(ManualClock())
    for _ in range(3):
        outliers.failure("only", pool_size=1)
    assert outliers.ejected() == {"only"}
