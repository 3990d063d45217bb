"""Where a DICOMweb request's CPU goes: the server app in-process under cProfile.

    .venv/bin/python -m bench.profile_dicomweb qido [N]     # or series, instances, wado, all
    BENCH_PROFILE_DB=sqlite .venv/bin/python -m bench.profile_dicomweb wado
    BENCH_PROFILE_SORT=tottime .venv/bin/python -m bench.profile_dicomweb qido

STOWs `bench.dicomweb`'s kind of instances (40 patients x 2 studies x 2 series x 3 instances,
64x64) into an `--insecure-no-auth` app on a scratch PostgreSQL database (or SQLite), then times
CPU per request (time.process_time, so waits on the database do not count) for the bench's
requests through the Flask test client, consuming streamed bodies; the audit trail is written in
this thread every 100 requests, so its share is in the figure and in the profile. Prints the same
figure for `bench.dicomweb`'s bare Flask handler (same files, same multipart framing).
"""
from __future__ import annotations

import cProfile
import io
import logging
import os
import pstats
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.harness import DEFAULT_PG, Scratch

MULTIPART = 'multipart/related; type="application/dicom"'
DJ = {"Accept": "application/dicom+json"}


def cpu_per_call(fn: Callable[[int], None], n: int) -> float:
    fn(min(n, 200))  # warm caches, prepared statements, pools
    t0 = time.process_time()
    fn(n)
    return 1000 * (time.process_time() - t0) / n


def _load(c: Any, patients: int = 40) -> list[tuple[str, str, str, str]]:
    """(patient id, study, series, sop) of every stored instance."""
    import numpy as np
    from pydicom.uid import generate_uid

    from bench.dicomweb import _instance

    rng = np.random.default_rng(7)
    out = []
    boundary = "prof-boundary"
    for p in range(patients):
        parts = []
        for _s in range(2):
            study = generate_uid()
            for se in range(2):
                series = generate_uid()
                for n in range(3):
                    sop, data = _instance(p, study, series, se + 1, n + 1, 64, rng)
                    parts.append(data)
                    out.append((f"BENCH-{p:05d}", study, series, sop))
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + d + b"\r\n"
                        for d in parts) + f"--{boundary}--\r\n".encode()
        r = c.post("/dicomweb/studies", data=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', **DJ})
        if r.status_code != 200:
            raise RuntimeError(f"STOW: {r.status_code} {r.data[:300]!r}")
    return out


def _bare_client(root: Path) -> Any:
    """`bench.dicomweb.BARE`'s Flask app (without gunicorn), serving the files under `root`."""
    from bench.dicomweb import BARE

    src = BARE.split("class S(BaseApplication)")[0].replace(
        "root, port, workers, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])",
        "")
    ns: dict[str, Any] = {"root": root}
    exec(src, ns)  # noqa: S102 - our own bench source
    return ns["app"].test_client()


def main(argv: list[str]) -> int:
    op = argv[0] if argv else "all"
    n = int(argv[1]) if len(argv) > 1 else 1000
    sort = os.environ.get("BENCH_PROFILE_SORT", "cumulative")
    admin = os.environ.get("FHIRSERVER_BENCH_DATABASE_URL") or DEFAULT_PG
    from fhirserver.app import create_app
    from fhirserver.config import Settings
    from fhirserver.storage import make_engine, upgrade

    logging.getLogger("fhirserver.request").addHandler(logging.NullHandler())
    logging.getLogger("fhirserver.request").propagate = False  # formatted, not written
    scratch = Scratch(admin)
    tmp = Path(tempfile.mkdtemp(prefix="profdw-"))
    try:
        if os.environ.get("BENCH_PROFILE_DB") == "sqlite":
            url = f"sqlite:///{tmp / 'db.sqlite3'}"
        else:
            url = scratch.create(f"fhirbench_profdw_{os.getpid()}")
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        app = create_app(Settings(database_url=url, insecure_no_auth=True, data_dir=tmp))
        c = app.test_client()
        archive = _load(c)
        audit = app.extensions["fhirserver"].audit
        audit.flush()
        audit.interval = 3600.0  # written below, in the profiled thread
        patients = sorted({a[0] for a in archive})
        studies = sorted({a[1] for a in archive})
        series = sorted({(a[1], a[2]) for a in archive})
        urls = {
            "qido": [f"/dicomweb/studies?PatientID={p}" for p in patients],
            "series": [f"/dicomweb/studies/{s}/series" for s in studies],
            "instances": [f"/dicomweb/studies/{s}/series/{se}/instances" for s, se in series],
            "wado": [f"/dicomweb/studies/{a[1]}/series/{a[2]}/instances/{a[3]}" for a in archive],
        }
        from dicom.tables import dicom_instance
        from sqlalchemy import select

        with app.extensions["fhirserver"].repo.engine.connect() as conn:
            key_of = dict(conn.execute(select(dicom_instance.c.sop_uid, dicom_instance.c.storage_key)).all())

        def runner(kind: str) -> Callable[[int], None]:
            paths = urls[kind]
            hdr = {"Accept": MULTIPART} if kind == "wado" else DJ

            def run(k: int) -> None:
                for i in range(k):
                    r = c.get(paths[i % len(paths)], headers=hdr)
                    body = b"".join(r.response) if kind == "wado" else r.data
                    if r.status_code != 200 or not body:
                        raise RuntimeError(f"{kind}: HTTP {r.status_code} {body[:300]!r}")
                    r.close()
                    if i % 100 == 99:
                        audit.flush()
            return run

        kinds = ["qido", "series", "instances", "wado"] if op == "all" else [op]
        for kind in kinds:
            print(f"{kind}: {cpu_per_call(runner(kind), n):.3f} CPU ms per request in-process")
        if "wado" in kinds:
            bc = _bare_client(Path(app.extensions["fhirserver"].settings.data_dir) / "dicom")
            keys = [key_of[a[3]] for a in archive]

            def bare(k: int) -> None:
                for i in range(k):
                    r = bc.get(f"/file/{keys[i % len(keys)]}", headers={"Accept": MULTIPART})
                    body = b"".join(r.response)
                    if r.status_code != 200 or not body:
                        raise RuntimeError(f"bare: HTTP {r.status_code}")
                    r.close()
            print(f"bare handler: {cpu_per_call(bare, n):.3f} CPU ms per request in-process")
        if os.environ.get("BENCH_PROFILE_LINES", "40") != "0":
            for kind in kinds:
                prof = cProfile.Profile(time.process_time)
                prof.enable()
                runner(kind)(n)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats(sort).print_stats(
                    int(os.environ.get("BENCH_PROFILE_LINES", "40")))
                print(f"==== {kind}\n" + out.getvalue().replace(sysconfig.get_paths()["purelib"] + "/", ""))
    finally:
        scratch.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
