"""SyncServiceClient: the async pipeline, called from blocking threads."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prsm.client.service_sync import SyncServiceClient
from prsm.sd import StaticDiscovery
from tests.support import API_KEY, fixed_instances, free_port


def test_threads_share_the_pipeline_and_fail_over(tmp_path: Path) -> None:
    """Two live instances and one dead address, 30 calls from 6 threads: every call answers,
    and only the live instances answer."""
    with fixed_instances(tmp_path, "ab") as servers:
        dead = f"http://127.0.0.1:{free_port()}"
        urls = [servers["a"].base_url, dead, servers["b"].base_url]
        with (
            SyncServiceClient(StaticDiscovery(urls), api_key=API_KEY, timeout=5) as prsm,
            ThreadPoolExecutor(6) as pool,
        ):
            answers = list(pool.map(lambda _: prsm.query("hi", user_id="u").answer, range(30)))
            health = prsm.health()
            assert len(prsm.instances) == 3
    counts = Counter(answers)
    assert set(counts) == {"a", "b"}
    assert sum(counts.values()) == 30
    assert health.status == "healthy"


def test_a_closed_client_says_so() -> None:
    prsm = SyncServiceClient(StaticDiscovery([f"http://127.0.0.1:{free_port()}"]))
    prsm.close()
    prsm.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        prsm.query("hi", user_id="u")
