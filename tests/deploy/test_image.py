"""The container image, run with podman as Kubernetes would run it: non-root, read-only root,
one image for Redis (the chart's embedded one), API, worker and gateway in one pod; the real
model answers through the gateway, a job runs, and `podman stop` drains without losing a query.

`make deploy-check` builds the image (`make image`) before these run."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.deploy.conftest import ROOT
from tests.support import free_port, metric, wait_for

pytestmark = pytest.mark.deploy

IMAGE = os.environ.get("PRSM_IMAGE", "localhost/prsm") + ":latest"
SIZE_GOAL_BYTES = 560_000_000
"""450 MB with the chat model alone; the embedding model's file (83 MB zipped) and its
tokenizer (8 MB) come on top."""
KEY = "image-test-key"
PODMAN_ENV = os.environ | {"CONTAINERS_CONF": str(ROOT / "deploy/image/containers.conf")}


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, env=PODMAN_ENV
    )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    pod: str
    api_url: str
    gateway_url: str

    def container(self, part: str) -> str:
        return f"{self.pod}-{part}"


@pytest.fixture(scope="module")
def image(podman_binary: str) -> str:
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: `make image` builds it")
    return IMAGE


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    """One pod, loopback between its containers, API and gateway ports published on the host's
    loopback; every container read-only, as UID 10001 (the image's own user)."""
    pod = f"prsm-test-{os.getpid()}"
    api_port, gateway_port = free_port(), free_port()
    podman("pod", "create", "--name", pod, "-p", f"127.0.0.1:{api_port}:8000",
           "-p", f"127.0.0.1:{gateway_port}:3000")  # fmt: skip
    common = ["run", "-d", "--pod", pod, "--read-only", "--cap-drop=ALL",
              "--security-opt=no-new-privileges"]  # fmt: skip
    settings = ["-e", "PRSM_REDIS_URL=redis://127.0.0.1:6379/0", "-e", f"PRSM_API_KEYS={KEY}"]
    try:
        # The chart's embedded Redis: redis-server from the same image.
        podman(*common, "--name", f"{pod}-redis", "--entrypoint", "redis-server", image,
               "--port", "6379", "--save", "", "--appendonly", "no")  # fmt: skip
        podman(*common, "--name", f"{pod}-api", *settings, "-e", f"PRSM_API_KEY={KEY}", image,
               "serve")  # fmt: skip
        podman(*common, "--name", f"{pod}-worker", *settings, "-e", f"PRSM_API_KEY={KEY}",
               "-e", "PRSM_JOBS__CALLBACK_SECRET=image-test-secret", image, "worker")  # fmt: skip
        podman(*common, "--name", f"{pod}-gateway", *settings, image, "gateway")
        stack = Stack(pod, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gateway_port}")
        wait_for(lambda: answers(stack.api_url + "/ready"), 120)
        wait_for(lambda: answers(stack.gateway_url + "/ready"), 60)
        yield stack
    finally:
        podman("pod", "rm", "--force", "--time", "0", pod, check=False)


def query(base_url: str, path: str, max_tokens: int = 24) -> httpx.Response:
    body = {"prompt": "What is the capital of France?", "userId": "u1", "maxTokens": max_tokens}
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(base_url + path, json=body, headers=headers, timeout=120)


def test_image_is_small_labelled_and_non_root(image: str) -> None:
    """Under the 560 MB goal (both models inside); OCI labels for source, version and
    licence; runs as UID 10001;
    `prsm` is the entrypoint."""
    [inspected] = json.loads(podman("image", "inspect", image).stdout)
    assert inspected["Size"] < SIZE_GOAL_BYTES, f"{inspected['Size'] / 1e6:.0f} MB"
    config = inspected["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert "org.opencontainers.image.source" in labels
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["prsm"]


def test_no_compiler_and_no_pip_in_the_runtime(image: str) -> None:
    """The runtime stage carries no compiler and no pip."""
    probe = "command -v cc gcc g++ pip pip3 || echo none"
    found = podman("run", "--rm", "--entrypoint", "sh", image, "-c", probe).stdout.strip()
    assert found == "none"


def test_containers_run_as_uid_10001_on_a_read_only_root(stack: Stack) -> None:
    """Inside the API container: UID 10001; / is read-only, /tmp writable."""
    api = stack.container("api")
    assert podman("exec", api, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", api, "touch", "/opt/prsm/x", check=False).returncode != 0
    podman("exec", api, "touch", "/tmp/writable")  # noqa: S108 (inside the container)


def test_the_real_model_answers_directly_and_through_the_gateway(stack: Stack) -> None:
    """The API on its published port, and the gateway's /api/ai route, answer with the model."""
    direct = query(stack.api_url, "/api/v1/query")
    via_gateway = query(stack.gateway_url, "/api/ai/query")
    for response in (direct, via_gateway):
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["answer"]
        assert data["model"].startswith("SmolLM2")


def test_a_job_runs_on_the_worker(stack: Stack) -> None:
    """A job submitted through the gateway is run by the worker container against the API."""
    headers = {"Authorization": f"Bearer {KEY}"}
    job = {"type": "priority-query", "data": {"prompt": "Say hi.", "userId": "u1", "maxTokens": 8}}
    submitted = httpx.post(stack.gateway_url + "/api/v1/jobs", json=job, headers=headers)
    assert submitted.status_code == 202, submitted.text
    status_url = stack.gateway_url + f"/api/v1/jobs/{submitted.json()['jobId']}"

    def complete() -> bool:
        return httpx.get(status_url, headers=headers).json()["status"] == "complete"

    wait_for(complete, 60)
    assert httpx.get(status_url, headers=headers).json()["result"]["answer"]


def test_podman_stop_drains_queries_in_flight(stack: Stack) -> None:
    """Three long queries decoded together, `podman stop`: all three 200, exit code 0, well
    inside the stop timeout (runs last: it stops the API)."""
    results: list[object] = []

    def ask() -> None:
        try:
            results.append(query(stack.api_url, "/api/v1/query", max_tokens=120).status_code)
        except httpx.HTTPError as exc:
            results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: metric(stack.api_url, "prsm_engine_in_flight") == 3, 30)
    started = time.monotonic()
    podman("stop", "--time", "60", stack.container("api"))
    stopped_after = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200, 200, 200]
    inspected = podman("inspect", stack.container("api"), "--format", "{{.State.ExitCode}}")
    assert inspected.stdout.strip() == "0"
    assert stopped_after < 60


def test_the_engine_runs_as_many_threads_as_its_cpu_limit(image: str) -> None:
    """`podman run --cpus 1`: the engine reads the cgroup quota, not the host's cores, runs one
    thread, and says so when it starts."""
    name = f"prsm-cpus-{os.getpid()}"
    podman("run", "-d", "--name", name, "--cpus", "1", "--read-only", "--cap-drop=ALL",
           "-e", f"PRSM_API_KEYS={KEY}", image, "serve")  # fmt: skip
    try:

        def started() -> list[dict[str, object]]:
            lines = (
                podman("logs", name).stdout.splitlines() + podman("logs", name).stderr.splitlines()
            )
            return [
                json.loads(line)
                for line in lines
                if line.startswith("{") and '"engine threads"' in line
            ]

        wait_for(lambda: started() != [], 120)
        [entry] = started()[:1]
        assert entry["threads"] == 1
        assert entry["source"] == "CPU affinity and cgroup quota"
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
