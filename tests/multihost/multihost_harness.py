"""Hosts on one machine: each a Linux network namespace with its own address, joined by a bridge.

Every host runs its own processes (PostgreSQL, `fhirserver serve`, `fhirserver dicom`, HAProxy,
moto's S3 server) and reaches the others only over the bridge, so what works here works when the
hosts are separate machines: nothing is shared through loopback, only the database, the object
store and the files a variant deliberately shares.

Addresses are in 127.0.0.0/8 (loopback range, never routed off the machine): in each namespace
`lo` keeps only 127.0.0.1/32 (the kernel's default /8 local route would swallow the other hosts'
addresses) and `route_localnet=1` lets 127/8 packets cross a veth. The bridge lives in a "lan"
namespace of its own, so the root namespace (other users' processes) is never touched.

The test process reaches the hosts from a "client" namespace: `inside(ns)` moves the calling
thread there (setns) for the sockets it opens, and back.

Names carry a run id with the owning pid (`fhmh<pid>x<n>-host`); namespaces left by a killed run
(pid gone) are torn down when the next run starts.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import requests

PREFIX = "fhmh"
SUBNET = "127.77.0"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)


def unavailable() -> str | None:
    """Why the harness cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "multi-host test needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "multi-host test needs iproute2 (`ip netns`)"
    probe = f"{PREFIX}{os.getpid()}x0-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` refused here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in `ns` (all started by this harness), then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def workdir_for(variant: str) -> Path:
    """A temp folder named after this process, so a later run can tell it was left behind."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{variant}-"))


def clean_leftovers() -> list[str]:
    """Tear down namespaces and temp folders of earlier runs whose owning process is gone."""
    removed = []
    for ns in _netns_list():
        m = re.match(rf"^{PREFIX}(\d+)x\d+-", ns)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_namespace(ns)
            removed.append(ns)
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        m = re.match(rf"^{PREFIX}(\d+)-", folder.name)
        if m and folder.is_dir() and not Path(f"/proc/{m.group(1)}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread in network namespace `ns` (sockets opened meanwhile stay there)."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as target:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


class NsSession(requests.Session):
    """A requests session whose connections are opened inside a namespace."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", 30)
        with inside(self.ns):
            return super().request(*args, **kwargs)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Lan:
    """A bridge and the hosts on it; `close()` removes every namespace and process."""

    run_id: str
    workdir: Path
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    procs: list[Proc] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, workdir: Path) -> "Lan":
        clean_leftovers()
        lan = cls(run_id=f"{PREFIX}{os.getpid()}x{next(_counter)}", workdir=workdir)
        try:
            _ip("netns", "add", lan.ns("lan"))
            _ip("-n", lan.ns("lan"), "link", "add", "br0", "type", "bridge")
            _ip("-n", lan.ns("lan"), "link", "set", "br0", "up")
        except Exception:
            lan.close()
            raise
        return lan

    def ns(self, host: str) -> str:
        return f"{self.run_id}-{host}"

    def add_host(self, name: str, octet: int) -> str:
        """A namespace `name` with address 127.77.0.<octet>/24 on the bridge; returns the address."""
        ns, addr = self.ns(name), f"{SUBNET}.{octet}"
        _ip("netns", "add", ns)
        self.hosts[name] = addr
        _ip("-n", self.ns("lan"), "link", "add", f"v{octet}", "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", self.ns("lan"), "link", "set", f"v{octet}", "master", "br0", "up")
        for key in ("all", "default", "lo", "eth0"):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            f"net.ipv4.conf.{key}.route_localnet=1"], check=True)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo")
        _ip("-n", ns, "addr", "add", "127.0.0.1/32", "dev", "lo")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return addr

    def start(self, host: str, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None,
              user: str | None = None, cwd: Path | None = None) -> Proc:
        """Start `cmd` inside `host`'s namespace, in its own process group, logging to a file."""
        log = self.workdir / f"{name}.log"
        argv = ["ip", "netns", "exec", self.ns(host)]
        if user:
            argv += ["runuser", "-u", user, "--"]
        full_env = {**os.environ, **(env or {})}
        with open(log, "ab") as out:
            p = subprocess.Popen([*argv, *cmd], stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                 start_new_session=True, cwd=cwd)
        proc = Proc(name, p, log)
        with self._lock:
            self.procs.append(proc)
        return proc

    def run(self, host: str, cmd: Sequence[str], *, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *cmd], capture_output=True,
                              text=True, env={**os.environ, **(env or {})}, timeout=timeout)

    def kill_host(self, host: str) -> int:
        """kill -9 every process of `host` (the machine losing power); returns how many."""
        pids = subprocess.run(["ip", "netns", "pids", self.ns(host)], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        return len(pids)

    def rss_mb(self, host: str) -> float:
        """Resident memory of every process of `host` together (what the machine must hold)."""
        total = 0
        for pid in subprocess.run(["ip", "netns", "pids", self.ns(host)], capture_output=True,
                                  text=True).stdout.split():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return round(total / 1024, 1)

    def session(self, host: str = "client") -> NsSession:
        return NsSession(self.ns(host))

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name in [*self.hosts, "lan"]:
            _kill_namespace(self.ns(name))
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.popen.wait(timeout=5)


def wait_http(session: requests.Session, url: str, *, proc: Proc | None = None, timeout: float = 90,
              status: int = 200) -> None:
    """Until `url` answers `status` (fails with the process log when it died or never did)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        try:
            r = session.get(url, timeout=5)
            if r.status_code == status:
                return
            last = f"{r.status_code} {r.text[:300]}"
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready ({last}):\n{proc.tail() if proc else ''}")


def wait_port(lan: Lan, host: str, addr: str, port: int, *, proc: Proc, timeout: float = 60) -> None:
    """Until something accepts TCP connections on addr:port inside the lan."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        with inside(lan.ns(host)):
            s = socket.socket()
        try:
            s.settimeout(2)
            s.connect((addr, port))
            return
        except OSError:
            time.sleep(0.3)
        finally:
            s.close()
    raise RuntimeError(f"{proc.name}: nothing listens on {addr}:{port}:\n{proc.tail()}")


# -- PostgreSQL: a fresh cluster of its own, owned by the postgres user ------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_unavailable() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 binaries not found in {PG_BIN}"
    if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        return "no `postgres` user to run a PostgreSQL cluster as"
    return None


def start_postgres(lan: Lan, host: str, addr: str) -> Proc:
    """initdb into a temp folder, trust auth for the lan, listen on the host's address only."""
    data = Path(tempfile.mkdtemp(prefix="pg-", dir=lan.workdir))
    shutil.chown(data, "postgres", "postgres")
    os.chmod(lan.workdir, 0o755)
    r = subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
                        "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"initdb: {r.stderr[-2000:]}")
    (data / "pg_hba.conf").write_text(f"local all all trust\nhost all all {SUBNET}.0/24 trust\n")
    proc = lan.start(host, "postgres", [str(PG_BIN / "postgres"), "-D", str(data), "-k", str(data),
                                        "-c", f"listen_addresses={addr}", "-p", "5432",
                                        "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
                     user="postgres")
    wait_port(lan, host, addr, 5432, proc=proc)
    return proc


# -- HAProxy in front of the API hosts ----------------------------------------------------------

def haproxy_config(bind: str, servers: dict[str, str], stats_socket: Path) -> str:
    """Round robin over the API hosts, health-checked on /readyz; a request whose connection
    failed or got no answer (a host died under it) is retried, on another host (redispatch)."""
    lines = [
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    maxconn 2000",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout check 2s",
        "    retries 3",
        "    option redispatch 1",
        # every request the tests send through the balancer is idempotent (reads, PUTs and
        # conditional creates), so a retry after the request reached a dying host is safe
        "    retry-on conn-failure empty-response response-timeout 502 503 504",
        "frontend fhir",
        f"    bind {bind}",
        "    default_backend api",
        "backend api",
        "    balance roundrobin",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
    ]
    lines += [f"    server {name} {addr} check inter 500ms fall 2 rise 2" for name, addr in servers.items()]
    return "\n".join(lines) + "\n"


def haproxy_command(socket_path: Path, command: str) -> str:
    """One command on HAProxy's runtime API (a unix socket: no namespace involved)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(socket_path))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def haproxy_stats(socket_path: Path) -> dict[str, dict[str, str]]:
    """`show stat` as {"backend/server": {field: value}}."""
    text = haproxy_command(socket_path, "show stat")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for ln in lines[1:]:
        row = dict(zip(head, ln.split(",")))
        out[f"{row['pxname']}/{row['svname']}"] = row
    return out
