"""The engine's default thread count follows the CPUs the process may use: affinity and the
cgroup quota, read from fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from prsm.engines.cpus import cgroup_quota, usable_cpus


def v2_tree(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, limit in limits.items():
        directory = root / relative.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(limit + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


@pytest.mark.parametrize(
    ("limits", "affinity", "expected"),
    [
        ({"/kubepods/pod/ctr": "150000 100000", "/kubepods/pod": "max 100000"}, 8, 2),
        ({"/kubepods/pod/ctr": "max 100000", "/kubepods/pod": "100000 100000"}, 8, 1),
        ({"/kubepods/pod/ctr": "50000 100000"}, 8, 1),
        ({"/kubepods/pod/ctr": "400000 100000"}, 2, 2),
        ({"/kubepods/pod/ctr": "max 100000"}, 6, 6),
    ],
)
def test_a_cgroup_v2_quota_caps_the_cpus(
    tmp_path: Path, limits: dict[str, str], affinity: int, expected: int
) -> None:
    """The smallest quota on the way up, rounded up, capped by affinity (`--cpus 1.5` → 2)."""
    root, proc = v2_tree(tmp_path, "/kubepods/pod/ctr", limits)
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=lambda: affinity) == expected


def test_a_cgroup_v1_quota_is_read_too(tmp_path: Path) -> None:
    """cgroup v1: cpu.cfs_quota_us over cpu.cfs_period_us; -1 means no quota."""
    root = tmp_path / "cgroup"
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:cpu,cpuacct:/\n")
    assert cgroup_quota(root, proc) == 1.0
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=lambda: 4) == 1
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(cgroup_root=root, proc_cgroup=proc, affinity=lambda: 4) == 4


def test_nothing_readable_means_the_affinity(tmp_path: Path) -> None:
    """No cgroup files at all (not Linux, a locked-down /sys): the affinity alone."""
    missing = tmp_path / "none"
    assert cgroup_quota(missing, missing) is None
    assert usable_cpus(cgroup_root=missing, proc_cgroup=missing, affinity=lambda: 3) == 3
