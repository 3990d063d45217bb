"""`fhirserver load FILE...`: bulk-load Bundles and NDJSON into a server or straight into the database.

Why this shape:
- One `Target` interface with two implementations (HTTP via one keep-alive `requests.Session`, or
  direct via `bundles.process` on one `Repository`), so both modes share the exact same file
  handling, error reporting and resume logic, and behave like the server's own transaction code.
- Every file is identified by its sha256 in a small JSON journal that is rewritten atomically after
  each finished file (and after each committed NDJSON batch), so a killed load resumes without
  sending a finished file - or a committed NDJSON batch - twice. The journal is scoped by target
  (URL or database) so loading the same file into another server is not wrongly skipped.
- `Prefer: return=minimal` is sent with every Bundle: the loader never reads the stored resources
  back, and not serialising them makes the server noticeably faster.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterator, Protocol

import orjson

from fhirserver.config import Settings
from fhirserver.model.jsonio import JsonFormatError, dumps, loads

JOURNAL_VERSION = 1
_BUNDLE_SUFFIXES = (".json", ".json.gz")
_NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


class FatalLoadError(Exception):
    """The target cannot be used any more (unreachable, unauthorised, database gone): stop the load."""


@dataclasses.dataclass
class Failure:
    """One failed bundle or resource: what to print."""

    where: str          # "file.json" or "file.ndjson line 12"
    status: int | str   # HTTP status (or "error" for local problems such as bad JSON)
    diagnostics: str


@dataclasses.dataclass
class Result:
    """Outcome of sending one Bundle: a whole-bundle failure, or per-entry statuses."""

    failure: Failure | None = None
    entry_errors: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)  # index, status, text


# --------------------------------------------------------------------------------------------
# OperationOutcome helpers


def diagnostics_of(oo: Any) -> str:
    """The readable text of an OperationOutcome (diagnostics, else details.text, else code)."""
    if not isinstance(oo, dict):
        return str(oo) if oo else ""
    parts: list[str] = []
    for issue in oo.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        if text:
            parts.append(str(text))
    return "; ".join(parts) if parts else (oo.get("text", {}) or {}).get("div", "") or json.dumps(oo)[:500]


def _status_code(status: Any) -> int:
    """'201 Created' -> 201; anything unparsable counts as a server error."""
    try:
        return int(str(status).strip().split(" ", 1)[0])
    except ValueError:
        return 500


def entry_errors(response_bundle: Any) -> list[tuple[int, int, str]]:
    """(entry index, status, diagnostics) of every batch-response entry with a 4xx/5xx status."""
    out: list[tuple[int, int, str]] = []
    if not isinstance(response_bundle, dict):
        return out
    for i, entry in enumerate(response_bundle.get("entry") or []):
        resp = (entry or {}).get("response") or {}
        code = _status_code(resp.get("status"))
        if code >= 400:
            out.append((i, code, diagnostics_of(resp.get("outcome")) or f"status {resp.get('status')}"))
    return out


# --------------------------------------------------------------------------------------------
# Targets


class Target(Protocol):
    """Where Bundles go; `describe` names it in the journal."""

    def describe(self) -> str: ...

    def send(self, bundle: dict[str, Any], raw: bytes | None = None) -> Result:
        """Send one Bundle (`raw`: its file bytes, sent as is over HTTP to skip re-serialising)."""

    def close(self) -> None: ...


class HttpTarget:
    """POSTs Bundles to the base URL of a running server over one keep-alive session."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        import requests

        self.requests = requests
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({
            "Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
            "Prefer": "return=minimal",
        })

    def describe(self) -> str:
        return "url:" + self.base

    def send(self, bundle: dict[str, Any], raw: bytes | None = None) -> Result:
        data = raw if raw is not None else dumps(bundle)
        try:
            resp = self.session.post(self.base, data=data, timeout=self.timeout)
        except self.requests.RequestException as exc:
            raise FatalLoadError(f"cannot reach {self.base}: {_short_exc(exc)}") from None
        try:
            body = orjson.loads(resp.content) if resp.content else None
        except orjson.JSONDecodeError:
            body = None
        if resp.status_code in (401, 403):
            raise FatalLoadError(f"{self.base} answered HTTP {resp.status_code}: "
                                 f"{diagnostics_of(body) or resp.text[:300]}")
        if resp.status_code >= 400:
            text = diagnostics_of(body) if body is not None else resp.text[:500]
            return Result(Failure("", resp.status_code, text or resp.reason or ""))
        return Result(entry_errors=entry_errors(body))

    def close(self) -> None:
        self.session.close()


