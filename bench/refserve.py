"""What the bench's reference apps (`bench.bare_app`, `bench.search_ref`) share: their command
line's server options and the gunicorn configuration they run under.

The configuration is `fhirserver serve`'s (gthread workers, the same threads, timeout and
keep-alive, no access log) without the server's own worker class and logger, so that a reference
measures only what it is meant to: Flask, Werkzeug and gunicorn (and, for search, the SQL).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable


def parser(prog: str) -> argparse.ArgumentParser:
    """The options every reference takes: where it listens and how many workers and threads."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    return p


def serve(args: argparse.Namespace, load: Callable[[], Any]) -> None:
    """Run the WSGI app `load()` makes (in each worker) until stopped."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):  # the same settings as fhirserver.cli.cmd_serve
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 120)
            self.cfg.set("keepalive", 30)
            self.cfg.set("accesslog", None)

        def load(self) -> Any:
            return load()

    _Server().run()
