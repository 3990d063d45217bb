"""The app factory: wires settings, storage and the blueprints into one Flask app."""
from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from typing import Any

from flask import Flask, jsonify

from conformance import capability_statement
from fhirserver.api import blueprint, install_error_handlers, install_request_log
from fhirserver.config import Settings, settings_from_env
from fhirserver.search import supported_params
from fhirserver.storage import Repository, make_engine, upgrade


@dataclasses.dataclass
class Services:
    """What request handlers reach through `current_app.extensions['fhirserver']`."""

    settings: Settings
    repo: Repository
    started: str

    def fhir_base(self) -> str:
        if self.settings.base_url:
            return self.settings.fhir_base
        from flask import request

        return request.host_url.rstrip("/") + "/fhir"

    def capability_statement(self) -> dict[str, Any]:
        return capability_statement(self.fhir_base(), supported_params, self.started)


def create_app(settings: Settings | None = None, *, upgrade_schema: bool = False) -> Flask:
    """Build the WSGI app. No work at import time; the schema is migrated only when asked."""
    settings = settings or settings_from_env()
    engine = make_engine(settings.effective_database_url)
    if upgrade_schema:
        upgrade(engine)
    app = Flask("fhirserver")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["fhirserver"] = Services(
        settings, Repository(engine), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    app.register_blueprint(blueprint(), url_prefix="/fhir")
    install_error_handlers(app)
    install_request_log(app)

    @app.get("/")
    def _root():  # noqa: ANN202
        return jsonify({"name": "fhirserver", "fhir": "/fhir", "metadata": "/fhir/metadata"})

    logging.getLogger("fhirserver").setLevel(logging.INFO)
    return app
