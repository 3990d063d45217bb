"""Acknowledged means on disk: a received instance's file is flushed to stable storage (its
bytes, then the folder entry its rename made) before C-STORE or STOW-RS answers success, so a
power loss or an OS crash right after the answer cannot lose what the sender was told is
stored and will not send again. An object store without local files makes its puts durable
itself (`local_path` None: nothing to do here)."""
from __future__ import annotations

import os
from typing import Any


def make_durable(store: Any, key: str) -> None:
    """fsync the stored object `key` and its folder; OSError when the disk refuses."""
    path = store.local_path(key)
    if path is None:
        return
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["make_durable"]