class DirectTarget:
    """Runs Bundles through `bundles.process` on one Repository (no HTTP, schema upgraded first)."""

    def __init__(self, settings: Settings) -> None:
        from sqlalchemy.engine import make_url

        from fhirserver.api.interactions import Context
        from fhirserver.storage import Repository, make_engine, upgrade

        self.url = settings.effective_database_url
        try:
            self.shown_url = make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - only used for display
            self.shown_url = self.url.split("@")[-1]
        try:
            self.engine = make_engine(self.url)
            upgrade(self.engine)
        except Exception as exc:  # noqa: BLE001 - any connection/migration problem is fatal
            raise FatalLoadError(f"cannot open database {self.shown_url}: {_short_exc(exc)}") from None
        from fhirserver.search import SearchEngine

        search = SearchEngine(settings.fhir_base)
        self.repo = Repository(self.engine, indexer=search.index_rows)
        self.ctx = Context(base=settings.fhir_base, postgres=self.repo.postgres, search=search)

    def describe(self) -> str:
        return "db:" + self.shown_url

    def send(self, bundle: dict[str, Any], raw: bytes | None = None) -> Result:
        from sqlalchemy.exc import InterfaceError, OperationalError

        from fhirserver.api import bundles
        from fhirserver.api.outcome import FhirError

        try:
            response = bundles.process(self.ctx, self.repo, bundle, {"prefer": "return=minimal"})
        except FhirError as exc:
            return Result(Failure("", exc.status, "; ".join(i.diagnostics for i in exc.issues)))
        except (OperationalError, InterfaceError) as exc:
            raise FatalLoadError(f"database error ({self.shown_url}): {_short_exc(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - a server bug on one bundle must not end a long load
            return Result(Failure("", 500, f"internal error: {type(exc).__name__}: {exc}"))
        return Result(entry_errors=entry_errors(response))

    def close(self) -> None:
        self.engine.dispose()


def _json_problem(exc: Exception) -> str:
    """jsonio speaks of a request body; a file is not one."""
    return str(exc).replace("Body is not valid JSON", "not valid JSON")


def _short_exc(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------------------------
# Journal


class Journal:
    """Which files (by sha256) are done, and how far unfinished NDJSON files got, per target."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self.data: dict[str, Any] = {"version": JOURNAL_VERSION, "targets": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("targets"), dict):
                    self.data = data
            except (OSError, ValueError) as exc:
                raise FatalLoadError(f"journal {path} is unreadable ({exc}); remove it or pass --journal") \
                    from None
        self.files: dict[str, dict[str, Any]] = self.data["targets"].setdefault(target, {})

    def is_done(self, sha: str) -> bool:
        return bool(self.files.get(sha, {}).get("done"))

    def progress(self, sha: str) -> tuple[int, list[int]]:
        """(lines committed, line numbers to retry) of an unfinished NDJSON file."""
        rec = self.files.get(sha) or {}
        return int(rec.get("lines", 0)), [int(n) for n in rec.get("retry", [])]

    def mark_done(self, sha: str, path: Path, resources: int) -> None:
        self.files[sha] = {"path": str(path), "done": True, "resources": resources,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.save()

    def mark_partial(self, sha: str, path: Path, lines: int, retry: list[int]) -> None:
        self.files[sha] = {"path": str(path), "done": False, "lines": lines, "retry": sorted(set(retry))}
        self.save()

    def save(self) -> None:
        """Write to a temporary file, fsync, then os.replace: a kill leaves the old or the new journal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------------
# Files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_NDJSON_SUFFIXES):
        return "ndjson"
    if name.endswith(_BUNDLE_SUFFIXES):
        return "json"
    return None


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; a directory contributes its loadable files in name order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if c.is_file() and _kind(c)))
        else:
            out.append(p)
    return out


@dataclasses.dataclass
class Planned:
    """One file to load, with what is known before sending anything."""

    path: Path
    kind: str
    sha: str
    count: int          # resources still to send (for the progress total)
    start_line: int = 0  # NDJSON: lines already committed by an earlier run
    retry: list[int] = dataclasses.field(default_factory=list)


def _count_bundle(path: Path) -> int:
    """Entries of a Bundle file (1 for a single resource or an unparsable file)."""
    try:
        with _open(path) as fh:
            data = orjson.loads(fh.read())
    except (orjson.JSONDecodeError, OSError, EOFError):
        return 1
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        entries = data.get("entry")
        return len(entries) if isinstance(entries, list) else 0
    return 1


