"""`fhirserver dicom` (the node on its own) and `fhirserver dicom-node add|list|remove`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None],
                 settings_of: Callable[[argparse.Namespace], Any]) -> None:
    node = sub.add_parser("dicom", help="run the DICOM node (C-STORE/FIND/MOVE/GET, worklist)")
    node.add_argument("--host")
    node.add_argument("--dicom-port", type=int)
    node.add_argument("--dicom-ae")
    node.add_argument("--base-url", help="public base URL (for the DICOMweb Endpoint)")
    node.add_argument("--accept-unknown", action="store_true",
                      help="accept calling AE titles that are not registered")
    node.add_argument("--processes", type=int, default=0,
                      help="receiving processes sharing the port (default: $FHIRSERVER_DICOM_PROCESSES "
                           "or the CPU count)")
    node.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                      help="log level (default INFO)")
    node.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    node.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    node.add_argument("--load-board", help=argparse.SUPPRESS)
    node.add_argument("--load-slot", type=int, default=0, help=argparse.SUPPRESS)
    node.add_argument("--blob-url", help="blob store of the instances: s3://bucket/prefix?endpoint=URL "
                                         "(default: the data folder)")
    add_common(node)
    node.set_defaults(func=lambda a: cmd_dicom(a, settings_of(a)))

    reg = sub.add_parser("dicom-node", help="registry of DICOM nodes (modalities, viewers)")
    reg.add_argument("action", choices=["add", "list", "remove"])
    reg.add_argument("--ae", help="AE title")
    reg.add_argument("--host", dest="node_host", default="127.0.0.1")
    reg.add_argument("--port", dest="node_port", type=int, default=104)
    reg.add_argument("--organization", help="Organization id the node belongs to")
    reg.add_argument("--description")
    add_common(reg)
    reg.set_defaults(func=lambda a: cmd_dicom_node(a, settings_of(a)))


def _engine(settings: Any) -> Any:
    from fhirserver.storage import make_engine, upgrade

    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return engine


def cmd_dicom(args: argparse.Namespace, settings: Any) -> int:
    from dicom.scp import DicomNode, LoadBoard
    from fhirserver.heap import settle
    from fhirserver.services import build_services

    if args.accept_unknown:
        settings = settings.replace(dicom_reject_unknown=False)
    from fhirserver.logs import configure

    configure(settings.log_level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    processes = args.processes or settings.dicom_processes or os.cpu_count() or 1
    if args.listen_fd is None:  # this process binds: say so in one line when it cannot
        from fhirserver.preflight import blob_store_problem, data_dir_problem, dicom_port_problem, migrate_problem

        problem = data_dir_problem(settings.data_dir) or blob_store_problem(settings) or dicom_port_problem(settings) or \
            migrate_problem(settings.effective_database_url)
        if problem:
            print(f"fhirserver: error: {problem}", file=sys.stderr, flush=True)
            return 1
    if processes > 1 and args.listen_fd is None:
        return _supervise(args, settings, processes)
    from pydicom import config as pydicom_config
    from pynetdicom import _config as pynetdicom_config

    # no per-PDU/per-message debug log handlers (the pynetdicom logger is at WARNING anyway)
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"

    # values are read for the index only: no regex validation (and warning) per element read
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    # several association threads per process: hand the GIL over sooner (lower latency per message)
    sys.setswitchinterval(settings.dicom_switch_interval)
    services = build_services(settings, upgrade_schema=True)
    node = DicomNode(settings, repo=services.repo, audit=services.audit, store=services.blobs)
    if args.exit_with_parent:
        parent = os.getppid()

        def _watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(0)

        threading.Thread(target=_watch, daemon=True).start()
    print(f"fhirserver: DICOM node {settings.dicom_ae} on "
          f"{settings.dicom_host or settings.host}:{settings.dicom_port}", file=sys.stderr, flush=True)
    import signal

    def _interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the supervisor's SIGTERM: leave the server loop, clean up below

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        load = LoadBoard(args.load_board, args.load_slot) if args.load_board else None
        settle()  # the started services, out of the collector's full passes (fhirserver.heap)
        node.start(block=True, listen_fd=args.listen_fd, load=load)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while closing ends it at once
        node.stop()
        services.close()  # the audit writer's last batch, the listener, the pool
    return 0


def _node_cmd(settings: Any, *extra: str) -> list[str]:
    """The command line of a node process that ends with its parent, carrying the settings a
    node needs (`extra`: options of this kind of process)."""
    cmd = [sys.executable, "-m", "fhirserver.cli", "dicom", "--exit-with-parent", *extra,
           "--dicom-port", str(settings.dicom_port), "--dicom-ae", settings.dicom_ae,
           "--host", settings.dicom_host or settings.host, "--data-dir", str(settings.data_dir),
           "--base-url", settings.root_url]
    if settings.database_url:
        cmd += ["--database-url", settings.database_url]
    if not settings.dicom_reject_unknown:
        cmd.append("--accept-unknown")
    if settings.blob_url:
        cmd += ["--blob-url", settings.blob_url]
    return cmd


def _child_cmd(settings: Any, fd: int, board: str, slot: int) -> list[str]:
    """A receiver of `_supervise`: one process accepting on the inherited socket `fd`."""
    return _node_cmd(settings, "--processes", "1", "--listen-fd", str(fd), "--load-board", board,
                     "--load-slot", str(slot))


def _supervise(args: argparse.Namespace, settings: Any, processes: int) -> int:
    """Several receiving processes (one Python process is the ceiling of pynetdicom): this process
    binds the listening socket and starts `processes` nodes that accept on it, each taking the
    next association when it is free; a node that dies is started again."""
    import signal
    import socket
    import tempfile

    from dicom.transport import LoadBoard, listen_socket

    _engine(settings).dispose()  # schema upgrade once, before the receivers start
    sock = listen_socket((settings.dicom_host or settings.host, settings.dicom_port))
    fd = sock.fileno()
    board_fd, board = tempfile.mkstemp(prefix="fhirserver-dicom-", suffix=".load")
    os.close(board_fd)
    LoadBoard.create(board, processes)
    cmds = [_child_cmd(settings, fd, board, slot) for slot in range(processes)]
    stopping = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parent = os.getppid()
    print(f"fhirserver: DICOM node {settings.dicom_ae} on {settings.dicom_host or settings.host}:"
          f"{settings.dicom_port} ({processes} processes)", file=sys.stderr, flush=True)
    children = [subprocess.Popen(cmd, pass_fds=(fd,)) for cmd in cmds]
    started = [time.monotonic()] * processes
    try:
        while not stopping.wait(0.5):
            if args.exit_with_parent and os.getppid() != parent:
                break
            for i, child in enumerate(children):
                if child.poll() is not None and time.monotonic() - started[i] > 5:  # no restart storm
                    print(f"fhirserver: DICOM receiver {i} exited ({child.returncode}), starting it again",
                          file=sys.stderr, flush=True)
                    LoadBoard(board, i)  # its slot starts again from zero
                    children[i] = subprocess.Popen(cmds[i], pass_fds=(fd,))
                    started[i] = time.monotonic()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()  # reaped before the supervisor exits: nothing outlives the node
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        try:
            os.unlink(board)
        except OSError:
            pass
    return 0


def cmd_dicom_node(args: argparse.Namespace, settings: Any) -> int:
    from dicom.nodes import add_node, list_nodes, remove_node

    engine = _engine(settings)
    if args.action == "list":
        print(json.dumps([n.__dict__ for n in list_nodes(engine)], indent=2))
        return 0
    if not args.ae:
        print("--ae is required", file=sys.stderr)
        return 2
    if args.action == "remove":
        if remove_node(engine, args.ae):
            return 0
        print(f"error: no DICOM node {args.ae!r}", file=sys.stderr)
        return 1
    try:
        node = add_node(engine, args.ae, args.node_host, args.node_port, args.organization,
                        args.description)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps(node.__dict__))
    return 0


def spawn_node(settings: Any) -> subprocess.Popen | None:
    """`serve` runs the node in its own process (one Python process per receiver)."""
    if not settings.dicom_port:
        return None
    return subprocess.Popen(_node_cmd(settings))


class NodeSupervisor:
    """`serve`'s DICOM node process, started again whenever it dies (each restart logged).

    A node that keeps dying right after its start (port taken, database away) is restarted
    after a pause that doubles up to a minute, so a permanent fault does not spin."""

    def __init__(self, settings: Any, poll: float = 0.5) -> None:
        self.settings = settings
        self.poll = poll
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "NodeSupervisor":
        self.proc = spawn_node(self.settings)
        if self.proc is not None:
            self._thread = threading.Thread(target=self._watch, name="dicom-node-supervisor", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        log = logging.getLogger("fhirserver.dicom")
        started, pause = time.monotonic(), 1.0
        while not self._stop.wait(self.poll):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            ran = time.monotonic() - started
            pause = 1.0 if ran > 30 else min(pause * 2, 60.0) if self.restarts else 1.0
            log.error("fhirserver: DICOM node (pid %s) exited with status %s after %.0f s; "
                      "starting it again in %.0f s", proc.pid, proc.returncode, ran, pause)
            if self._stop.wait(pause):  # its receivers leave the port within a second
                return
            self.proc = spawn_node(self.settings)
            self.restarts += 1
            started = time.monotonic()
            log.warning("fhirserver: DICOM node started again (pid %s, restart %d)",
                        self.proc.pid if self.proc else "-", self.restarts)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        stop_node(self.proc)


def stop_node(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
