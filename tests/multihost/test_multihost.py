"""Several machines, one server: two API hosts behind HAProxy, a DICOM node, PostgreSQL and an S3
server, each on its own host (network namespace), driven by real clients from a client host.

Tests run in file order on one cluster per blob store variant; the kill -9 test is last because
it takes host A down for good.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from multihost_cluster import DICOM_PORT, SCU_AE, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multihost")]

DICOM_FILE = Path(__file__).parents[1] / "data" / "dicom" / "eCT_Supplemental.dcm"
ARTIFACTS = Path(__file__).parents[2] / "var" / "multihost"
FHIR_JSON = "application/fhir+json"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}


def _patient(family: str, ident: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
    if ident:
        res["identifier"] = [{"system": "urn:multihost", "value": ident}]
    return res


def test_write_on_one_host_is_read_on_the_other_at_once(cluster: Cluster) -> None:
    s, h = cluster.session(), _h(cluster.token())
    family = f"Across{uuid.uuid4().hex[:8]}"
    r = s.post(cluster.api("api-a") + "/fhir/Patient", json=_patient(family), headers=h)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = s.get(cluster.api("api-b") + f"/fhir/Patient/{pid}", headers=h)  # no wait: same database
    assert r.status_code == 200 and r.json()["name"][0]["family"] == family
    found = s.get(cluster.api("api-b") + "/fhir/Patient", params={"family": family}, headers=h).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [pid]  # the search index too
    body = {**r.json(), "active": True}
    r = s.put(cluster.api("api-b") + f"/fhir/Patient/{pid}", json=body,
              headers={**h, "If-Match": r.headers["ETag"]})
    assert r.status_code == 200, r.text
    r = s.get(cluster.api("api-a") + f"/fhir/Patient/{pid}/_history/2", headers=h)
    assert r.status_code == 200 and r.json()["active"] is True
    # a stale version on the other host is refused: version checks hold across hosts
    r = s.put(cluster.api("api-a") + f"/fhir/Patient/{pid}", json=body, headers={**h, "If-Match": 'W/"1"'})
    assert r.status_code == 412, r.text


def test_write_through_the_balancer_is_read_on_both_hosts(cluster: Cluster) -> None:
    s, h = cluster.session(), _h(cluster.token())
    before = {n: int(cluster.stats()[f"api/{n}"]["stot"]) for n in ("a", "b")}
    ids = []
    for i in range(6):
        r = s.post(cluster.lb + "/fhir/Patient", json=_patient(f"Balanced{i}"), headers=h)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    after = {n: int(cluster.stats()[f"api/{n}"]["stot"]) for n in ("a", "b")}
    assert all(after[n] > before[n] for n in after), (before, after)  # both hosts took writes
    for host in ("api-a", "api-b"):
        for i, pid in enumerate(ids):
            r = s.get(cluster.api(host) + f"/fhir/Patient/{pid}", headers=h)
            assert r.status_code == 200 and r.json()["name"][0]["family"] == f"Balanced{i}", (host, r.text)


def test_revocation_on_one_host_refuses_the_token_on_the_other_at_once(cluster: Cluster) -> None:
    s = cluster.session()
    doomed, other = cluster.token(), cluster.token()
    url = cluster.api("api-b") + "/fhir/Patient?_count=1"
    for _ in range(6):  # every worker of host B has checked (and cached) both tokens
        assert s.get(url, headers=_h(doomed)).status_code == 200
        assert s.get(url, headers=_h(other)).status_code == 200
    r = s.post(cluster.api("api-a") + "/auth/revoke", data={"token": doomed},
               auth=(cluster.client_id, cluster.client_secret))
    assert r.status_code == 200, r.text
    statuses = [s.get(url, headers=_h(doomed)).status_code for _ in range(6)]
    assert statuses == [401] * 6, f"host B after the revocation on host A: {statuses}"
    assert s.get(url, headers=_h(other)).status_code == 200  # only that token is refused


def test_cstore_on_the_dicom_host_is_retrieved_with_wado_through_the_balancer(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM_FILE)
    ds.PatientID = f"MH-{cluster.variant}"
    sent = tmp_path / "scan.dcm"
    ds.save_as(sent)
    dicom_addr = cluster.addr[cluster.dicom_host]
    r = cluster.lan.run("client", ["storescu", "-aet", SCU_AE, "-aec", "FHIRSERVER", dicom_addr,
                                   str(DICOM_PORT), str(sent)])
    assert r.returncode == 0, r.stdout + r.stderr
    # a series of more instances in one association: C-STORE throughput for docs/scaling.md
    more = tmp_path / "series"
    more.mkdir()
    for i in range(12):
        copy = pydicom.dcmread(DICOM_FILE)
        copy.PatientID, copy.SOPInstanceUID = ds.PatientID, pydicom.uid.generate_uid()
        copy.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
        copy.save_as(more / f"{i}.dcm")
    started = time.monotonic()
    r = cluster.lan.run("client", ["storescu", "-aet", SCU_AE, "-aec", "FHIRSERVER", dicom_addr,
                                   str(DICOM_PORT), *sorted(str(p) for p in more.iterdir())])
    store_seconds = time.monotonic() - started
    assert r.returncode == 0 and "Failed" not in r.stderr, r.stdout + r.stderr
    s, token = cluster.session(), cluster.token("system/*.rs")
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    # the index is in the database: both API hosts find the study
    for base in (cluster.api("api-a"), cluster.api("api-b")):
        found = s.get(base + "/dicomweb/studies", params={"StudyInstanceUID": study},
                      headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"})
        assert found.status_code == 200 and len(found.json()) == 1, found.text
    # the bytes: from either API host and through the balancer on the object store; on the
    # embedded file store only the host that shares the DICOM node's folder has them
    bases = [cluster.lb, cluster.api("api-a"), cluster.api("api-b")] if cluster.variant == "s3" \
        else [cluster.api(cluster.dicom_host)]
    for base in bases:
        web = DICOMwebClient(url=base + "/dicomweb", session=cluster.session(),
                             headers={"Authorization": f"Bearer {token}"})
        got = web.retrieve_instance(study, series, sop)
        assert got.SOPInstanceUID == sop and got.PatientID == ds.PatientID
        assert got.PixelData == ds.PixelData
    web = DICOMwebClient(url=bases[0] + "/dicomweb", session=cluster.session(),
                         headers={"Authorization": f"Bearer {token}"})
    started = time.monotonic()
    series_back = web.retrieve_series(study, ds.SeriesInstanceUID + ".9")
    wado_seconds = time.monotonic() - started
    assert len(series_back) == 12 and all(x.PixelData == ds.PixelData for x in series_back)
    megabytes = 12 * DICOM_FILE.stat().st_size / 1e6
    figures = {"variant": cluster.variant, "instances": 12, "megabytes": round(megabytes, 1),
               "cstore_instances_per_second": round(12 / store_seconds, 1),
               "cstore_mb_per_second": round(megabytes / store_seconds, 1),
               "wado_series_mb_per_second": round(megabytes / wado_seconds, 1),
               "wado_via": "balancer" if bases[0] == cluster.lb else "host A",
               "index_row_bytes": int(cluster.sql("SELECT avg(pg_column_size(t.*))::int FROM dicom_instance t"))}
    print(f"\nDICOM through the hosts ({cluster.variant}): {json.dumps(figures)}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"dicom-{cluster.variant}.json").write_text(json.dumps(figures, indent=2))


def _load(cluster: Cluster, seconds: float, threads: int, work: str, pid: str, token: str) -> dict[str, Any]:
    """Requests/s through the balancer: `threads` clients doing reads or creates for `seconds`."""
    counts: Counter = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        s, h = cluster.session(), _h(token)
        n = bad = 0
        while time.monotonic() < stop:
            if work == "read":
                r = s.get(cluster.lb + f"/fhir/Patient/{pid}", headers=h)
                ok = r.status_code == 200
            else:
                r = s.post(cluster.lb + "/fhir/Patient", json=_patient("Throughput"), headers=h)
                ok = r.status_code == 201
            n, bad = n + ok, bad + (not ok)
        with lock:
            counts["ok"] += n
            counts["bad"] += bad

    started = time.monotonic()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    return {"requests": counts["ok"], "errors": counts["bad"], "seconds": round(elapsed, 2),
            "per_second": round(counts["ok"] / elapsed, 1)}


def test_throughput_of_one_and_two_api_hosts(cluster: Cluster) -> None:
    token = cluster.token()
    s = cluster.session()
    pid = s.post(cluster.lb + "/fhir/Patient", json=_patient("Reader"), headers=_h(token)).json()["id"]
    figures: dict[str, Any] = {}
    size_sql = "SELECT pg_database_size('fhir') || ' ' || (SELECT count(*) FROM resource)"
    size0, count0 = map(int, cluster.sql(size_sql).split())
    for label, hosts in (("one_host", ["a"]), ("two_hosts", ["a", "b"])):
        cluster.set_server("b", "ready" if "b" in hosts else "maint")
        _load(cluster, 0.5, 4, "read", pid, token)  # warm both hosts' workers and pools
        figures[label] = {work: _load(cluster, 4, 8, work, pid, token) for work in ("read", "create")}
    cluster.set_server("b", "ready")
    size1, count1 = map(int, cluster.sql(size_sql).split())
    figures["database_bytes_per_created_patient"] = round((size1 - size0) / max(count1 - count0, 1))
    figures["rss_mb"] = {host: cluster.lan.rss_mb(host) for host in cluster.addr if host != "client"}
    figures["ratio"] = {work: round(figures["two_hosts"][work]["per_second"] /
                                    max(figures["one_host"][work]["per_second"], 0.1), 2)
                        for work in ("read", "create")}
    figures["variant"] = cluster.variant
    figures["setup"] = ("2 gunicorn workers x 4 threads per API host, 8 client threads, "
                        "HAProxy roundrobin, one PostgreSQL host; all on one machine")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"throughput-{cluster.variant}.json").write_text(json.dumps(figures, indent=2))
    print(f"\nmulti-host throughput ({cluster.variant}): {json.dumps(figures)}")
    for label in ("one_host", "two_hosts"):
        for work in ("read", "create"):
            assert figures[label][work]["errors"] == 0, figures
            assert figures[label][work]["requests"] > 0, figures


def test_kill9_of_an_api_host_under_write_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    """Clients write through the balancer with conditional creates (idempotent, so the balancer
    and the client may retry them); host A dies mid-load. Every acknowledged write must be there,
    exactly once, and every write must in the end succeed on host B."""
    token = cluster.token()
    run = uuid.uuid4().hex[:8]
    acked: dict[str, str] = {}  # identifier -> id of every 200/201 answer
    log: Counter = Counter()
    lock = threading.Lock()
    killed, stop = threading.Event(), threading.Event()
    stats_before = cluster.stats()

    def writer(k: int) -> None:
        s, h = cluster.session(), _h(token)
        i = 0
        while not stop.is_set():
            ident, i = f"{run}-{k}-{i}", i + 1
            for attempt in range(8):
                try:
                    r = s.post(cluster.lb + "/fhir/Patient", json=_patient("Load", ident),
                               headers={**h, "If-None-Exist": f"identifier=urn:multihost|{ident}"}, timeout=20)
                except requests.RequestException:
                    code = "connection-error"
                else:
                    code = r.status_code
                with lock:
                    log[f"answer {code}"] += 1
                    if attempt:
                        log["client retries"] += 1
                if code in (200, 201):
                    with lock:
                        acked[ident] = r.json()["id"]
                        log["acknowledged after kill" if killed.is_set() else "acknowledged before kill"] += 1
                    break
                time.sleep(0.2)
            else:
                with lock:
                    log["gave up"] += 1

    pool = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in pool:
        t.start()
    def wait_for(what: str, n: int, seconds: float) -> None:  # by progress, not by the clock alone
        deadline = time.monotonic() + 120
        least = time.monotonic() + seconds
        while time.monotonic() < least or log[what] < n:
            assert time.monotonic() < deadline, f"no progress: {dict(log)}"
            time.sleep(0.1)

    wait_for("acknowledged before kill", 30, 2.0)  # host A is taking its share of the writes
    log["processes killed on host A"] = cluster.lan.kill_host("api-a")
    killed.set()
    wait_for("acknowledged after kill", 30, 4.0)
    stop.set()
    for t in pool:
        t.join()
    stats = cluster.stats()
    balancer = {f: int(stats["api/BACKEND"][f] or 0) - int(stats_before["api/BACKEND"][f] or 0)
                for f in ("wretr", "wredis")}
    report = {**dict(log), "balancer retries": balancer["wretr"], "balancer redispatches": balancer["wredis"],
              "writes": len(acked), "host A status": stats["api/a"]["status"]}
    print(f"\nkill -9 under load ({cluster.variant}): {json.dumps(report)}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"kill9-{cluster.variant}.json").write_text(json.dumps(report, indent=2))
    assert log["gave up"] == 0, report  # every write succeeded in the end (on host B)
    assert int(stats["api/a"]["stot"]) > int(stats_before["api/a"]["stot"]), report  # A served some
    assert log["processes killed on host A"] >= 3, report  # gunicorn master and its two workers
    s, h = cluster.session(), _h(token)
    missing = [pid for pid in acked.values()
               if s.get(cluster.api("api-b") + f"/fhir/Patient/{pid}", headers=h).status_code != 200]
    assert missing == [], f"acknowledged but lost: {missing[:10]} ({len(missing)} of {len(acked)})"
    total = s.get(cluster.api("api-b") + "/fhir/Patient", headers=h,
                  params={"identifier": "urn:multihost|", "_summary": "count"}).json()["total"]
    assert total == len(acked), f"{total} Patients for {len(acked)} acknowledged writes (duplicates?)"
