"""Per-request telemetry: Prometheus counters/histograms, one JSON log line, and `/metrics`.

One before/after hook pair does both, so a request pays for one clock read at each end. Routes
are reported as templates (`/fhir/Patient/{id}`), never raw paths: a metric label per id would
grow without bound.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request

from fhirserver import requestid
from fhirserver.metrics import exposition, metrics, watch_pool
from fhirserver.model import R4_RESOURCE_TYPES

log = logging.getLogger("fhirserver.request")
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def fhir_route(path: str) -> str:
    """`/fhir/Patient/123/_history/2` -> `/fhir/Patient/{id}/_history/{vid}`: the FHIR interaction's
    shape, with the type kept only when it is an R4 type (a client cannot invent label values)."""
    segs = [s for s in path.split("/") if s][1:]  # drop "fhir"
    out = ["/fhir"]
    for i, seg in enumerate(segs[:4]):
        if seg.startswith("$") or seg.startswith("_") or seg == "metadata":
            out.append(seg if len(seg) <= 40 else "{op}")
        elif i == 0 or (i == 2 and segs[1:2] and not segs[1].startswith(("$", "_"))):
            out.append(seg if seg in R4_RESOURCE_TYPES else "{type}")
        elif i >= 2 and segs[i - 1] == "_history":
            out.append("{vid}")
        else:
            out.append("{id}")
    if len(segs) > 4:
        out.append("...")
    return "/".join(out)


def route_of(req: Any) -> str:
    """The matched URL rule, with the FHIR catch-all spelled out (see `fhir_route`)."""
    rule = req.url_rule
    if rule is None:
        return "unmatched"
    if rule.endpoint in ("fhir.fhir", "fhir.base", "fhir.metadata"):
        return fhir_route(req.environ.get("PATH_INFO", ""))
    return rule.rule


class RequestLog:
    """Counts, times and logs one answered request: the one place both the Flask hooks and the
    lean read path (`fhirserver.api.lean`) report through, so both show up alike."""

    def __init__(self, log_requests: bool) -> None:
        self.m = metrics()
        self.log_requests = log_requests

    def done(self, env: Any, route: str, status: int, took: float, rid: str, nbytes: int,
             client_id: str | None) -> None:
        method = env.get("REQUEST_METHOD", "")
        if method not in _METHODS:  # any token is a valid method: keep label values bounded
            method = "OTHER"
        self.m.http_requests.labels(method, route, status).inc()
        self.m.http_latency.labels(method, route).observe(took)
        if self.log_requests and log.isEnabledFor(logging.INFO):
            query = env.get("QUERY_STRING", "")
            log.info(orjson.dumps({
                "event": "http", "request_id": rid, "method": method, "route": route,
                "path": env.get("PATH_INFO", "") + ("?" + query if query else ""),
                "status": status, "duration_ms": round(took * 1000, 2),
                "bytes": nbytes, "remote": env.get("REMOTE_ADDR"),
                "client_id": client_id}).decode())


def install_telemetry(app: Flask) -> RequestLog:
    """Count and time every request; log it as one JSON line when `log_requests` is on."""
    services = app.extensions["fhirserver"]
    watch_pool(services.repo.engine)
    report = RequestLog(services.settings.log_requests)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        g.request_id = requestid.accept_or_new(request.headers.get(requestid.HEADER))
        g.request_id_token = requestid.bind(g.request_id)

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            requestid.unbind(token)

    @app.after_request
    def _finish(resp: Response) -> Response:
        took = time.perf_counter() - getattr(g, "t0", time.perf_counter())
        rid = getattr(g, "request_id", None) or requestid.accept_or_new(None)
        resp.headers[requestid.HEADER] = rid
        principal = getattr(g, "fhir_principal", None)
        report.done(request.environ, route_of(request), resp.status_code, took, rid, resp.content_length or 0,
                    getattr(principal, "client_id", None))
        return resp

    return report


def _outbox_depth() -> Iterable[Any]:
    """Emails waiting in the outbox (unsent) and jobs waiting or running per kind: read from the
    database at scrape time, so every worker reports the same value."""
    from prometheus_client.core import GaugeMetricFamily

    from fhirserver.notify import pending_count

    family = GaugeMetricFamily("fhirserver_queue_depth", "Jobs waiting", labels=["queue"])
    services = current_app.extensions["fhirserver"]
    try:
        n = pending_count(services.repo.engine)
        family.add_metric(["notify_outbox"], float(n))
        depth = services.jobs.depth()  # waiting or running jobs, one series per job kind
        for kind in sorted(set(services.jobs.registry.kinds) | set(depth)):
            family.add_metric([kind], float(depth.get(kind, 0)))
    except Exception:  # noqa: BLE001 - a scrape never fails for a database hiccup (see /readyz)
        pass
    yield family


def metrics_blueprint() -> Blueprint:
    """`/metrics`, open like `/healthz`: counters carry no patient data (scrapers sit on the
    operator's network; put the server behind a proxy to restrict it)."""
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def _metrics() -> Response:
        body, ctype = exposition([_outbox_depth])
        return Response(body, content_type=ctype)

    return bp
