"""Token endpoint latency in process (Flask test client, SQLite): client_credentials with a secret
and with a private_key_jwt assertion, and refresh-token rotation. Wall and CPU time per request;
CPU time is the steadier figure on a loaded machine (the secret case is dominated by argon2).

    .venv/bin/python -m bench.token_latency [N]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirserver.app import create_app
from fhirserver.config import Settings
from smart_auth import store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _run(name: str, n: int, fn: Callable[[], Any]) -> None:
    fn()  # warm up
    wall, cpu = [], []
    for _ in range(n):
        t, p = time.perf_counter(), time.process_time()
        r = fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - p) * 1000)
        assert r.status_code == 200, r.get_data(as_text=True)
    print(f"{name:28s} wall median {statistics.median(wall):7.2f} ms  p90 {sorted(wall)[int(n * .9)]:7.2f} ms"
          f"  cpu median {statistics.median(cpu):7.2f} ms")


def main(n: int = 100) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-token-"))
    settings = Settings(database_url=f"sqlite:///{tmp}/db.sqlite3", base_url="http://testserver",
                        data_dir=tmp / "data", log_requests=False, insecure_no_auth=False)
    app = create_app(settings, upgrade_schema=True)
    eng = app.extensions["fhirserver"].repo.engine
    c = app.test_client()

    sec = store.add_client(eng, name="s", auth_method="client_secret_post", scope="system/*.rs",
                           grant_types=["client_credentials"])
    _run("client_credentials secret", n, lambda: c.post("/auth/token", data={
        "grant_type": "client_credentials", "client_id": sec["client_id"], "client_secret": sec["client_secret"],
        "scope": "system/*.rs"}))

    key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    jc = store.add_client(eng, name="j", auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]},
                          scope="system/*.rs")["client_id"]

    def assertion() -> Any:
        t = int(time.time())
        a = jwt.encode({"alg": "RS384", "kid": "k1"}, {"iss": jc, "sub": jc, "aud": "http://testserver/auth/token",
                                                       "exp": t + 240, "iat": t, "jti": uuid.uuid4().hex},
                       key, algorithms=["RS384"])
        return c.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                           "client_assertion_type": ASSERTION_TYPE, "client_assertion": a})
    _run("client_credentials jwt", n, assertion)

    pub = store.add_client(eng, name="p", redirect_uris=["http://app/cb"], scope="user/*.rs offline_access")
    user = store.add_user(eng, username="bench", password="password123", role="staff", organizations=["o1"])
    state = {"rt": store.save_token(eng, kind="refresh", grant_id=uuid.uuid4().hex, client_id=pub["client_id"],
                                    user_pk=user["id"], scope="user/*.rs offline_access", lifetime=3600,
                                    context={"role": "staff", "organizations": ["o1"], "patients": []})[0]}

    def refresh() -> Any:
        r = c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": state["rt"],
                                        "client_id": pub["client_id"]})
        if r.status_code == 200:
            state["rt"] = r.get_json()["refresh_token"]
        return r
    _run("refresh_token public", n, refresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
