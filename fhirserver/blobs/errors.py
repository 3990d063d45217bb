"""The one error a blob store raises when the store itself fails (unreachable, refused, full).

An OSError, so the callers' existing "cannot write" paths (DICOM status 0xA700, STOW failure
reason, readiness) treat an object store that is down like a full disk.
"""
from __future__ import annotations


class BlobStoreUnavailable(OSError):
    """The blob store cannot be reached or refused the operation; retrying later may work."""
