"""How many CPUs this process may actually use: the smaller of its CPU affinity and its
cgroup's CPU quota (what `podman --cpus 1` or a Kubernetes CPU limit sets), not the host's
core count, which is what `os.cpu_count()` gives inside a container.

>>> usable_cpus() >= 1
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(
    *,
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    affinity: Callable[[], int] | None = None,
) -> int:
    """CPUs the process may run on (affinity), capped by the cgroup quota rounded up; at
    least 1."""
    allowed = (affinity or _affinity)()
    quota = cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        allowed = min(allowed, max(1, math.ceil(quota)))
    return max(1, allowed)


def cgroup_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota in CPUs (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us` over
    `cpu.cfs_period_us`) of the process's cgroup and its ancestors, the smallest; None when
    there is none or it cannot be read."""
    quotas = _v2_quotas(cgroup_root, proc_cgroup) or _v1_quotas(cgroup_root)
    return min(quotas) if quotas else None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _v2_quotas(root: Path, proc_cgroup: Path) -> list[float]:
    relative = _own_cgroup(proc_cgroup)
    if relative is None:
        return []
    quotas = []
    directory = root / relative.lstrip("/")
    while True:
        quota = _read_v2(directory / "cpu.max")
        if quota is not None:
            quotas.append(quota)
        if directory == root or root not in directory.parents:
            return quotas
        directory = directory.parent


def _read_v2(path: Path) -> float | None:
    try:
        limit, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    try:
        return int(limit) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quotas(root: Path) -> list[float]:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        directory = root / name
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return [quota / period]
    return []


def _own_cgroup(proc_cgroup: Path) -> str | None:
    """The cgroup path of the v2 hierarchy (`0::/path`) in /proc/self/cgroup."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if number == "0" and not controllers:
            return path
    return None
