"""The search engine: registry + index extraction + query compilation, as one object per app.

Custom SearchParameter resources stored on the server extend the HL7 registry; they take
effect for searches and new writes once `$reindex` has run (which also rebuilds existing rows).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from sqlalchemy import func, select

from fhirserver.model import loads
from fhirserver.search.compiler import AccessFilter, CompiledSearch, Compiler
from fhirserver.search.extract import Extractor
from fhirserver.search.registry import Registry, base_registry
from fhirserver.storage import resource

REFRESH_SECONDS = 2.0


class SearchEngine:
    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = base_url
        self._registry: Registry = base_registry()
        self._extractor = Extractor(self._registry, base_url)
        self._fingerprint: tuple[Any, ...] | None = (0, None)
        self._checked = 0.0
        self._lock = threading.Lock()

    # -- registry ------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        return self._registry

    def due(self) -> bool:
        """Whether `refresh` would look at the database now (so callers can skip a connection)."""
        return time.monotonic() - self._checked >= REFRESH_SECONDS

    def refresh(self, conn: Any, force: bool = False) -> None:
        """Pick up custom SearchParameters stored in the database (cheap check, at most every 2 s)."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        sp = (resource.c.res_type == "SearchParameter", resource.c.deleted.is_(False))
        fp = tuple(conn.execute(select(func.count(), func.max(resource.c.last_updated)).where(*sp)).one())
        if fp == self._fingerprint and not force:
            return
        bodies = [loads(b) for (b,) in conn.execute(select(resource.c.body).where(*sp))]
        custom = [b for b in bodies if b.get("status", "active") != "retired"]
        with self._lock:
            registry = base_registry().with_custom(custom) if custom else base_registry()
            self._registry = registry
            self._extractor = Extractor(registry, self.base_url)
            self._fingerprint = fp

    # -- writes --------------------------------------------------------------------------------
    def index_rows(self, res_type: str, body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return self._extractor.rows(res_type, body)

    # -- reads ---------------------------------------------------------------------------------
    def compiler(self, *, postgres: bool, access: AccessFilter | None = None) -> Compiler:
        return Compiler(self._registry, postgres=postgres, base_url=self.base_url, access=access)

    def compile(self, res_type: str | None, params: Sequence[tuple[str, str]], *, postgres: bool,
                strict: bool, access: AccessFilter | None = None) -> CompiledSearch:
        return self.compiler(postgres=postgres, access=access).compile(res_type, params, strict=strict)

    def supported_params(self, res_type: str) -> list[tuple[str, str, str]]:
        """(name, type, documentation) of every parameter searches honour for `res_type`."""
        if res_type == "Resource":
            return [("_id", "token", "Logical id of the resource"),
                    ("_lastUpdated", "date", "When the resource version last changed"),
                    ("_tag", "token", "Tags in meta"), ("_profile", "uri", "Profiles in meta"),
                    ("_security", "token", "Security labels in meta"), ("_source", "uri", "meta.source"),
                    ("_text", "string", "Words in the narrative"), ("_content", "string", "Words anywhere")]
        out = [("_id", "token", "Logical id of the resource"),
               ("_lastUpdated", "date", "When the resource version last changed"),
               ("_text", "string", "Words in the narrative"), ("_content", "string", "Words anywhere")]
        for code, p in sorted(self._registry.params(res_type).items()):
            if code in ("_id", "_lastUpdated", "_text", "_content") or p.type == "special" or \
                    (p.type != "composite" and not p.expression):
                continue
            out.append((code, p.type, p.description or code))
        return out
