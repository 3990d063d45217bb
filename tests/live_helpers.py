"""Helpers of the tests that run servers or wait on background work (the live server, the DICOM
node, subscription deliveries): one copy instead of one per test folder. A uniquely named module
on the test path (the test folders are not packages)."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """The first true value of `fn()`, polled until `timeout` seconds have passed (then the test
    fails): background work (a delivery, a stored scan) is seen when it is done, not after a
    fixed sleep."""
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)
