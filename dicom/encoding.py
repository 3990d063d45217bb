"""What the node writes and reads, the library way: the File Meta Information put in front of a
received data set (pydicom's writer) and the data set's header read before the pixel data
(pydicom's reader). `dicom.fastpath` has byte-identical shortcuts; these are the reference and
what runs with the fast path off."""
from __future__ import annotations

from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1447.1")
IMPLEMENTATION_VERSION = "FHIRSERVER_01"
DEFLATED = "1.2.840.10008.1.2.1.99"


def meta_header(sop_class: str, sop_uid: str, ts: str, calling: str) -> bytes:
    """Preamble, "DICM" and the File Meta Information group of a stored instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if calling:
        meta.SourceApplicationEntityTitle = calling[:16]
    head = BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue()


def read_header(buf: BytesIO, header: bytes, ts: UID) -> tuple[Any, int]:
    """The received data set's elements before the pixel data, and the offset in `buf` where the
    Pixel Data element starts (its end when there is none; 0 for deflated data sets, which are
    read inflated). Reads a copy of the bytes behind `header`, as a file on disk would be read."""
    with buf.getbuffer() as raw:
        fp = BytesIO(header + bytes(raw))
    ds = dcmread(fp, stop_before_pixels=True)
    if ts == DEFLATED or not ts.is_transfer_syntax:
        return ds, 0
    return ds, fp.tell() - len(header)
