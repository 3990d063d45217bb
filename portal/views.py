"""The portal blueprint, assembled from one module per area. Every FHIR access goes through
`portal.core.Fhir` with the signed-in user's SMART policy (see `portal.core`); `portal.web` holds
what every page shares (rendering, language, the sign-in guard). Endpoint names stay
`portal.<view>`: emails, the console and bookmarks link to them."""
from __future__ import annotations

from flask import Blueprint

from portal import (appointments, billing, documents, imaging, messages, profile, questionnaires, reports,
                    sharing, signin)
from portal.web import before, clinic

AREAS = (signin, reports, imaging, appointments, documents, messages, billing, questionnaires, sharing, profile)


def blueprint() -> Blueprint:
    bp = Blueprint("portal", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")
    bp.before_request(before)
    # the clinic's name and logo on every page of the app, the OAuth sign-in and consent pages too
    bp.app_context_processor(lambda: {"clinic": clinic()})
    for area in AREAS:
        area.register(bp)
    return bp
