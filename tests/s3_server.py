"""A real S3-compatible server for the tests: moto's server (`moto[server]`) on a free loopback
port, with a fresh bucket per test. The blob store talks to it over HTTP exactly as to AWS S3 or
MinIO (signed requests, multipart uploads, ranged reads)."""
from __future__ import annotations

import logging
import os
import urllib.request
import uuid

from moto.server import ThreadedMotoServer

# the standard AWS variables, as an operator sets them (moto accepts any credentials)
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoS3:
    """One moto S3 server; `start`/`stop` may be called again (a store that goes down)."""

    def __init__(self, port: int) -> None:
        for k, v in AWS_ENV.items():
            os.environ.setdefault(k, v)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> "MotoS3":
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def bucket(self, prefix: str = "fhir") -> str:
        """A new empty bucket; its blob URL."""
        name = f"b-{uuid.uuid4().hex[:20]}"
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=10).close()
        return f"s3://{name}/{prefix}?endpoint={self.endpoint}"
