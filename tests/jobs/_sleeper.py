"""A worker process for the kill -9 test: claims `test.sleep` jobs with a short lease, writes a
marker file, then sleeps until killed."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

from fhirserver.jobs import Registry, Worker
from fhirserver.storage import Repository, make_engine


def main(url: str, marker: str) -> None:
    repo = Repository(make_engine(url))

    def sleep_forever(ctx) -> None:  # noqa: ANN001
        Path(marker).write_text(str(ctx.job.pk))
        while True:
            time.sleep(1)

    reg = Registry()
    reg.register("test.sleep", sleep_forever, lease_seconds=1.0)
    Worker(SimpleNamespace(repo=repo), reg, threads=1, poll_seconds=0.05).start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
