"""How `fhirserver load --url` authenticates to a server with auth on: a bearer token given as
is, or one obtained with the client credentials grant (a `client add --backend --confidential`
client's id and secret, sent as HTTP Basic to the server's token endpoint)."""
from __future__ import annotations

from typing import Any

from fhirserver.config import Settings
from fhirserver.load.targets import FatalLoadError


def token_url(fhir_base: str) -> str:
    """The server's token endpoint, from its SMART configuration (`/auth/token` when absent)."""
    import requests

    base = fhir_base.rstrip("/")
    try:
        conf = requests.get(base + "/.well-known/smart-configuration", timeout=30)
        if conf.ok and conf.json().get("token_endpoint"):
            return str(conf.json()["token_endpoint"])
    except (requests.RequestException, ValueError):
        pass
    root = base[: -len("/fhir")] if base.endswith("/fhir") else base
    return root + "/auth/token"


def client_credentials_token(fhir_base: str, client_id: str, client_secret: str, scope: str) -> str:
    import requests

    url = token_url(fhir_base)
    try:
        resp = requests.post(url, data={"grant_type": "client_credentials", "scope": scope},
                             auth=(client_id, client_secret), timeout=60)
    except requests.RequestException as exc:
        raise FatalLoadError(f"cannot reach {url}: {exc}") from None
    body: Any = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else {}
    if resp.status_code != 200 or not body.get("access_token"):
        why = body.get("error_description") or body.get("error") or resp.text[:200]
        raise FatalLoadError(f"token request to {url} failed (HTTP {resp.status_code}): {why}")
    return str(body["access_token"])


def bearer_for(args: Any, settings: Settings) -> str | None:
    """The token the loader sends: --token (or FHIRSERVER_TOKEN), else one obtained with
    --client-id and --client-secret (or FHIRSERVER_CLIENT_SECRET), else none."""
    token = getattr(args, "token", None) or settings.token
    if token:
        return token
    client_id = getattr(args, "client_id", None)
    if client_id:
        secret = getattr(args, "client_secret", None) or settings.client_secret
        if not secret:
            raise FatalLoadError("--client-id needs --client-secret (or FHIRSERVER_CLIENT_SECRET)")
        return client_credentials_token(args.url, client_id, secret, getattr(args, "scope", None)
                                        or "system/*.cruds")
    return None
