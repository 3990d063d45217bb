"""A cheap closed-loop HTTP/1.1 load generator: N keep-alive connections driven by one selector loop.

Each connection sends a request, waits for the whole response, records the latency and sends the
next one (closed loop, like N concurrent clients). Requests are pre-built bytes, responses are
parsed just enough to find their end (Content-Length or chunked), so the client costs a few
microseconds per request and the same for every target: the server and the bare-Flask reference
see the identical client.
"""
from __future__ import annotations

import dataclasses
import os
import selectors
import socket
import time
from typing import Callable

RequestSource = Callable[[int], bytes]  # connection index -> next request bytes


@dataclasses.dataclass
class Result:
    """Completed requests of the measured window."""

    seconds: float
    latencies_ns: list[int]
    statuses: dict[int, int]
    errors: int
    client_cpu_s: float
    captured: list[bytes]  # whole responses (head + body) when capture=True
    total_completed: int = 0  # including the warm-up, for CPU per request

    @property
    def count(self) -> int:
        return len(self.latencies_ns)

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        xs = sorted(self.latencies_ns)
        i = min(len(xs) - 1, max(0, int(round(q / 100.0 * len(xs) + 0.5)) - 1))
        return xs[i] / 1e6

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)


def build_request(method: str, path: str, host: str, body: bytes | None = None,
                  content_type: str = "application/fhir+json", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    head += extra + "\r\n"
    return head.encode("latin-1") + (body or b"")


class _Conn:
    __slots__ = ("idx", "sock", "buf", "t0", "head_end", "need", "chunked", "status", "head")

    def __init__(self, idx: int, sock: socket.socket) -> None:
        self.idx, self.sock = idx, sock
        self.buf = bytearray()
        self.t0 = 0
        self.reset()

    def reset(self) -> None:
        self.head_end = -1
        self.need = -1
        self.chunked = False
        self.status = 0
        self.head = b""


def _chunked_end(buf: bytearray, start: int) -> int:
    """Offset just past a complete chunked body starting at `start`, or -1 if incomplete."""
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # trailers end with an empty line
            return -1 if end < 0 else end + 4
        pos += size + 2
        if pos > len(buf):
            return -1


def _connect(host: str, port: int) -> socket.socket:
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _server_sockets(port: int) -> tuple[int | None, dict[int, int]]:
    """(inode of the listening socket on `port`, {client port: inode of the accepted socket})."""
    listen, accepted = None, {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1].rsplit(":", 1)[1], 16) != port:
                continue
            if p[3] == "0A":
                listen = int(p[9])
            else:
                accepted[int(p[2].rsplit(":", 1)[1], 16)] = int(p[9])
    return listen, accepted


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    except OSError:
        pass
    return out


def owners(socks: list[socket.socket], port: int, pids: list[int]) -> tuple[list[int | None], list[int]]:
    """Which worker process accepted each client socket, and the pids that are workers (those
    holding the listening socket). Linux /proc only."""
    listen, accepted = _server_sockets(port)
    fds = {pid: _socket_inodes(pid) for pid in pids}
    workers = [pid for pid in pids if listen in fds[pid]]
    where = []
    for s in socks:
        inode = accepted.get(s.getsockname()[1])
        where.append(next((pid for pid in workers if inode in fds[pid]), None))
    return where, workers


def balanced(host: str, port: int, n: int, pids: list[int] | None, attempts: int = 200) -> list[socket.socket]:
    """`n` keep-alive connections spread evenly over the server's worker processes.

    gunicorn's workers race to accept; with a handful of long-lived connections one worker often
    gets nearly all of them (7-8 of 8 here), which halves throughput at random. The bench wants
    reproducible figures, so it reconnects until the workers hold n/len(workers) each (as many
    independent clients would on average). `pids`=None: no balancing.
    """
    socks = [_connect(host, port) for _ in range(n)]
    if not pids or not os.path.exists("/proc/net/tcp"):
        return socks
    for _ in range(attempts):
        where, workers = owners(socks, port, pids)
        if len(workers) < 2:
            return socks
        if None in where:  # not accepted yet
            time.sleep(0.002)
            continue
        load = {w: where.count(w) for w in workers}
        hi, lo = max(load, key=load.get), min(load, key=load.get)
        if load[hi] - load[lo] <= 1:
            return socks
        i = where.index(hi)
        socks[i].close()
        socks[i] = _connect(host, port)
    return socks


