"""Appointments: the list, online booking of free slots (one transaction) and cancelling."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, Response, abort, g, request
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from portal import core
from portal.clinic import parse_time
from portal.web import _, back, now_iso, page, pid


ONLINE = ("urn:fhirserver:portal", "online-booking")


class SlotTaken(Exception):
    pass


def upcoming_and_past(f: core.Fhir, p: str) -> tuple[list[dict], list[dict]]:
    rows = f.search("Appointment", [("patient", p), ("_sort", "date"), ("_count", "200")])
    t = datetime.now(timezone.utc)
    up = [a for a in rows if (parse_time(a.get("start")) or t) >= t and a.get("status") not in ("cancelled",)]
    past = [a for a in rows if a not in up]
    return up, past[::-1]


def _open_schedules() -> list[dict]:
    return core.booking_fhir().search("Schedule", [("service-category", f"{ONLINE[0]}|{ONLINE[1]}"),
                                                   ("active", "true"), ("_count", "50")])


def _free_slots() -> list[tuple[dict, dict]]:
    out = []
    soon = datetime.now(timezone.utc).isoformat(timespec="seconds")
    user = core.user_fhir()
    for sch in _open_schedules():
        for s in user.search("Slot", [("schedule", f"Schedule/{sch['id']}"), ("status", "free"),
                                                  ("start", f"ge{soon}"), ("_sort", "start"), ("_count", "50")]):
            out.append((sch, s))
    out.sort(key=lambda x: x[1].get("start", ""))
    return out


def appointments() -> Response:
    up, past = upcoming_and_past(core.user_fhir(), pid())
    hours = getattr(core.services().settings, "portal_cancel_hours", 24)
    return page("appointments.html", up=up, past=past, hours=hours, slots=_free_slots())


def book_slot(policy: Any, patient_id: str, slot_id: str, reason: str = "") -> dict[str, Any]:
    """Book a free Slot of a Schedule open for online booking: in one transaction the booking row
    (its primary key is the slot), the Appointment (through the patient's policy) and the Slot
    marked busy (by the booking job). A second booking of the same slot fails at the database:
    SlotTaken. The Slot is locked only if the patient may see it."""
    from fhirserver.model import reference_id
    from portal.tables import portal_slot_booking as booking

    services = core.services()
    user = core.Fhir(policy)
    job = core.booking_fhir()
    try:
        with services.repo.transaction(write=True) as tx:
            tx.conn.execute(insert(booking).values(slot_id=slot_id, appointment_id="-", patient_id=patient_id,
                                                   created=int(time.time())))
            stored = tx.current("Slot", slot_id, for_update=True, where=policy.row_filter("Slot"))
            if stored is None or getattr(stored, "deleted", False) or stored.body is None:
                raise SlotTaken()
            slot = _load(stored.body)
            sched_id = reference_id(slot.get("schedule"), "Schedule", services.fhir_base())
            sch = (job.read("Schedule", sched_id, tx) if sched_id else None) or {}  # only online-bookable ones
            online = any(cd.get("system") == ONLINE[0] and cd.get("code") == ONLINE[1]
                         for c in sch.get("serviceCategory") or [] for cd in c.get("coding") or [])
            start = parse_time(slot.get("start"))
            if slot.get("status") != "free" or not online or start is None or start < datetime.now(timezone.utc):
                raise SlotTaken()
            actors = [a for a in sch.get("actor") or []]
            appt = {"resourceType": "Appointment", "status": "booked", "start": slot["start"], "end": slot["end"],
                    "slot": [{"reference": f"Slot/{slot_id}"}], "created": now_iso()[:10],
                    "serviceType": slot.get("serviceType") or sch.get("serviceType") or [],
                    "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"}]
                    + [{"actor": a, "status": "accepted"} for a in actors]}
            if reason:
                appt["comment"] = reason[:1000]
            created = user.create("Appointment", appt, tx)
            job.update("Slot", slot_id, {**slot, "status": "busy"}, tx)
            tx.conn.execute(update(booking).where(booking.c.slot_id == slot_id).values(appointment_id=created["id"]))
    except IntegrityError:
        raise SlotTaken() from None
    return created


def _load(body: Any) -> dict[str, Any]:
    return json.loads(body) if isinstance(body, (str, bytes)) else dict(body)


def book() -> Response:
    slot_id = request.form.get("slot", "")
    reason = request.form.get("reason", "")
    if not slot_id:
        up, past = upcoming_and_past(core.user_fhir(), pid())
        return page("appointments.html", 400, up=up, past=past, slots=_free_slots(), form=request.form,
                    hours=getattr(core.services().settings, "portal_cancel_hours", 24),
                    errors={"slot": _("Choose a time.")})
    try:
        book_slot(g.policy, pid(), slot_id, reason)
    except SlotTaken:
        up, past = upcoming_and_past(core.user_fhir(), pid())
        return page("appointments.html", 409, up=up, past=past, slots=_free_slots(), form=request.form,
                    hours=getattr(core.services().settings, "portal_cancel_hours", 24),
                    errors={"slot": _("Sorry, this time was just booked by someone else. Choose another one.")})
    return back("portal.appointments", _("Your appointment is booked."))


def cancel(aid: str) -> Response:
    from portal.tables import portal_slot_booking as booking

    f = core.user_fhir()
    appt = f.read("Appointment", aid)
    if appt is None:
        abort(404)
    hours = getattr(core.services().settings, "portal_cancel_hours", 24)
    start = parse_time(appt.get("start"))
    if start is None or start - datetime.now(timezone.utc) < timedelta(hours=hours):
        up, past = upcoming_and_past(f, pid())
        return page("appointments.html", 409, up=up, past=past, slots=_free_slots(), hours=hours,
                    errors={"cancel": _("Appointments can be cancelled online until %(h)s hours before they "
                                        "start; please call the clinic.", h=hours)})
    job = core.booking_fhir()
    with f.repo.transaction(write=True) as tx:
        f.update("Appointment", aid, {**appt, "status": "cancelled",
                                      "cancelationReason": {"text": "cancelled by the patient online"}}, tx)
        # only the slots booked for this very appointment are freed: an Appointment the patient wrote
        # naming someone else's slot frees nothing
        booked = tx.conn.execute(select(booking.c.slot_id).where(booking.c.appointment_id == aid)).scalars().all()
        for sid in booked:
            cur = job.read("Slot", sid, tx)
            if cur is not None:
                job.update("Slot", sid, {**cur, "status": "free"}, tx)
            tx.conn.execute(delete(booking).where(booking.c.slot_id == sid, booking.c.appointment_id == aid))
    return back("portal.appointments", _("The appointment was cancelled."))


def register(bp: Blueprint) -> None:
    """Add this area's pages to the portal blueprint (endpoint names stay `portal.<view>`)."""
    for rule, view, methods in (
        ('/appointments', appointments, ['GET']),
        ('/appointments/book', book, ['POST']),
        ('/appointments/<aid>/cancel', cancel, ['POST']),
    ):
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