def _count_ndjson(path: Path, start_line: int, retry: list[int]) -> int:
    retry_set = set(retry)
    n = 0
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if (lineno > start_line or lineno in retry_set) and line.strip():
                n += 1
    return n


def _ndjson_lines(path: Path, start_line: int, retry: list[int]) -> Iterator[tuple[int, bytes]]:
    """(line number, text) of the non-blank lines still to send."""
    retry_set = set(retry)
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if (lineno > start_line or lineno in retry_set) and line.strip():
                yield lineno, line


def _bundle_for(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    """A one-entry transaction (or an entry for a batch): PUT when the resource has an id."""
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        request = {"method": "PUT", "url": f"{rtype}/{rid}"}
    else:
        request = {"method": "POST", "url": str(rtype)}
    entry = {"resource": resource, "request": request}
    return {"resourceType": "Bundle", "type": kind, "entry": [entry]}


# --------------------------------------------------------------------------------------------
# The loader


class Loader:
    """Sends the planned files to one target, keeping counts, the journal and the progress bar."""

    def __init__(self, target: Target, journal: Journal, *, stop_on_error: bool, batch_size: int,
                 bar: Any) -> None:
        self.target = target
        self.journal = journal
        self.stop_on_error = stop_on_error
        self.batch_size = max(1, batch_size)
        self.bar = bar
        self.loaded_files = 0
        self.skipped_files = 0
        self.resources = 0
        self.errors = 0
        self.stopped = False

    # -- reporting
    def report(self, failure: Failure) -> None:
        self.errors += 1
        status = f"HTTP {failure.status}" if isinstance(failure.status, int) else failure.status
        self._write(f"error: {failure.where}: {status}: {failure.diagnostics}", sys.stderr)

    def _write(self, message: str, stream: IO[str]) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(message, file=stream)
        else:
            print(message, file=stream, flush=True)

    def info(self, message: str) -> None:
        self._write(message, sys.stdout)

    def _advance(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    # -- files
    def load(self, item: Planned) -> None:
        if item.kind == "ndjson":
            self._load_ndjson(item)
        else:
            self._load_bundle(item)

    def _load_bundle(self, item: Planned) -> None:
        where = str(item.path)
        try:
            with _open(item.path) as fh:
                raw = fh.read()
            data = loads(raw)
        except (JsonFormatError, OSError, EOFError) as exc:
            self._advance(item.count)
            self.report(Failure(where, "invalid", _json_problem(exc)))
            self.stopped = self.stop_on_error
            return
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            self._advance(item.count)
            self.report(Failure(where, "invalid", "not a FHIR resource (no resourceType)"))
            self.stopped = self.stop_on_error
            return
        if data["resourceType"] == "Bundle":
            bundle, send_raw = data, raw
        else:
            bundle, send_raw = _bundle_for(data, "transaction"), None
        entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
        result = self.target.send(bundle, send_raw)
        self._advance(item.count)
        if result.failure is not None:
            result.failure.where = where
            self.report(result.failure)
            self.stopped = self.stop_on_error
            return
        for index, status, text in result.entry_errors:
            self.report(Failure(f"{where} entry {index}", status, text))
        self.resources += len(entries) - len(result.entry_errors)
        if result.entry_errors:
            self.stopped = self.stop_on_error
            return
        self.loaded_files += 1
        self.journal.mark_done(item.sha, item.path, len(entries))

    def _load_ndjson(self, item: Planned) -> None:
        committed = item.start_line
        retry = list(item.retry)          # earlier failures still to retry
        failed: list[int] = []            # lines that failed in this run
        sent = 0

        def flush(batch: list[tuple[int, dict[str, Any]]], last_line: int) -> None:
            nonlocal committed, sent
            if batch:
                bundle = {"resourceType": "Bundle", "type": "batch",
                          "entry": [_bundle_for(res, "batch")["entry"][0] for _, res in batch]}
                result = self.target.send(bundle)
                lines = [n for n, _ in batch]
                if result.failure is not None:
                    # The whole batch was refused (e.g. too large): every line stays to be retried.
                    result.failure.where = f"{item.path} lines {lines[0]}-{lines[-1]}"
                    self.report(result.failure)
                    failed.extend(lines)
                else:
                    bad = {index for index, _, _ in result.entry_errors}
                    for index, status, text in result.entry_errors:
                        self.report(Failure(f"{item.path} line {lines[index]}", status, text))
                        failed.append(lines[index])
                    self.resources += len(batch) - len(bad)
                    sent += len(batch) - len(bad)
                self._advance(len(batch))
            committed = max(committed, last_line)
            still = [n for n in retry if n > last_line] + failed  # earlier failures not reached yet
            self.journal.mark_partial(item.sha, item.path, committed, still)
            if failed and self.stop_on_error:
                self.stopped = True

        batch: list[tuple[int, dict[str, Any]]] = []
        last = committed
        for lineno, line in _ndjson_lines(item.path, item.start_line, item.retry):
            last = max(last, lineno)
            try:
                res = loads(line)
                if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                    raise JsonFormatError("not a FHIR resource (no resourceType)")
            except JsonFormatError as exc:
                self.report(Failure(f"{item.path} line {lineno}", "invalid", _json_problem(exc)))
                failed.append(lineno)
                self._advance(1)
                if self.stop_on_error:
                    flush(batch, last)
                    self.stopped = True
                    return
                continue
            batch.append((lineno, res))
            if len(batch) >= self.batch_size:
                flush(batch, last)
                batch = []
                if self.stopped:
                    return
        flush(batch, last)
        if self.stopped:
            return
        if failed:
            self.stopped = self.stop_on_error
            return
        self.loaded_files += 1
        self.journal.mark_done(item.sha, item.path, sent)


def _plan(paths: list[Path], journal: Journal, loader: Loader) -> tuple[list[Planned], list[Failure]]:
    """Hash and count every file up front: skipped files leave the total, bad paths are errors."""
    planned: list[Planned] = []
    problems: list[Failure] = []
    for path in expand(paths):
        kind = _kind(path)
        if not path.is_file():
            problems.append(Failure(str(path), "missing", "no such file"))
            continue
        if kind is None:
            problems.append(Failure(str(path), "unsupported",
                                    "expected a .json Bundle/resource or a .ndjson file"))
            continue
        sha = _sha256(path)
        if journal.is_done(sha):
            loader.info(f"{path}: skipped (already loaded)")
            loader.skipped_files += 1
            continue
        if kind == "ndjson":
            start, retry = journal.progress(sha)
            if start or retry:
                loader.info(f"{path}: resuming after line {start}"
                            + (f" (retrying {len(retry)} failed lines)" if retry else ""))
            planned.append(Planned(path, kind, sha, _count_ndjson(path, start, retry), start, retry))
        else:
            planned.append(Planned(path, kind, sha, _count_bundle(path)))
    return planned, problems


def run_load(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point of `fhirserver load`; returns the exit code (0 ok, 1 something failed)."""
    from tqdm import tqdm

    started = time.monotonic()
    journal_path: Path = args.journal or Path(settings.data_dir) / "load-journal.json"
    target: Target | None = None
    bar = None
    loader: Loader | None = None
    try:
        target = HttpTarget(args.url) if args.url else DirectTarget(settings)
        journal = Journal(journal_path, target.describe())
        show_bar = not args.no_progress and sys.stderr.isatty()
        loader = Loader(target, journal, stop_on_error=args.stop_on_error,
                        batch_size=args.batch_size, bar=None)
        planned, problems = _plan(list(args.files), journal, loader)
        for problem in problems:
            loader.report(problem)
        if problems and args.stop_on_error:
            return 1
        bar = tqdm(total=sum(p.count for p in planned), unit="res", unit_scale=True,
                   disable=not show_bar, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        loader.bar = bar
        for item in planned:
            bar.set_postfix_str(item.path.name[:32], refresh=False)
            loader.load(item)
            if loader.stopped:
                loader.info(f"stopped after an error in {item.path} (--stop-on-error)")
                break
        bar.set_postfix_str("", refresh=False)
    except FatalLoadError as exc:
        if bar is not None:
            bar.close()
            bar = None
        print(f"error: {exc}; load stopped", file=sys.stderr, flush=True)
        if loader is not None:
            loader.errors += 1
        else:
            return 1
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        print("interrupted; finished files and committed NDJSON batches are in the journal",
              file=sys.stderr, flush=True)
        return 130
    finally:
        if bar is not None:
            bar.close()
        if target is not None:
            target.close()
    elapsed = time.monotonic() - started
    rate = loader.resources / elapsed if elapsed > 0 else 0.0
    skipped = f" ({loader.skipped_files} skipped)" if loader.skipped_files else ""
    print(f"loaded {loader.loaded_files} files{skipped}, {loader.resources} resources, "
          f"{loader.errors} errors in {elapsed:.1f} s ({rate:.0f} resources/s)", flush=True)
    return 1 if loader.errors else 0


__all__ = ["run_load", "Journal", "HttpTarget", "DirectTarget", "diagnostics_of", "entry_errors"]
