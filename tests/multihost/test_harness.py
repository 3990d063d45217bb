"""The harness cleans up after a killed run: namespaces of a dead owner go at the next start."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

import multihost_harness as mh

pytestmark = pytest.mark.slow


def test_namespaces_of_a_dead_run_are_removed_and_live_ones_kept() -> None:
    why = mh.unavailable()
    if why:
        pytest.skip(why)
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not Path(f"/proc/{pid}").exists())
    stale, live = f"{mh.PREFIX}{dead}x1-lan", f"{mh.PREFIX}1x1-lan"  # pid 1 is always alive
    for ns in (stale, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    stale_dir = Path(tempfile.mkdtemp(prefix=f"{mh.PREFIX}{dead}-local-"))
    (stale_dir / "pg").mkdir()
    try:
        removed = mh.clean_leftovers()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale in removed and stale not in names
        assert live not in removed and live in names
        assert not stale_dir.exists()
    finally:
        for ns in (stale, live):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
