"""The repository stands alone: a clone with nothing beside it has all it needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = f"../{'shared'}"  # spelled so that this file does not match itself


def test_no_tracked_file_reaches_outside_the_checkout() -> None:
    """No test, script or document refers to a folder beside the repository."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "docs/architecture.md" in tracked
    reaching = []
    for name in tracked:
        path = ROOT / name
        small = path.is_file() and path.stat().st_size < 2_000_000
        if small and OUTSIDE in path.read_text(encoding="utf-8", errors="ignore"):
            reaching.append(name)
    assert reaching == []


def test_the_readme_links_the_architecture_inside_the_repository() -> None:
    """The README's design link resolves inside the checkout."""
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme
