"""The DICOM viewer (/viewer/, Cornerstone3D) in Debian's chromium against `serve --dev`: a patient
opens a real multi-frame CT and a JPEG 2000 MR from the portal's imaging page; the drawn pixels
change on scroll, window/level and zoom, a length measurement is drawn, Esc closes. After that, the
other patient's study does not open for her, in the viewer or through the portal's DICOMweb.
Screenshots go to tests/portal/artifacts/."""
from __future__ import annotations

import hashlib
import io
import re
import uuid
from pathlib import Path

import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

pytest.importorskip("playwright.sync_api")
from portal_helpers import ART, CHROMIUM, sign_in, staff_token  # noqa: E402
from viewer import built as viewer_built  # noqa: E402

DATA = Path(__file__).parents[1] / "data" / "dicom"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium"),
              pytest.mark.skipif(not viewer_built(), reason="viewer not built (make viewer)")]


def _dicom(name: str, patient_id: str, new_uids: bool = False) -> tuple[bytes, str]:
    ds = dcmread(DATA / name if (DATA / name).exists() else get_testdata_file(name))
    ds.PatientID = patient_id
    if new_uids:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), str(ds.StudyInstanceUID)


def _stow(root: str, tok: str, parts: list[bytes]) -> None:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    r = requests.post(root + "/dicomweb/studies", data=body, timeout=120, headers={
        "Authorization": f"Bearer {tok}", "Accept": "application/dicom+json",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text[:800]


def _give_mrn(root: str, tok: str, pid: str, mrn: str) -> None:
    h = {"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    p = requests.get(f"{root}/fhir/Patient/{pid}", headers=h, timeout=30).json()
    p["identifier"] = [{"system": "urn:demo:mrn", "value": mrn}]
    assert requests.put(f"{root}/fhir/Patient/{pid}", json=p, headers=h, timeout=30).status_code == 200


def _canvas(page) -> str:  # noqa: ANN001
    """A digest of what the viewport shows now (its screenshot)."""
    return hashlib.sha256(page.locator("#viewport").screenshot()).hexdigest()


def _wait_ready(page) -> None:  # noqa: ANN001
    page.wait_for_function("() => (window.fsViewer && window.fsViewer.ready) || document.querySelector('#status.error')",
                           timeout=90_000)
    err = page.evaluate("() => window.fsViewer && window.fsViewer.error")
    assert not err, err
    page.wait_for_function("() => window.fsViewer.voi !== undefined", timeout=30_000)


def _contrast(page) -> int:  # noqa: ANN001
    """The range of grey levels drawn in the viewport (a blank or failed image has ~0)."""
    lo, hi = Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("L").getextrema()
    return hi - lo


def _changes(page, before: str) -> str:  # noqa: ANN001
    """Poll until the picture differs from `before` (rendering is asynchronous)."""
    for _ in range(100):
        now = _canvas(page)
        if now != before:
            return now
        page.wait_for_timeout(100)
    raise AssertionError("the viewport did not change")


def _window_level(page, dx: int, dy: int) -> tuple[float, float]:  # noqa: ANN001
    """Drag with the left button from the viewport's centre (window/level); returns the centre
    once the VOI has changed."""
    voi = page.evaluate("() => window.fsViewer.voi")
    box = page.locator("#viewport").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + dx, cy + dy, steps=8)
    page.mouse.up()
    page.wait_for_function("(v) => window.fsViewer.voi.width !== v.width || window.fsViewer.voi.center !== v.center",
                           arg=voi)
    return cx, cy


def test_viewer_scroll_window_level_zoom_length_and_access(dev_server, browser):  # noqa: ANN001
    root = dev_server
    tok = staff_token(root)
    _give_mrn(root, tok, "demo-ana", "MRN-ANA")
    _give_mrn(root, tok, "demo-bob", "MRN-BOB")
    ct, ct_study = _dicom("eCT_Supplemental.dcm", "MRN-ANA")
    mr, mr_study = _dicom("emri_small_jpeg_2k_lossless.dcm", "MRN-ANA")
    bob, bob_study = _dicom("eCT_Supplemental.dcm", "MRN-BOB", new_uids=True)
    _stow(root, tok, [ct, mr, bob])

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    logs: list[str] = []
    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    page.on("response", lambda r: logs.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    sign_in(page, root, "ana@example.org")
    page.goto(root + "/portal/imaging")
    links = page.locator("a.open-viewer")
    assert links.count() == 2, page.content()[:3000]
    page.locator(f'a.open-viewer[href*="{ct_study}"]').click()
    page.wait_for_url("**/viewer/**")
    try:
        _wait_ready(page)
    except Exception:
        page.screenshot(path=str(ART / "viewer-failed.png"))
        raise AssertionError("\n".join(logs[-30:]))
    assert page.locator("#position").inner_text() == "Image 1 of 2"  # the two frames of the enhanced CT
    assert _contrast(page) > 40
    page.screenshot(path=str(ART / "viewer-01-ct.png"))
    first = _canvas(page)

    # stack scroll: the arrow key (and the Next button) moves to the second frame
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => window.fsViewer.index === 1")
    assert page.locator("#position").inner_text() == "Image 2 of 2"
    second = _changes(page, first)
    page.get_by_role("button", name="Previous").click()
    page.wait_for_function("() => window.fsViewer.index === 0")

    # window/level: a drag with the left button changes the VOI and the picture
    shown = _canvas(page)
    cx, cy = _window_level(page, 120, 80)
    leveled = _changes(page, shown)
    page.screenshot(path=str(ART / "viewer-02-window-level.png"))

    # zoom: the Zoom tool on the left button enlarges the picture
    page.get_by_role("button", name="Zoom").click()
    assert page.get_by_role("button", name="Zoom").get_attribute("aria-pressed") == "true"
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx, cy - 150, steps=8)
    page.mouse.up()
    _changes(page, leveled)

    # a length measurement: drawn as an annotation with its value in mm
    page.get_by_role("button", name="Length").click()
    page.mouse.move(cx - 100, cy)
    page.mouse.down()
    page.mouse.move(cx + 100, cy + 40, steps=10)
    page.mouse.up()
    try:
        page.wait_for_function("() => window.fsViewer.lengthMM > 0", timeout=20_000)
    except Exception:
        page.screenshot(path=str(ART / "viewer-failed-length.png"))
        raise AssertionError(page.evaluate("() => JSON.stringify(window.fsViewer.annotations().map(a => a.data))"))
    assert re.fullmatch(r"Length: \d+\.\d mm", page.locator("#measure").inner_text())
    page.screenshot(path=str(ART / "viewer-03-length.png"))
    assert second != first

    # Esc closes the viewer: back to the imaging page
    page.keyboard.press("Escape")
    page.wait_for_url("**/portal/imaging")

    # the JPEG 2000 study (10 frames): decoded, drawn, and scrolled
    page.locator(f'a.open-viewer[href*="{mr_study}"]').click()
    _wait_ready(page)
    assert page.locator("#position").inner_text() == "Image 1 of 10"
    shown = _canvas(page)
    page.mouse.move(cx, cy)
    for _ in range(4):
        page.mouse.wheel(0, 120)
    page.wait_for_function("() => window.fsViewer.index > 0")
    _changes(page, shown)
    page.screenshot(path=str(ART / "viewer-04-j2k.png"))

    # the other compressed transfer syntaxes we store: JPEG-LS, RLE, JPEG baseline (pydicom's files)
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        data, study = _dicom(name, "MRN-ANA", new_uids=True)
        _stow(root, tok, [data])
        page.goto(f"{root}/viewer/?study={study}")
        _wait_ready(page)
        assert _contrast(page) > 40, name
        page.screenshot(path=str(ART / f"viewer-06-{name[:-4]}.png"))

    # her own study's frames through the portal session answer; Bob's study is not hers
    own = page.request.get(f"{root}/portal/dicomweb/studies/{ct_study}/series")
    assert own.status == 200 and own.json()
    for url in (f"/portal/dicomweb/studies/{bob_study}/series", f"/portal/dicomweb/studies/{bob_study}/metadata",
                f"/dicomweb/studies/{bob_study}/series"):
        r = page.request.get(root + url)
        assert r.status in (401, 404) or (r.status in (200, 204) and not (r.body() and r.json())), (url, r.status)
    page.goto(f"{root}/viewer/?study={bob_study}")
    page.wait_for_selector("#status.error")
    assert "not yours" in page.locator("#status").inner_text()
    assert not page.evaluate("() => window.fsViewer.ready")
    page.screenshot(path=str(ART / "viewer-05-not-yours.png"))


def _add_staff(dev_env: dict, username: str, org: str) -> None:
    """A staff login of another organization, made the way an operator does (`fhirserver user add`)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fhirserver.cli", "user", "add", username, "--role", "staff",
                        "--organization", org, "--password", "demo-pass-1"], env=dev_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_viewer_with_a_bearer_token_in_the_fragment(dev_server, dev_env, browser):  # noqa: ANN001
    """The `#token=` path (what the console and other apps use): the viewer reads /dicomweb with
    the token it was handed, scrolls and windows a multi-frame CT and a JPEG 2000 study; the
    token is gone from the address bar; another organization's token opens nothing."""
    root = dev_server
    tok = staff_token(root)
    _give_mrn(root, tok, "demo-bob", "MRN-BOB-T")
    ct, ct_study = _dicom("eCT_Supplemental.dcm", "MRN-BOB-T", new_uids=True)
    mr, mr_study = _dicom("emri_small_jpeg_2k_lossless.dcm", "MRN-BOB-T", new_uids=True)
    _stow(root, tok, [ct, mr])
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    logs: list[str] = []
    page.on("response", lambda r: logs.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{root}/viewer/?study={ct_study}#token={tok}")
    try:
        _wait_ready(page)
    except Exception:
        page.screenshot(path=str(ART / "viewer-token-failed.png"))
        raise AssertionError("\n".join(logs[-30:]))
    assert "token" not in page.url  # handed over, then dropped from the address (and the history)
    assert page.locator("#position").inner_text() == "Image 1 of 2"
    first = _canvas(page)
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => window.fsViewer.index === 1")
    second = _changes(page, first)
    cx, cy = _window_level(page, 120, 80)
    _changes(page, second)
    page.screenshot(path=str(ART / "viewer-token-01-ct.png"))

    page.goto(f"{root}/viewer/?study={mr_study}#token={tok}")
    _wait_ready(page)
    assert page.locator("#position").inner_text() == "Image 1 of 10"
    shown = _canvas(page)
    page.mouse.move(cx, cy)
    for _ in range(4):
        page.mouse.wheel(0, 120)
    page.wait_for_function("() => window.fsViewer.index > 0")
    shown = _changes(page, shown)
    _window_level(page, -100, 60)
    _changes(page, shown)
    page.screenshot(path=str(ART / "viewer-token-02-j2k.png"))

    # the same study with a token of another organization's staff: nothing opens
    _add_staff(dev_env, "ruiz@harbor.example", "demo-other")
    other = staff_token(root, "ruiz@harbor.example")
    page2 = browser.new_page(viewport={"width": 1000, "height": 800})
    page2.goto(f"{root}/viewer/?study={ct_study}#token={other}")
    page2.wait_for_selector("#status.error", timeout=90_000)
    assert not page2.evaluate("() => window.fsViewer.ready")
    r = requests.get(f"{root}/dicomweb/studies/{ct_study}/series", headers={"Authorization": f"Bearer {other}"},
                     timeout=30)
    assert r.status_code in (204, 404) or not r.json()
    page2.screenshot(path=str(ART / "viewer-token-03-other-org.png"))
