"""Registry of the DICOM nodes (modalities, viewers) allowed to call and to receive C-MOVEs."""
from __future__ import annotations

import dataclasses

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from dicom.tables import dicom_node


@dataclasses.dataclass(frozen=True)
class Node:
    ae_title: str
    host: str
    port: int
    organization: str | None = None
    description: str | None = None


def _check_ae(ae: str) -> str:
    ae = ae.strip()
    if not ae or len(ae) > 16 or "\\" in ae or any(ord(c) < 32 for c in ae):
        raise ValueError(f"invalid AE title {ae!r} (1 to 16 characters, no backslash)")
    return ae


def add_node(engine: Engine, ae_title: str, host: str, port: int, organization: str | None = None,
             description: str | None = None) -> Node:
    """Register (or re-register) a node; the AE title is its key."""
    ae = _check_ae(ae_title)
    if not 0 < int(port) < 65536:
        raise ValueError(f"invalid port {port}")
    values = dict(host=host, port=int(port), organization=organization, description=description)
    with engine.begin() as conn:
        done = conn.execute(update(dicom_node).where(dicom_node.c.ae_title == ae).values(**values))
        if done.rowcount == 0:
            conn.execute(dicom_node.insert().values(ae_title=ae, **values))
    return Node(ae, host, int(port), organization, description)


def remove_node(engine: Engine, ae_title: str) -> bool:
    with engine.begin() as conn:
        return conn.execute(delete(dicom_node).where(dicom_node.c.ae_title == ae_title.strip())).rowcount > 0


def list_nodes(engine: Engine) -> list[Node]:
    with engine.connect() as conn:
        return [Node(r.ae_title, r.host, r.port, r.organization, r.description)
                for r in conn.execute(select(dicom_node).order_by(dicom_node.c.ae_title))]


def get_node(engine: Engine, ae_title: str) -> Node | None:
    with engine.connect() as conn:
        r = conn.execute(select(dicom_node).where(dicom_node.c.ae_title == ae_title.strip())).first()
    return Node(r.ae_title, r.host, r.port, r.organization, r.description) if r else None
