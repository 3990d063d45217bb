"""The DICOM node: C-ECHO/STORE/FIND/MOVE/GET and Modality Worklist over pynetdicom, the
server's content-addressed blob store (fhirserver.blobs) for the instances, a tag index in the server's database, and the ImagingStudy
bridge that writes through the FHIR repository. DICOMweb reuses the store and index.

Public API: `DicomNode` (dicom.scp: the AE serving dicom.handlers over dicom.transport, with the
library shortcuts of dicom.fastpath unless `Settings.dicom_fast_path` is off),
the index query `find`/`retrieve` (dicom.query),
`update_studies` (dicom.bridge), the node registry (dicom.nodes), who a node acts as and which
studies a caller may see (dicom.access, asking fhirserver.access), the AuditEvents of DIMSE and
DICOMweb (dicom.audit), what erasing or merging a patient does to the index (dicom.records). Submodules are imported lazily so `import dicom` stays cheap."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom.records import ImagingRecords

_LAZY = {"ImagingRecords": "dicom.records"}


def __getattr__(name: str) -> Any:
    """The exported names, each imported from its module on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["ImagingRecords"]
