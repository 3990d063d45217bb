"""Where Bundles go: a running server over HTTP, or straight into the database.

Both run the server's own Bundle code (over HTTP, or `bundles.process` on one Repository), so the
two modes share the file handling, error reporting and resume logic. Every Bundle carries a batch
id (`Bundle.identifier` in `BATCH_ID_SYSTEM`); an answer "already committed" for that id (409
`duplicate` naming it) is how a resumed load learns that the interrupted send did commit.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

import orjson

from fhirserver.access import SystemJob
from fhirserver.config import Settings
from fhirserver.errors import FhirError, outcome
from fhirserver.interactions import Context, process_bundle
from fhirserver.model import dumps
from fhirserver.search import SearchEngine
from fhirserver.storage import BATCH_ID_SYSTEM, Repository, make_engine, upgrade
from fhirserver.jobs import Jobs
from fhirserver.subscriptions import install as install_subscriptions


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
    """Outcome of sending one Bundle: a whole-bundle failure, or per-entry statuses.

    `replayed`: the Bundle had been committed before under this batch id (nothing written now);
    `replayed_entries`: the same for single entries of a batch Bundle.
    """

    failure: Failure | None = None
    entry_errors: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)  # index, status, text
    replayed: bool = False
    replayed_entries: list[int] = dataclasses.field(default_factory=list)


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


def is_replay(status: int, oo: Any, batch_id: str | None) -> bool:
    """409 `duplicate` naming our batch id: the server already committed this work."""
    if status != 409 or not batch_id or not isinstance(oo, dict):
        return False
    return any(isinstance(i, dict) and i.get("code") == "duplicate" and batch_id in str(i.get("diagnostics"))
               for i in oo.get("issue") or [])


def _status_code(status: Any) -> int:
    """'201 Created' -> 201; anything unparsable counts as a server error."""
    try:
        return int(str(status).strip().split(" ", 1)[0])
    except ValueError:
        return 500


def entry_results(response_bundle: Any, batch_id: str | None = None) -> Result:
    """Entry errors of a batch/transaction response, with the entries committed earlier apart."""
    result = Result()
    if not isinstance(response_bundle, dict):
        return result
    for i, entry in enumerate(response_bundle.get("entry") or []):
        resp = (entry or {}).get("response") or {}
        code = _status_code(resp.get("status"))
        if is_replay(code, resp.get("outcome"), batch_id):
            result.replayed_entries.append(i)
        elif code >= 400:
            result.entry_errors.append(
                (i, code, diagnostics_of(resp.get("outcome")) or f"status {resp.get('status')}"))
    return result


def entry_errors(response_bundle: Any) -> list[tuple[int, int, str]]:
    """(entry index, status, diagnostics) of every batch-response entry with a 4xx/5xx status."""
    return entry_results(response_bundle).entry_errors


def batch_id_of(bundle: dict[str, Any]) -> str | None:
    ident = bundle.get("identifier")
    if isinstance(ident, dict) and ident.get("system") == BATCH_ID_SYSTEM:
        return ident.get("value")
    return None


def _short_exc(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------------------------
# Targets


class Target(Protocol):
    """Where Bundles go; `describe` names it in the journal."""

    def describe(self) -> str: ...

    def send(self, bundle: dict[str, Any]) -> Result:
        """Send one Bundle (stamped with its batch id)."""

    def close(self) -> None: ...


class HttpTarget:
    """POSTs Bundles to the base URL of a running server over one keep-alive session.

    `Prefer: return=minimal`: the loader never reads the stored resources back, and not
    serialising them makes the server noticeably faster.
    """

    def __init__(self, url: str, timeout: float = 600.0, token: str | None = None) -> None:
        import requests

        self.requests = requests
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({
            "Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
            "Prefer": "return=minimal",
        })
        if token:  # a server with auth on (see fhirserver.load.auth)
            self.session.headers["Authorization"] = f"Bearer {token}"

    def describe(self) -> str:
        return "url:" + self.base

    def send(self, bundle: dict[str, Any]) -> Result:
        batch_id = batch_id_of(bundle)
        try:
            resp = self.session.post(self.base, data=dumps(bundle), timeout=self.timeout)
        except self.requests.RequestException as exc:
            raise FatalLoadError(f"cannot reach {self.base}: {_short_exc(exc)}") from None
        try:
            body = orjson.loads(resp.content) if resp.content else None
        except orjson.JSONDecodeError:
            body = None
        if resp.status_code in (401, 403):
            raise FatalLoadError(f"{self.base} answered HTTP {resp.status_code}: "
                                 f"{diagnostics_of(body) or resp.text[:300]}")
        if is_replay(resp.status_code, body, batch_id):
            return Result(replayed=True)
        if resp.status_code >= 400:
            text = diagnostics_of(body) if body is not None else resp.text[:500]
            return Result(Failure("", resp.status_code, text or resp.reason or ""))
        return entry_results(body, batch_id)

    def close(self) -> None:
        self.session.close()


class DirectTarget:
    """Runs Bundles through `bundles.process` on one Repository (no HTTP, schema upgraded first)."""

    def __init__(self, settings: Settings) -> None:
        self.engine, self.shown_url = open_database(settings)
        search = SearchEngine(settings.fhir_base)
        self.repo = Repository(self.engine, indexer=search.index_rows)
        install_subscriptions(self.repo, settings, Jobs(self.engine))  # loaded studies notify too
        self.ctx = Context(base=settings.fhir_base, postgres=self.repo.postgres, search=search,
                           access=SystemJob("load"))

    def describe(self) -> str:
        # The journal lives in this very database: "this database" needs no URL (which may
        # change with a host name or a moved file while the data stays the same).
        return "database"

    def send(self, bundle: dict[str, Any]) -> Result:
        from sqlalchemy.exc import InterfaceError, OperationalError

        batch_id = batch_id_of(bundle)
        try:
            response = process_bundle(self.ctx, self.repo, bundle, {"prefer": "return=minimal"})
        except FhirError as exc:
            if is_replay(exc.status, outcome(exc.issues), batch_id):
                return Result(replayed=True)
            return Result(Failure("", exc.status, "; ".join(i.diagnostics for i in exc.issues)))
        except (OperationalError, InterfaceError) as exc:
            raise FatalLoadError(f"database error ({self.shown_url}): {_short_exc(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - a server bug on one bundle must not end a long load
            return Result(Failure("", 500, f"internal error: {type(exc).__name__}: {exc}"))
        return entry_results(response, batch_id)

    def close(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings) -> tuple[Any, str]:
    """(engine with the schema upgraded, URL without password for messages)."""
    from sqlalchemy.engine import make_url

    url = settings.effective_database_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        shown = url.split("@")[-1]
    try:
        engine = make_engine(url, pool_size=2)
        upgrade(engine)
    except Exception as exc:  # noqa: BLE001 - any connection/migration problem is fatal
        raise FatalLoadError(f"cannot open database {shown}: {_short_exc(exc)}") from None
    return engine, shown


__all__ = ["DirectTarget", "FatalLoadError", "Failure", "HttpTarget", "Result", "Target",
           "batch_id_of", "diagnostics_of", "entry_errors", "entry_results", "is_replay",
           "open_database"]
