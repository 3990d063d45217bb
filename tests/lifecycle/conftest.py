"""Fixtures for the lifecycle tests: a real SMTP server (aiosmtpd) and the auth-on app sending to it."""
from __future__ import annotations

import socket
import threading

import pytest
from sqlalchemy import text

from fhirserver.app import create_app


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        import email

        msg = email.message_from_bytes(envelope.content)
        body = msg.get_payload(decode=True).decode() if not msg.is_multipart() else \
            msg.get_payload(0).get_payload(decode=True).decode()
        with self.lock:
            self.messages.append({"to": envelope.rcpt_tos, "subject": msg["Subject"], "body": body})
        return "250 OK"

    def to(self, addr: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if addr in m["to"]]


@pytest.fixture(scope="session")
def smtp_server():  # noqa: ANN201
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    box.url = f"smtp://127.0.0.1:{port}"
    yield box
    ctl.stop()


@pytest.fixture(scope="session")
def lc_session_app(settings, session_app, smtp_server):  # noqa: ANN001, ANN201
    return create_app(settings.replace(insecure_no_auth=False, smtp_url=smtp_server.url))


@pytest.fixture()
def lapp(lc_session_app, app, smtp_server):  # noqa: ANN001, ANN201
    """Auth-on app with SMTP, on an emptied database."""
    eng = lc_session_app.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        for t in ("auth_token", "auth_code", "auth_session", "auth_user", "oauth_client", "lifecycle_invitation",
                  "lifecycle_account", "lifecycle_email", "lifecycle_access_request", "notify_outbox"):
            c.execute(text(f"DELETE FROM {t}"))
    with smtp_server.lock:
        smtp_server.messages.clear()
    return lc_session_app
