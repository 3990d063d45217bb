"""How associations reach the node: TCP_NODELAY on every socket, one listening socket shared
by several receiving processes, and the load board those processes use to take turns."""
from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Callable

from pynetdicom.transport import RequestHandler


def set_nodelay(event: Any) -> None:
    """TCP_NODELAY on every association socket (both directions): no 40 ms Nagle stalls."""
    try:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def listen_socket(address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket several receiving processes can share (inherited by the children)."""
    host, port = address
    family = socket.AF_INET6 if ":" in (host or "") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class LoadBoard:
    """Open associations per receiving process, in a small shared file (one uint32 slot each),
    so that the processes sharing a listening socket take turns."""

    def __init__(self, path: str, slot: int) -> None:
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self._slots = len(self._map) // 4
        self._slot = slot
        self._count = 0
        self._lock = threading.Lock()
        self._write()

    @staticmethod
    def create(path: str, processes: int) -> None:
        with open(path, "wb") as f:
            f.write(b"\x00" * 4 * processes)

    def _write(self) -> None:
        struct.pack_into("<I", self._map, 4 * self._slot, max(self._count, 0))

    def mine(self) -> int:
        return self._count

    def least(self) -> int:
        return min(struct.unpack_from(f"<{self._slots}I", self._map))

    def opened(self) -> None:
        with self._lock:
            self._count += 1
            self._write()

    def closed(self, _event: Any = None) -> None:
        with self._lock:
            self._count = max(self._count - 1, 0)
            self._write()


def server_class(base: type, listen_fd: int | None, tune: Callable[[Any], None],
                 contexts: Callable[[list], list]) -> type:
    """`base` (pynetdicom's AssociationServer) with TCP_NODELAY set at accept and, when
    `listen_fd` is given, serving an inherited listening socket shared with other processes.
    `tune(assoc)` sees every new association and `contexts` wraps the supported contexts (the
    fast path's hooks; identity functions when it is off)."""

    class _Handler(RequestHandler):
        def _create_association(self) -> Any:
            assoc = super()._create_association()
            tune(assoc)
            return assoc

    class _Server(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("request_handler") is None:
                kwargs["request_handler"] = _Handler
            super().__init__(*args, **kwargs)
            self.contexts = contexts(self.contexts)

        def server_bind(self) -> None:
            if listen_fd is None:
                super().server_bind()
                return
            fresh = self.socket
            self.socket = socket.socket(fileno=os.dup(listen_fd))
            fresh.close()
            self.socket.setblocking(False)  # another process may take a connection first
            self.server_address = self.socket.getsockname()

        def server_activate(self) -> None:
            if listen_fd is None:
                super().server_activate()

        def get_request(self) -> tuple[socket.socket, Any]:
            load = getattr(self.ae, "load", None)
            if listen_fd is not None and load is not None:
                # every receiving process is woken by a new connection: one with more
                # associations than the least busy lets that one take it (spreads the load)
                deadline = time.monotonic() + 0.2
                while load.mine() > load.least() and time.monotonic() < deadline:
                    time.sleep(0.002)
                    if not select.select([self.socket], [], [], 0)[0]:
                        raise BlockingIOError("taken by another receiving process")
            client, address = super().get_request()  # BlockingIOError (OSError): lost the race
            if load is not None:
                load.opened()
            client.setblocking(True)
            try:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return client, address

    return _Server
