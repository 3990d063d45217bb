"""`/auth/authorize` (GET, and POST for SMART's authorize-post): check the request, then the
login page or, for a signed-in user, the consent page. The request travels on signed."""
from __future__ import annotations

from flask import Response, request

from smart_auth.authz import check
from smart_auth.consent import consent_page
from smart_auth.session import current_user, dump_pending, login_page


def authorize() -> Response:
    user, sess = current_user()
    grant = check(None, user)
    if isinstance(grant, Response):
        return grant
    pending = dump_pending(dict(request.values.items()))
    if user is None or sess is None:
        return login_page(pending)
    return consent_page(grant, pending, user, sess)


__all__ = ["authorize"]
