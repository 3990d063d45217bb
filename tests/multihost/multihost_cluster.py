"""The multi-host cluster: PostgreSQL, two API hosts behind HAProxy, a DICOM node, an S3 server,
each in its own network namespace (see multihost_harness). One cluster per blob store variant:

- `local`: the embedded file store. The DICOM node runs on API host A and shares its data
  folder (the single-host layout); host B has a folder of its own.
- `s3`: every host stores blobs in the S3-compatible server (moto); no two hosts share a folder.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import multihost_harness as mh
from fhirserver.config import Settings

BIN = Path(sys.executable).parent
API_PORT = 8080
DICOM_PORT = 11112
SCU_AE = "MHSCU"
HOSTS = {"lb": 2, "db": 10, "api-a": 11, "api-b": 12, "s3": 20, "dicom": 30, "client": 100}


def blob_url_supported() -> bool:
    """The server takes FHIRSERVER_BLOB_URL (an S3-compatible blob store) when Settings has it."""
    return "blob_url" in {f.name for f in dataclasses.fields(Settings)}


@dataclass
class Cluster:
    variant: str
    lan: mh.Lan
    addr: dict[str, str]
    haproxy_socket: Path
    client_id: str
    client_secret: str
    dicom_host: str          # namespace of the DICOM node ("api-a" for local, "dicom" for s3)
    workdir: Path

    @property
    def lb(self) -> str:
        return f"http://{self.addr['lb']}:{API_PORT}"

    def api(self, host: str) -> str:
        return f"http://{self.addr[host]}:{API_PORT}"

    def session(self) -> mh.NsSession:
        return self.lan.session("client")

    def token(self, scope: str = "system/*.cruds", via: str | None = None) -> str:
        r = self.session().post((via or self.lb) + "/auth/token", auth=(self.client_id, self.client_secret),
                                data={"grant_type": "client_credentials", "scope": scope})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def fhirserver(self, *args: str) -> str:
        """A CLI command run on the client host against the shared database."""
        r = self.lan.run("client", [str(BIN / "fhirserver"), *args], env=self.env("client"))
        assert r.returncode == 0, f"fhirserver {' '.join(args)}: {r.stderr}"
        return r.stdout

    def sql(self, query: str) -> str:
        """One value from the shared database (psql on the client host)."""
        r = self.lan.run("client", ["psql", "-h", self.addr["db"], "-U", "postgres", "-d", "fhir", "-tAc", query])
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def env(self, host: str) -> dict[str, str]:
        data = self.workdir / ("data-a" if host == self.dicom_host == "api-a" else f"data-{host}")
        env = {"FHIRSERVER_DATABASE_URL": f"postgresql://postgres@{self.addr['db']}:5432/fhir",
               "FHIRSERVER_DATA_DIR": str(data), "FHIRSERVER_BASE_URL": self.lb,
               "FHIRSERVER_LOG_REQUESTS": "0", "FHIRSERVER_LOG_LEVEL": "WARNING",
               "FHIRSERVER_HOST": self.addr.get(host, "127.0.0.1")}
        if self.variant == "s3":
            env.update({"FHIRSERVER_BLOB_URL": f"s3://fhir-blobs/mh?endpoint=http://{self.addr['s3']}:5000",
                        "AWS_ACCESS_KEY_ID": "multihost", "AWS_SECRET_ACCESS_KEY": "multihost",
                        "AWS_DEFAULT_REGION": "us-east-1"})
        return env

    def stats(self) -> dict[str, dict[str, str]]:
        return mh.haproxy_stats(self.haproxy_socket)

    def set_server(self, name: str, state: str) -> None:
        """`ready` or `maint` for API host `name` in the balancer; waits until it took effect."""
        mh.haproxy_command(self.haproxy_socket, f"set server api/{name} state {state}")
        want = "MAINT" if state == "maint" else "UP"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.stats()[f"api/{name}"]["status"].startswith(want):
                return
            time.sleep(0.2)
        raise AssertionError(f"api/{name} did not become {want}: {self.stats()[f'api/{name}']['status']}")


def start_cluster(variant: str, workdir: Path) -> Iterator[Cluster]:
    lan = mh.Lan.create(workdir)
    try:
        addr = {name: lan.add_host(name, octet) for name, octet in HOSTS.items()
                if variant == "s3" or name not in ("s3", "dicom")}
        sock = workdir / "haproxy.sock"
        cluster = Cluster(variant, lan, addr, sock, "", "", "dicom" if variant == "s3" else "api-a", workdir)
        mh.start_postgres(lan, "db", addr["db"])
        r = lan.run("client", ["psql", "-h", addr["db"], "-U", "postgres", "-qc", "CREATE DATABASE fhir"])
        assert r.returncode == 0, r.stderr
        if variant == "s3":
            moto = lan.start("s3", "moto", [str(BIN / "moto_server"), "-H", addr["s3"], "-p", "5000"])
            mh.wait_port(lan, "client", addr["s3"], 5000, proc=moto)
            import boto3

            with mh.inside(lan.ns("client")):
                boto3.client("s3", endpoint_url=f"http://{addr['s3']}:5000", region_name="us-east-1",
                             aws_access_key_id="multihost",
                             aws_secret_access_key="multihost").create_bucket(Bucket="fhir-blobs")
        cluster.fhirserver("db", "upgrade")  # once, before several hosts start on the database
        client = json.loads(cluster.fhirserver("client", "add", "--name", "multihost", "--backend",
                                                "--confidential", "--scope", "system/*.cruds"))
        cluster.client_id, cluster.client_secret = client["client_id"], client["client_secret"]
        cluster.fhirserver("dicom-node", "add", "--ae", SCU_AE, "--host", addr["client"], "--port", "104")
        apis = {}
        for host in ("api-a", "api-b"):
            apis[host] = lan.start(host, host, [str(BIN / "fhirserver"), "serve", "--port", str(API_PORT),
                                                "--dicom-port", "0", "--workers", "2", "--threads", "4"],
                                   env=cluster.env(host))
        dicom_env = {**cluster.env(cluster.dicom_host), "FHIRSERVER_HOST": addr[cluster.dicom_host]}
        dicom = lan.start(cluster.dicom_host, "dicom", [str(BIN / "fhirserver"), "dicom", "--dicom-port",
                                                       str(DICOM_PORT)], env=dicom_env)
        (workdir / "haproxy.cfg").write_text(mh.haproxy_config(
            f"{addr['lb']}:{API_PORT}", {"a": f"{addr['api-a']}:{API_PORT}", "b": f"{addr['api-b']}:{API_PORT}"},
            sock))
        haproxy = lan.start("lb", "haproxy", ["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")])
        s = cluster.session()
        for host, proc in apis.items():
            mh.wait_http(s, cluster.api(host) + "/readyz", proc=proc, timeout=120)
        mh.wait_port(lan, "client", addr[cluster.dicom_host], DICOM_PORT, proc=dicom, timeout=120)
        mh.wait_http(s, cluster.lb + "/readyz", proc=haproxy)
        deadline = time.monotonic() + 20  # both servers UP in the balancer (health checks passed)
        while any(not cluster.stats()[f"api/{n}"]["status"].startswith("UP") for n in ("a", "b")):
            assert time.monotonic() < deadline, cluster.stats()
            time.sleep(0.2)
        yield cluster
    finally:
        lan.close()
