"""The library's ceiling for the DICOM bench: a bare pynetdicom Storage SCP that only writes the
received dataset bytes to a file (no parsing, no index), TCP_NODELAY on, PDU size unlimited.

    .venv/bin/python -m bench.bare_scp PORT OUTDIR [AE_TITLE]
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification


def _nodelay(event: Any) -> None:
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main() -> int:
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    title = sys.argv[3] if len(sys.argv) > 3 else "BARE"
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    syntaxes = list(dict.fromkeys(list(ALL_TRANSFER_SYNTAXES) + list(AllTransferSyntaxes)))
    ae = AE(ae_title=title)
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 64
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)

    def on_store(event: Any) -> int:
        name = str(event.request.AffectedSOPInstanceUID)
        with open(out / name, "wb") as f:
            f.write(event.request.DataSet.getvalue())
        return 0x0000

    ae.start_server(("127.0.0.1", port), block=True,
                    evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_C_STORE, on_store)])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
