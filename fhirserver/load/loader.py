"""`fhirserver load FILE...`: bulk-load Bundles and NDJSON into a server or straight into the database.

Why this shape:
- One `Target` interface with two implementations (`fhirserver.load.targets`), so both modes share
  the exact same file handling, error reporting and resume logic.
- Every file is identified by its sha256 in the journal (`fhirserver.load.journal`, a table in the
  database), scoped by target so loading the same file into another server is not wrongly skipped.
- Exactly once, whatever the moment of a kill: before each request the journal records the batch id
  it is about to send ("in flight"); the server records that id in the same transaction as the data;
  a resumed load sends an in-flight request again with the same id, and the server either applies
  it (it never committed) or answers that it already has. A finished file is marked done and never
  sent again.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from fhirserver.config import Settings
from fhirserver.load.journal import FileState, Journal
from fhirserver.load.targets import (
    DirectTarget, FatalLoadError, Failure, HttpTarget, Target, open_database,
)
from fhirserver.model import JsonFormatError, loads
from fhirserver.storage import BATCH_ID_SYSTEM

_BUNDLE_SUFFIXES = (".json", ".json.gz")
_NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


def _json_problem(exc: Exception) -> str:
    """jsonio speaks of a request body; a file is not one."""
    return str(exc).replace("Body is not valid JSON", "not valid JSON")


def _new_batch_id() -> str:
    return str(uuid.uuid4())


def _stamp(bundle: dict[str, Any], batch_id: str) -> dict[str, Any]:
    """The Bundle with our batch id as its identifier (a file's own Bundle.identifier, 0..1, is
    replaced: a transaction or batch Bundle is not stored, so nothing of it is lost)."""
    bundle["identifier"] = {"system": BATCH_ID_SYSTEM, "value": batch_id}
    return bundle


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
    start_line: int = 0  # NDJSON: lines already settled by an earlier run
    retry: list[int] = dataclasses.field(default_factory=list)
    state: FileState | None = None  # what the journal knew when the load started


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
                data = loads(fh.read())
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
        bundle = data if data["resourceType"] == "Bundle" else _bundle_for(data, "transaction")
        entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
        # Intent first: the same batch id again if an earlier run was cut off while sending it.
        earlier = item.state
        batch_id = earlier.batch_id if earlier and earlier.state == "sending" and earlier.batch_id \
            else _new_batch_id()
        self.journal.sending(item.sha, item.path, batch_id)
        result = self.target.send(_stamp(bundle, batch_id))
        self._advance(item.count)
        if result.failure is not None:
            result.failure.where = where
            self.report(result.failure)
            self.stopped = self.stop_on_error
            return
        if result.replayed:
            self.info(f"{where}: already committed before the interruption")
            self.loaded_files += 1
            self.journal.done(item.sha, item.path, len(entries))
            return
        for index, status, text in result.entry_errors:
            self.report(Failure(f"{where} entry {index}", status, text))
        self.resources += len(entries) - len(result.entry_errors) - len(result.replayed_entries)
        if result.entry_errors:
            self.stopped = self.stop_on_error
            return
        self.loaded_files += 1
        self.journal.done(item.sha, item.path, len(entries))

    def _load_ndjson(self, item: Planned) -> None:
        """Batches of `batch_size` lines; the journal's watermark says which lines are settled.

        Journal invariant: every line up to `lines` is committed, except the `retry` lines (they
        failed) and the `inflight` lines (sent under `batch_id`, answer not yet recorded).
        """
        earlier = item.state
        watermark = item.start_line
        retry = list(item.retry)          # earlier failures still to retry
        failed: list[int] = []            # lines that failed in this run
        sent = earlier.resources if earlier else 0

        def still_to_retry(last_line: int) -> list[int]:
            return [n for n in retry if n > last_line] + failed

        def send(batch: list[tuple[int, dict[str, Any]]], batch_id: str) -> None:
            nonlocal sent
            bundle = {"resourceType": "Bundle", "type": "batch",
                      "entry": [_bundle_for(res, "batch")["entry"][0] for _, res in batch]}
            result = self.target.send(_stamp(bundle, batch_id))
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
                fresh = len(batch) - len(bad) - len(result.replayed_entries)
                self.resources += fresh
                sent += len(batch) - len(bad)
            self._advance(len(batch))

        def flush(batch: list[tuple[int, dict[str, Any]]], last_line: int) -> None:
            nonlocal watermark
            if batch:
                batch_id = _new_batch_id()
                self.journal.partial(item.sha, item.path, last_line, still_to_retry(last_line), sent,
                                     batch_id, [n for n, _ in batch])
                send(batch, batch_id)
            watermark = max(watermark, last_line)
            self.journal.partial(item.sha, item.path, watermark, still_to_retry(watermark), sent)
            if failed and self.stop_on_error:
                self.stopped = True

        if earlier and earlier.batch_id and earlier.inflight:
            # Cut off while a batch was in flight: the same lines under the same id, first.
            batch = [(n, res) for n, res in _resources_at(item.path, earlier.inflight)]
            send(batch, earlier.batch_id)
            # nothing else read yet: every earlier failure is still to retry
            self.journal.partial(item.sha, item.path, watermark, retry + failed, sent)
            if failed and self.stop_on_error:
                self.stopped = True
                return

        batch: list[tuple[int, dict[str, Any]]] = []
        last = watermark
        for lineno, line in _ndjson_lines(item.path, item.start_line, item.retry):
            last = max(last, lineno)
            try:
                res = _resource(line)
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
        self.journal.done(item.sha, item.path, sent)


def _resource(line: bytes) -> dict[str, Any]:
    res = loads(line)
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        raise JsonFormatError("not a FHIR resource (no resourceType)")
    return res


def _resources_at(path: Path, line_numbers: list[int]) -> list[tuple[int, dict[str, Any]]]:
    """The resources on the given lines, in the given order (they parsed when first sent)."""
    wanted = set(line_numbers)
    found: dict[int, dict[str, Any]] = {}
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno in wanted:
                found[lineno] = _resource(line)
    return [(n, found[n]) for n in line_numbers]


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
        state = journal.get(sha)
        if state is not None and state.done:
            loader.info(f"{path}: skipped (already loaded)")
            loader.skipped_files += 1
            continue
        if kind == "ndjson":
            start, retry = (state.lines, state.retry) if state else (0, [])
            inflight = state.inflight if state else []
            if start or retry or inflight:
                loader.info(f"{path}: resuming after line {start}"
                            + (f" (retrying {len(retry)} failed lines)" if retry else "")
                            + (f" (sending {len(inflight)} lines in flight again)" if inflight else ""))
            count = _count_ndjson(path, start, retry) + len(inflight)
            planned.append(Planned(path, kind, sha, count, start, retry, state))
        else:
            if state is not None and state.state == "sending":
                loader.info(f"{path}: was being sent when the last load stopped; sending it again "
                            "under the same batch id")
            planned.append(Planned(path, kind, sha, _count_bundle(path), state=state))
    return planned, problems


def run_load(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point of `fhirserver load`; returns the exit code (0 ok, 1 something failed)."""
    from tqdm import tqdm

    started = time.monotonic()
    target: Target | None = None
    journal_engine = None
    bar = None
    loader: Loader | None = None
    try:
        if args.url:
            from fhirserver.load.auth import bearer_for

            target = HttpTarget(args.url, token=bearer_for(args, settings))
            journal_engine, _shown = open_database(settings)  # the loader's own database
        else:
            direct = DirectTarget(settings)
            target, journal_engine = direct, direct.engine
        journal = Journal(journal_engine, target.describe())
        if getattr(args, "forget_journal", False):
            journal.forget()
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
        if isinstance(target, DirectTarget) and loader.resources:
            target.repo.analyze()  # the planner's statistics must describe the loaded data
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
        print("interrupted; the journal knows what was committed and what was in flight: "
              "run the same command again to resume", file=sys.stderr, flush=True)
        return 130
    finally:
        if bar is not None:
            bar.close()
        if target is not None:
            target.close()
        if journal_engine is not None:
            journal_engine.dispose()
    elapsed = time.monotonic() - started
    rate = loader.resources / elapsed if elapsed > 0 else 0.0
    skipped = f" ({loader.skipped_files} skipped)" if loader.skipped_files else ""
    print(f"loaded {loader.loaded_files} files{skipped}, {loader.resources} resources, "
          f"{loader.errors} errors in {elapsed:.1f} s ({rate:.0f} resources/s)", flush=True)
    return 1 if loader.errors else 0


__all__ = ["Loader", "run_load"]
