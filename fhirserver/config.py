"""One settings object for the whole server, from command-line flags and FHIRSERVER_* variables."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that varies between deployments; nothing else is read from the environment."""

    host: str = "127.0.0.1"
    port: int = 8080
    dicom_port: int = 11112
    dicom_ae: str = "FHIRSERVER"
    dicom_host: str = ""                 # DICOM listen address (default: host)
    dicom_reject_unknown: bool = True    # reject calling AEs missing from `dicom-node` registry
    dicom_fast_path: bool = True         # the DICOM node's library shortcuts (dicom/fastpath.py)
    dicom_fsync: bool = True             # a stored instance's file reaches the disk before C-STORE/STOW success
    dicom_processes: int = 0             # receiving processes of `fhirserver dicom` (0: one per CPU)
    dicom_switch_interval: float = 0.001  # sys.setswitchinterval of a receiver: several association threads
    data_dir: Path = Path("./var")
    # where DICOM instances and export files go: empty, the data folder (<data_dir>/dicom);
    # s3://bucket/prefix?endpoint=http://host:9000 an S3-compatible store shared by every host
    blob_url: str = ""
    database_url: str = ""
    base_url: str = ""
    smtp_url: str = ""
    workers: int = 2
    max_body_bytes: int = 64 * 1024 * 1024
    max_url_bytes: int = 8190            # request line (gunicorn answers 414 beyond, as an OperationOutcome)
    max_header_bytes: int = 8190         # one header line (431 beyond)
    max_header_fields: int = 100         # header lines (431 beyond)
    max_bundle_entries: int = 10_000     # entries of one batch/transaction (413 beyond)
    statement_seconds: float = 30.0      # budget of one database statement (503 beyond; 0: none)
    bundle_seconds: float = 120.0        # budget of one batch/transaction (503 beyond; 0: none)
    default_page_size: int = 50
    max_page_size: int = 1000
    insecure_no_auth: bool = False
    access_token_seconds: int = 3600
    refresh_token_seconds: int = 90 * 24 * 3600  # offline_access
    online_refresh_seconds: int = 8 * 3600  # online_access
    log_requests: bool = True            # one JSON line per HTTP request and per DICOM association
    lean_reads: bool = True              # plain 200 reads by id skip Flask (fhirserver.api.lean)
    log_level: str = "INFO"
    guardian_age_limit: int = 18         # a guardian's access ends at this age of the child
    invitation_seconds: int = 72 * 3600  # an old forwarded invitation cannot take an account
    dev_mode: bool = False               # `serve --dev` (demo clinic, /portal/dev/mail)
    portal_cancel_hours: int = 24        # online cancellation until this many hours before
    portal_upload_max_bytes: int = 5 * 1024 * 1024  # patient uploads: one upload cannot fill the disk
    share_link_seconds: int = 7 * 24 * 3600  # report share links expire: a leaked link stops working
    subscription_attempts: int = 6       # POSTs of one notification before the subscription errs
    subscription_backoff_seconds: float = 2.0  # wait after the first failure, doubled each time
    subscription_lease_seconds: int = 60  # a worker that died mid-delivery is replaced after this
    job_threads: int = 2                 # job worker threads per `serve` worker process (0: none)
    job_poll_seconds: float = 0.5        # how often an idle job worker looks for due jobs
    export_seconds: int = 24 * 3600      # $export files (and their status) expire after this
    # the clinic as patients see it: portal header, OAuth pages, invitation emails, invoice PDFs
    clinic_name: str = ""
    clinic_timezone: str = "UTC"         # IANA name; every time a patient reads is shown in it
    clinic_address: str = ""
    clinic_tax_id: str = ""
    clinic_logo: str = ""                # path of a PNG, JPEG or SVG file
    # secrets one command takes when its flag is absent; kept out of repr (and so out of logs)
    user_password: str = dataclasses.field(default="", repr=False)  # `user add|passwd`
    token: str = dataclasses.field(default="", repr=False)          # `load --url`: bearer token
    client_secret: str = dataclasses.field(default="", repr=False)  # `load --url --client-id`

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path(self.data_dir) / 'fhirserver.sqlite3').resolve()}"

    @property
    def root_url(self) -> str:
        """The server's public root URL: the one source of every absolute link it hands out
        (emails, OIDC issuer and discovery, Bundle links, Location headers, DICOMweb URLs).

        The configured `--base-url` (a trailing `/fhir` dropped), else the address the server was
        started on. Never a request's Host header: a client must not choose where the links in a
        password-reset email or the token issuer point to.
        """
        if self.base_url:
            base = self.base_url.rstrip("/")
            return base[: -len("/fhir")] if base.endswith("/fhir") else base
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):  # a wildcard listen address is no address to link to
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def fhir_base(self) -> str:
        """Absolute FHIR base URL used in Location headers and Bundle links (see `root_url`)."""
        return self.root_url + "/fhir"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


_ENV_FIELDS = {
    "host": str, "port": int, "dicom_port": int, "dicom_ae": str, "dicom_host": str,
    "dicom_reject_unknown": lambda v: v.strip().lower() not in ("0", "false", "no", "off"), "data_dir": Path,
    "blob_url": str,
    "dicom_fast_path": lambda v: v.strip().lower() not in ("0", "false", "no", "off"),
    "dicom_fsync": lambda v: v.strip().lower() not in ("0", "false", "no", "off"),
    "dicom_processes": int, "dicom_switch_interval": float,
    "database_url": str, "base_url": str, "smtp_url": str, "workers": int,
    "max_body_bytes": int, "max_url_bytes": int, "max_header_bytes": int, "max_header_fields": int,
    "max_bundle_entries": int, "statement_seconds": float, "bundle_seconds": float,
    "default_page_size": int, "max_page_size": int,
    "guardian_age_limit": int, "invitation_seconds": int,
    "log_requests": lambda v: v.strip().lower() not in ("0", "false", "no", "off"), "log_level": str,
    "lean_reads": lambda v: v.strip().lower() not in ("0", "false", "no", "off"),
    "portal_cancel_hours": int, "portal_upload_max_bytes": int, "share_link_seconds": int,
    "subscription_attempts": int, "subscription_backoff_seconds": float, "subscription_lease_seconds": int,
    "job_threads": int, "job_poll_seconds": float, "export_seconds": int,
    "clinic_name": str, "clinic_timezone": str, "clinic_address": str, "clinic_tax_id": str, "clinic_logo": str,
    "user_password": str, "token": str, "client_secret": str,
}


def settings_from_env(environ: Mapping[str, str] | None = None, *, defaults: Mapping[str, Any] | None = None,
                      **overrides: Any) -> Settings:
    """Build Settings: `defaults` (a mode's own, e.g. the demo clinic of `--dev`), then FHIRSERVER_*
    variables over them, then explicit overrides (flags win)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = dict(defaults or {})
    for name, conv in _ENV_FIELDS.items():
        raw = env.get("FHIRSERVER_" + name.upper())
        if raw not in (None, ""):
            values[name] = conv(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
