"""Synthea ingest for `bench.run`: every bundle POSTed as a transaction by a few clients at once."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from bench import loadgen



from bench.harness import BALANCE, CpuMeter, log

INGEST_CLIENTS = 3


def synthea_ingest(port: int, files: list[Path], meter: CpuMeter) -> dict[str, Any]:
    """POST every bundle as a transaction, INGEST_CLIENTS at a time; resources/s over wall time."""
    import http.client

    socks = loadgen.balanced("127.0.0.1", port, INGEST_CLIENTS, meter.app_pids if BALANCE else None)

    bundles = []
    for f in files:
        data = f.read_bytes()
        bundles.append((f.name, data, len(json.loads(data)["entry"])))
    bundles.sort(key=lambda b: -len(b[1]))  # largest first: the clients finish together
    queue = list(bundles)
    lock = threading.Lock()
    done: dict[str, Any] = {"resources": 0, "bundles": 0, "failed": []}
    lat: list[float] = []

    def work(sock: Any) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.sock = sock  # the balanced connection (http.client reconnects by itself if it closes)
        while True:
            with lock:
                if not queue:
                    break
                name, data, n = queue.pop(0)
            t0 = time.perf_counter()
            conn.request("POST", "/fhir", body=data, headers={
                "Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
                "Prefer": "return=minimal"})
            resp = conn.getresponse()
            body = resp.read()
            took = time.perf_counter() - t0
            ok = resp.status == 200
            if ok:
                entries = json.loads(body).get("entry", [])
                ok = len(entries) == n and all(str(e.get("response", {}).get("status", "")).startswith("201")
                                               for e in entries)
            with lock:
                lat.append(took)
                if ok:
                    done["resources"] += n
                    done["bundles"] += 1
                else:
                    done["failed"].append(f"{name}: HTTP {resp.status} {body[:300]!r}")
        conn.close()

    threads = [threading.Thread(target=work, args=(sk,), daemon=True) for sk in socks]
    with meter:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    lat.sort()
    out = {"resources": done["resources"], "bundles": done["bundles"], "seconds": round(wall, 2),
           "resources_per_s": round(done["resources"] / wall, 1) if wall else 0.0,
           "failed": done["failed"],
           "bundle_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
           "bundle_max_ms": round(lat[-1] * 1000, 1) if lat else None,
           "cpu_ms_per_resource": meter.per_request(done["resources"]),
           "cpu_bound_resources_per_s": meter.cpu_bound_rate(done["resources"]),
           "machine_busy": meter.busy_share()}
    log(f"{'synthea ingest':<18} {out['resources_per_s']:8.0f} resources/s ({out['resources']} in "
        f"{wall:.1f}s)  CPU ms/resource {out['cpu_ms_per_resource']}")
    return out

