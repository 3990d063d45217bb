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
    node.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
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
    from dicom.scp import DicomNode
    from fhirserver.services import build_services

    if args.accept_unknown:
        settings = settings.replace(dicom_reject_unknown=False)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    node = DicomNode(settings, repo=build_services(settings, upgrade_schema=True).repo)
    if args.exit_with_parent:
        parent = os.getppid()

        def _watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(0)

        threading.Thread(target=_watch, daemon=True).start()
    print(f"fhirserver: DICOM node {settings.dicom_ae} on "
          f"{settings.dicom_host or settings.host}:{settings.dicom_port}", file=sys.stderr, flush=True)
    try:
        node.start(block=True)
    except KeyboardInterrupt:
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
        return 0 if remove_node(engine, args.ae) else 1
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
    cmd = [sys.executable, "-m", "fhirserver.cli", "dicom", "--exit-with-parent",
           "--dicom-port", str(settings.dicom_port), "--dicom-ae", settings.dicom_ae,
           "--host", settings.dicom_host or settings.host, "--data-dir", str(settings.data_dir),
           "--base-url", settings.fhir_base[:-len("/fhir")]]
    if settings.database_url:
        cmd += ["--database-url", settings.database_url]
    if not settings.dicom_reject_unknown:
        cmd.append("--accept-unknown")
    return subprocess.Popen(cmd)


def stop_node(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
