"""`python -m fhirserver.subscriptions`: the delivery worker alone (any machine that reaches the
database); `serve` starts one as a child process and starts it again if it dies."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from fhirserver.config import settings_from_env
from fhirserver.services import build_services
from fhirserver.subscriptions.worker import Worker


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fhirserver.subscriptions",
                                description="deliver topic-based Subscription notifications")
    p.add_argument("--database-url")
    p.add_argument("--data-dir")
    p.add_argument("--base-url")
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    settings = settings_from_env(database_url=args.database_url, data_dir=Path(args.data_dir) if args.data_dir else None, base_url=args.base_url)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    services = build_services(settings, upgrade_schema=True)
    worker = Worker(services.repo, settings)

    def _stop(_signum: int, _frame: Any) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.exit_with_parent:
        parent = os.getppid()

        def _watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            worker.stop()

        threading.Thread(target=_watch, daemon=True).start()
    print("fhirserver: subscription worker started", file=sys.stderr, flush=True)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
