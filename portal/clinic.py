"""How the portal presents things to a patient: the clinic (name, logo, address, tax id from
Settings), times in the clinic's time zone, money and invoice numbers, and status codes in words.
Pure functions of their arguments: the pages and the PDFs format alike."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portal.i18n import translate

MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
}
SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "MXN": "MX$", "CHF": "CHF"}
LOGO_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

# FHIR status codes of what a patient sees (Appointment, DiagnosticReport, Invoice, Communication,
# ImagingStudy) in words; the Spanish text is in portal.i18n
STATUS = {
    "booked": "Booked", "cancelled": "Cancelled", "fulfilled": "Attended", "noshow": "Missed",
    "pending": "Pending", "proposed": "Proposed", "arrived": "Arrived", "checked-in": "Checked in",
    "waitlist": "On the waiting list", "entered-in-error": "Entered in error",
    "registered": "Registered", "partial": "Partial", "preliminary": "Preliminary", "final": "Final",
    "amended": "Amended", "corrected": "Corrected", "appended": "Appended", "unknown": "Unknown",
    "draft": "Draft", "issued": "Issued", "balanced": "Paid", "completed": "Completed",
    "in-progress": "In progress", "available": "Available",
}


@dataclasses.dataclass(frozen=True)
class Clinic:
    name: str
    timezone: str
    address: str
    tax_id: str
    logo: str

    @property
    def zone(self) -> Any:
        try:
            return ZoneInfo(self.timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return timezone.utc

    def logo_file(self) -> tuple[bytes, str] | None:
        """The logo's bytes and type, or None when none is set (or the file is unreadable)."""
        path = Path(self.logo) if self.logo else None
        mime = LOGO_TYPES.get(path.suffix.lower()) if path else None
        if path is None or mime is None or not path.is_file():
            return None
        return path.read_bytes(), mime


def clinic_of(settings: Any) -> Clinic:
    return Clinic(name=getattr(settings, "clinic_name", "") or "",
                  timezone=getattr(settings, "clinic_timezone", "") or "UTC",
                  address=getattr(settings, "clinic_address", "") or "",
                  tax_id=getattr(settings, "clinic_tax_id", "") or "",
                  logo=getattr(settings, "clinic_logo", "") or "")


def parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def format_when(value: str | None, lang: str, zone: Any, date_only: bool = False) -> str:
    """A FHIR date or dateTime as "10 Jan 2026, 10:00 CET" in the clinic's zone; a plain date
    (no time of day) stays the date it names."""
    if not value:
        return ""
    months = MONTHS.get(lang, MONTHS["en"])
    if len(value) <= 10:  # YYYY, YYYY-MM or YYYY-MM-DD: a calendar date, not an instant
        parts = value.split("-")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return f"{int(parts[2])} {months[int(parts[1]) - 1]} {parts[0]}"
        return value
    d = parse_time(value)
    if d is None:
        return value
    d = d.astimezone(zone)
    day = f"{d.day} {months[d.month - 1]} {d.year}"
    return day if date_only else f"{day}, {d:%H:%M} {d.tzname() or ''}".rstrip()


def format_money(amount: dict[str, Any] | None, lang: str) -> str:
    """A FHIR Money as "€1,234.50" (English) or "1.234,50 €" (Spanish)."""
    if not amount or amount.get("value") is None:
        return ""
    try:
        value = float(amount["value"])
    except (TypeError, ValueError):
        return str(amount.get("value"))
    cur = amount.get("currency") or ""
    sym = SYMBOLS.get(cur, cur)
    text = f"{abs(value):,.2f}"
    sign = "-" if value < 0 else ""
    if lang == "es":
        text = text.replace(",", "·").replace(".", ",").replace("·", ".")
        return f"{sign}{text} {sym}".strip()
    return f"{sign}{sym}{text}" if len(sym) == 1 else f"{sign}{text} {sym}".strip()


def invoice_number(invoice: dict[str, Any]) -> str:
    """The number printed on an invoice: its business identifier, else its id."""
    for ident in invoice.get("identifier") or []:
        if ident.get("value"):
            return str(ident["value"])
    return str(invoice.get("id") or "")


def status_text(code: str | None, lang: str) -> str:
    if not code:
        return ""
    return translate(lang, STATUS.get(code, code.replace("-", " ").capitalize()))
