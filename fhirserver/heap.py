"""A started server process's heap, out of the garbage collector's way.

Everything a process builds at start (the app, its SearchParameter registry, the FHIR model
classes, compiled statements: about a hundred thousand container objects) lives as long as the
process, yet CPython's cyclic collector walks all of them again on every full collection, and
the steady allocation of serving (parsed bodies, index rows, audit batches) triggers one every
few seconds. `gc.freeze()` moves the objects alive at that moment into a permanent generation
the collector skips: measured on the audit writer, a fifth less CPU per event. Nothing is
disabled: what requests allocate is collected as before.
"""
from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then freeze what survives (call when a process has finished starting)."""
    gc.collect()
    gc.freeze()


__all__ = ["settle"]
