"""`fhirserver serve | db upgrade | load`: the one console script."""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from fhirserver.config import Settings, settings_from_env
from fhirserver.preflight import first_line, migrate_problem, serve_problem


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite under --data-dir)")
    p.add_argument("--data-dir", type=Path, help="data folder (default ./var)")


def _add_blob_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blob-url", help="blob store of DICOM instances and export files: "
                                      "s3://bucket/prefix?endpoint=URL (default: the data folder)")


def _settings(args: argparse.Namespace) -> Settings:
    keys = ("host", "port", "dicom_port", "dicom_ae", "data_dir", "database_url", "base_url", "workers",
            "log_level", "blob_url")
    defaults: dict[str, Any] = {}
    if getattr(args, "dev", False):  # demo clinic + /portal/dev/mail: a portal to try without a mail server
        from portal import DEV_CLINIC

        # the demo clinic's name, time zone, address and tax id, unless the operator set their own
        defaults = {**DEV_CLINIC, "dev_mode": True}
    settings = settings_from_env(defaults=defaults, **{k: getattr(args, k, None) for k in keys})
    if getattr(args, "insecure_no_auth", False):  # auth is on unless asked off, and then only on loopback
        settings = settings.replace(insecure_no_auth=True)
    return settings


def _is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None))
    except (socket.gaierror, ValueError):
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.insecure_no_auth and not _is_loopback(settings.host):
        print("--insecure-no-auth only listens on a loopback address (127.0.0.1, ::1)", file=sys.stderr)
        return 2
    from fhirserver.logs import configure

    configure(settings.log_level)
    os.environ["FHIRSERVER_LOG_LEVEL"] = settings.log_level  # the DICOM node processes log alike
    problem = serve_problem(settings) or migrate_problem(settings.effective_database_url)
    if problem:
        print(f"fhirserver: error: {problem}", file=sys.stderr, flush=True)
        return 1
    from fhirserver.metrics import prepare_multiprocess_dir, process_exited

    # before prometheus-client is first imported and before any fork: every process's metric files
    prepare_multiprocess_dir(settings.data_dir)
    from gunicorn.app.base import BaseApplication

    from fhirserver.app import close_app, create_app, start_jobs
    from fhirserver.heap import settle

    if settings.dev_mode:  # seed the demo clinic (idempotent: every restart keeps one copy)
        from portal import STAFF_LOGIN, seed_demo as seed

        seed_app = create_app(settings)
        try:
            info = seed(seed_app)
        finally:
            # Close every connection (and thread) before gunicorn forks its workers: an SQLite
            # connection carried across fork() corrupts the database file.
            close_app(seed_app)
        root = f"http://{settings.host}:{settings.port}"
        print(f"fhirserver --dev: demo clinic {settings.clinic_name!r} seeded; staff console {root}/console/ "
              f"(staff login {STAFF_LOGIN}); portal {root}/portal/ (logins {', '.join(info['logins'])}); "
              f"password {info['password']}; outbox at /portal/dev/mail", file=sys.stderr, flush=True)

    def _worker_ready(worker: Any) -> None:
        start_jobs(worker.wsgi)
        settle()  # the loaded app, out of the collector's full passes (fhirserver.heap)

    class _Server(BaseApplication):  # gunicorn's documented embedding API
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            # gthread, reading header blocks without holding a thread; its own errors as OperationOutcomes
            self.cfg.set("worker_class", "fhirserver.api.worker.FhirThreadWorker")
            self.cfg.set("limit_request_line", settings.max_url_bytes)
            self.cfg.set("limit_request_field_size", settings.max_header_bytes)
            self.cfg.set("limit_request_fields", settings.max_header_fields)
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 120)
            self.cfg.set("keepalive", 30)
            self.cfg.set("accesslog", None)  # the app logs each request (JSON, with its request id)
            self.cfg.set("logger_class", "fhirserver.logs.GunicornJsonLogger")
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("child_exit", lambda _arbiter, worker: process_exited(worker.pid))
            # each HTTP worker process also runs job threads (a fork carries no threads over)
            self.cfg.set("post_worker_init", _worker_ready)
            # jobs, the audit writer's last batch, the listener, the pool: a clean stop loses nothing
            self.cfg.set("worker_exit", lambda _arbiter, worker: close_app(getattr(worker, "wsgi", None)))

        def load(self) -> Any:
            return create_app(settings)

    print(f"fhirserver: FHIR base http://{settings.host}:{settings.port}/fhir "
          f"({settings.workers} workers, database {settings.effective_database_url.split('@')[-1]})",
          file=sys.stderr, flush=True)
    from dicom.cli import NodeSupervisor  # the DICOM node in its own process, restarted if it dies

    dicom_node = NodeSupervisor(settings).start()
    try:
        _Server().run()
    finally:
        dicom_node.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run job workers alone (no HTTP, no DICOM): another machine on the same database."""
    import signal
    import threading

    settings = _settings(args)
    if args.threads is not None:
        settings = settings.replace(job_threads=args.threads)
    from fhirserver.app import close_app, create_app
    from fhirserver.heap import settle
    from fhirserver.logs import configure

    configure(settings.log_level)

    try:
        app = create_app(settings, upgrade_schema=True)
    except Exception as exc:  # noqa: BLE001 - unreachable or unmigratable database: one line, exit 1
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"fhirserver: error: database {settings.effective_database_url.split('@')[-1]}: {reason}",
              file=sys.stderr, flush=True)
        return 1
    services = app.extensions["fhirserver"]
    try:
        worker = services.jobs.worker(services, threads=max(1, settings.job_threads),
                                      poll_seconds=settings.job_poll_seconds)
        if args.once:
            n = worker.run_pending()
            print(f"fhirserver worker: ran {n} jobs", file=sys.stderr)
            return 0
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        worker.start()
        settle()
        print(f"fhirserver worker: {worker.threads} threads, kinds {', '.join(sorted(services.jobs.registry.kinds))}",
              file=sys.stderr, flush=True)
        done.wait()
    finally:
        close_app(app)  # stops the worker, writes the last audit batch, closes the pool
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from fhirserver.preflight import database_label
    from fhirserver.storage import current_heads, downgrade, make_engine, script_heads, upgrade

    settings = _settings(args)
    where = database_label(settings.effective_database_url)
    try:
        engine = make_engine(settings.effective_database_url)
        if args.action == "upgrade":
            upgrade(engine, args.revision)
        elif args.action == "downgrade":
            downgrade(engine, args.revision)
        heads = current_heads(engine)
    except Exception as exc:  # noqa: BLE001 - unreachable database, unknown revision, failed migration
        print(f"fhirserver: error: database {where}: {first_line(exc)}", file=sys.stderr)
        return 1
    state = "up to date" if set(heads) == set(script_heads()) else \
        "not initialized (run `fhirserver db upgrade`)" if not heads else "behind (run `fhirserver db upgrade`)"
    print(f"schema revision: {', '.join(heads) or 'none'} ({state})")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from fhirserver.load import run_load

    return run_load(args, _settings(args))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fhirserver")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhirserver", description="FHIR R4 server")
    parser.add_argument("--version", action="version", version=f"fhirserver {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--dicom-port", type=int, help="DICOM node port (default 11112; 0: no node)")
    serve.add_argument("--dicom-ae")
    serve.add_argument("--base-url", help="public base URL (default http://HOST:PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default 2)")
    serve.add_argument("--threads", type=int, default=4, help="threads per worker")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                       help="log level (default INFO; FHIRSERVER_LOG_REQUESTS=0 drops the per-request lines)")
    serve.add_argument("--insecure-no-auth", action="store_true",
                       help="no authentication (loopback only, for local experiments)")
    serve.add_argument("--dev", action="store_true",
                       help="seed a demo clinic and show the email outbox at /portal/dev/mail")
    _add_common(serve)
    _add_blob_url(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run background job workers alone (same database)")
    worker.add_argument("--threads", type=int, help="worker threads (default 2)")
    worker.add_argument("--once", action="store_true", help="run the jobs due now, then exit")
    worker.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    _add_common(worker)
    _add_blob_url(worker)
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="action", required=True)
    for action, text in (("upgrade", "migrate the schema to this version's revisions"),
                         ("downgrade", "undo migrations down to REVISION (their tables and data are dropped)"),
                         ("current", "show the schema revisions the database is at")):
        one = db_sub.add_parser(action, help=text, description=text)
        if action == "upgrade":
            one.add_argument("revision", nargs="?", default="heads",
                             help="target revision (default: heads, every branch's newest)")
        elif action == "downgrade":
            one.add_argument("revision", help="target revision: an id (0002), BRANCH@id (dicom@0003), "
                             "-1 (one step back on a single head) or base (an empty database)")
        _add_common(one)
        one.set_defaults(func=cmd_db)

    load = sub.add_parser("load", help="load Bundles and NDJSON files")
    load.add_argument("files", nargs="+", type=Path)
    load.add_argument("--url", help="FHIR base of a running server (default: straight into the database;"
                      " with --url, --database-url names the database that keeps the load journal)")
    load.add_argument("--token", help="bearer token for --url (default: $FHIRSERVER_TOKEN)")
    load.add_argument("--client-id", help="with --client-secret: get a token by the client credentials grant")
    load.add_argument("--client-secret", help="(default: $FHIRSERVER_CLIENT_SECRET)")
    load.add_argument("--scope", default="system/*.cruds", help="scope asked with --client-id")
    load.add_argument("--stop-on-error", action="store_true")
    load.add_argument("--forget-journal", action="store_true",
                      help="forget what earlier loads into this target did: send every file again")
    load.add_argument("--batch-size", type=int, default=500, help="NDJSON resources per request")
    load.add_argument("--no-progress", action="store_true")
    _add_common(load)
    load.set_defaults(func=cmd_load)
    from dicom.cli import add_commands as add_dicom_commands  # `dicom`, `dicom-node`: the DICOM node owns its commands

    add_dicom_commands(sub, _add_common, _settings)
    from smart_auth.cli import add_commands  # `client` and `user`: the authorization server owns its records

    add_commands(sub, _add_common, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: its own exit code, or 1 with one line on stderr for anything it did not
    foresee (an operator reads the cause, not a traceback; --log-level DEBUG shows the trace)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place unforeseen failures become one line
        import logging

        logging.getLogger("fhirserver.cli").debug("command failed", exc_info=True)
        print(f"fhirserver: error: {_explain(exc, args)}", file=sys.stderr, flush=True)
        return 1


def _explain(exc: BaseException, args: argparse.Namespace) -> str:
    """One line naming what failed: the database (with its address but no credentials) or else."""
    from sqlalchemy.exc import SQLAlchemyError

    from fhirserver.preflight import database_label

    if isinstance(exc, SQLAlchemyError) or type(exc).__module__.startswith(("psycopg", "sqlite3", "alembic")):
        return f"database {database_label(_settings(args).effective_database_url)}: {first_line(exc)}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return first_line(exc)


if __name__ == "__main__":
    sys.exit(main())
