from __future__ import annotations

from pathlib import Path

import pytest
import redis

from prsm.embedded_redis import EmbeddedRedis


def test_serves_tcp_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    """A real server on loopback; data written before a stop is there after a start."""
    server = EmbeddedRedis(tmp_path / "data")
    with server as url:
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert client.info("server")["redis_version"].startswith("6.2")
        client.close()
    assert not server.running
    with server as url:
        client = redis.Redis.from_url(url)
        assert client.get("k") == b"v"
        client.close()


def test_port_in_use_fails_clearly(tmp_path: Path) -> None:
    """A second server on a taken port raises instead of hanging."""
    with EmbeddedRedis(tmp_path / "a") as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(Exception, match="redis-server"):
            EmbeddedRedis(tmp_path / "b", port=port).start()
