"""`python -m fhirserver.blobs.probe URL`: does the blob store at URL answer and take a write?

Run in its own interpreter by the start-up checks: the object-store client keeps a background
runtime that a later fork() (gunicorn's workers) would inherit broken, so the serving process must
not touch the store before it forks. Prints the reason on one line and exits 1 when it fails.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from fhirserver.blobs import open_store

    class _Settings:  # only the URL matters for a store outside the data folder
        blob_url = argv[0]
        data_dir = Path(argv[1] if len(argv) > 1 else ".")

    try:
        open_store(_Settings).check()
    except (ValueError, OSError) as exc:
        print((str(exc).strip().splitlines() or [type(exc).__name__])[0][:500], flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