def run(host: str, port: int, next_request: RequestSource, *, connections: int = 8,
        duration: float = 8.0, warmup: float = 1.0, capture: bool = False,
        max_requests: int | None = None, balance_pids: list[int] | None = None) -> Result:
    """Drive `connections` keep-alive clients for warmup+duration seconds (or max_requests).

    Only requests started after the warm-up and finished before the end count. With
    `max_requests`, every request counts and the run stops after that many. `balance_pids`: the
    server's child processes, to spread the connections evenly over its workers.
    """
    sel = selectors.DefaultSelector()
    conns: list[_Conn] = []
    for i, s in enumerate(balanced(host, port, connections, balance_pids)):
        c = _Conn(i, s)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    lat: list[int] = []
    statuses: dict[int, int] = {}
    captured: list[bytes] = []
    errors = 0
    sent = 0
    completed = 0
    cpu0 = time.process_time()
    t_start = time.perf_counter_ns()
    if max_requests is not None:
        t_measure, t_end = t_start, t_start + int(3600e9)
    else:
        t_measure = t_start + int(warmup * 1e9)
        t_end = t_measure + int(duration * 1e9)
    perf = time.perf_counter_ns
    active = len(conns)

    def send(c: _Conn) -> None:
        nonlocal sent
        data = next_request(c.idx)
        sent += 1
        c.t0 = perf()
        c.sock.sendall(data)

    for c in conns:
        send(c)
    try:
        while active:
            for key, _ev in sel.select(timeout=30):
                c = key.data
                chunk = c.sock.recv(262144)
                if not chunk:
                    raise ConnectionError(f"connection {c.idx} closed by the server")
                buf = c.buf
                buf += chunk
                if c.head_end < 0:
                    he = buf.find(b"\r\n\r\n")
                    if he < 0:
                        continue
                    c.head_end = he + 4
                    head = bytes(buf[:he])
                    c.status = int(head[9:12])
                    low = head.lower()
                    k = low.find(b"\r\ncontent-length:")
                    if k >= 0:
                        e = low.find(b"\r\n", k + 2)
                        c.need = c.head_end + int(low[k + 17:e if e >= 0 else None])
                    elif b"transfer-encoding: chunked" in low:
                        c.chunked = True
                    else:
                        c.need = c.head_end
                    if capture:
                        c.head = head
                if c.chunked:
                    end = _chunked_end(buf, c.head_end)
                    if end < 0:
                        continue
                else:
                    if len(buf) < c.need:
                        continue
                    end = c.need
                t1 = perf()
                completed += 1
                if c.t0 >= t_measure and t1 <= t_end:
                    lat.append(t1 - c.t0)
                    statuses[c.status] = statuses.get(c.status, 0) + 1
                    if not 200 <= c.status < 300:
                        errors += 1
                    if capture:
                        captured.append(c.head + b"\r\n\r\n" + bytes(buf[c.head_end:end]))
                del buf[:end]
                c.reset()
                if t1 < t_end and (max_requests is None or sent < max_requests):
                    send(c)
                else:
                    sel.unregister(c.sock)
                    c.sock.close()
                    active -= 1
    finally:
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
        sel.close()
    t_stop = min(perf(), t_end)
    seconds = (t_stop - t_measure) / 1e9
    return Result(seconds, lat, statuses, errors, time.process_time() - cpu0, captured, completed)


def cycle(items: list[bytes]) -> RequestSource:
    """Round-robin over pre-built requests (shared by all connections)."""
    n = len(items)
    state = {"i": 0}

    def nxt(_idx: int) -> bytes:
        i = state["i"]
        state["i"] = i + 1
        return items[i % n]

    return nxt


def random_pick(make: Callable[[int], bytes], n: int, seed: int = 1) -> RequestSource:
    """Requests built on the fly from a random index in [0, n): `make(index)`."""
    import random

    rnd = random.Random(seed)

    def nxt(_idx: int) -> bytes:
        return make(rnd.randrange(n))

    return nxt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["Result", "build_request", "run", "cycle", "random_pick", "free_port", "cpu_count"]
