"""The tables: current resources and every version.

`resource.body` is `json` on PostgreSQL (exact text, castable to JSONB) and TEXT on SQLite; it is
read back as text, so a read returns stored bytes without re-serialising.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text,
    UniqueConstraint, cast,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, UserDefinedType

metadata = MetaData()

PK = BigInteger().with_variant(Integer(), "sqlite")


class _JsonColumn(UserDefinedType):
    """PostgreSQL `json`: validated, stored verbatim (so decimals such as 1E-22 keep their text,
    which JSONB would normalise), castable to JSONB in queries. No driver-side processing."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "JSON"


class _to_json_storage(FunctionElement):
    """Wraps a bound JSON text so PostgreSQL takes it as `json`; a no-op elsewhere."""

    inherit_cache = True
    type = Text()


@compiles(_to_json_storage)
def _to_json_default(element, compiler, **kw):  # noqa: ANN001
    return compiler.process(element.clauses, **kw)


@compiles(_to_json_storage, "postgresql")
def _to_json_pg(element, compiler, **kw):  # noqa: ANN001
    return "CAST(%s AS JSON)" % compiler.process(element.clauses, **kw)


class JsonText(TypeDecorator):
    """Resource JSON: `json` on PostgreSQL, TEXT elsewhere; the Python side is always a str."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect):  # noqa: ANN001
        if dialect.name == "postgresql":
            return _JsonColumn()
        return dialect.type_descriptor(Text())

    def bind_expression(self, bindvalue):  # noqa: ANN001
        return _to_json_storage(bindvalue)

    def column_expression(self, colexpr):  # noqa: ANN001
        return cast(colexpr, Text)


resource = Table(
    "resource", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", JsonText(), nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
    Index("ix_resource_type_updated", "res_type", "last_updated"),
    Index("ix_resource_type_pk", "res_type", "pk"),
)

resource_history = Table(
    "resource_history", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", JsonText(), nullable=True),
    UniqueConstraint("res_type", "res_id", "version_id", name="uq_history_type_id_version"),
    Index("ix_history_updated", "last_updated"),
    Index("ix_history_type_pk", "res_type", "pk"),
)
