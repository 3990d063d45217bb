"""The tables: current resources and every version.

`resource.body` is `json` on PostgreSQL (exact text, castable to JSONB) and TEXT on SQLite; it is
read back as text, so a read returns stored bytes without re-serialising.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, Numeric, String,
    Table, Text, UniqueConstraint, cast,
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


# -- search index: one table per SearchParameter type, rows replaced on every write --
# `res_pk` is `resource.pk` with no foreign key: the rows are derived, written and deleted by the
# repository (and erasure) itself, and the key's check per inserted row cost PostgreSQL a third
# of writing them (migration 0017).
def _idx(name: str, *cols: Column, indexes: tuple[tuple[str, ...], ...] = ()) -> Table:
    table = Table(
        name, metadata,
        Column("res_pk", PK, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *cols,
    )
    Index(f"ix_{name}_pk", table.c.res_pk)
    for i, idx_cols in enumerate(indexes):
        Index(f"ix_{name}_{i}", *[table.c[c] for c in idx_cols])
    return table


idx_string = _idx("idx_string", Column("value", String(255), nullable=False),
                  Column("exact", Text, nullable=False),
                  indexes=(("res_type", "param", "value"),))
idx_token = _idx("idx_token", Column("system", String(255), nullable=True),
                 Column("code", String(255), nullable=True), Column("text", String(255), nullable=True),
                 indexes=(("res_type", "param", "code", "system"), ("res_type", "param", "system")))
idx_reference = _idx("idx_reference", Column("target_type", String(64), nullable=True),
                     Column("target_id", String(64), nullable=True), Column("url", Text, nullable=True),
                     indexes=(("res_type", "param", "target_id", "target_type"),
                              ("target_type", "target_id")))
idx_date = _idx("idx_date", Column("low", DateTime(timezone=True), nullable=True),
                Column("high", DateTime(timezone=True), nullable=True),
                indexes=(("res_type", "param", "low", "high"),))
idx_number = _idx("idx_number", Column("low", Numeric(36, 18), nullable=True),
                  Column("high", Numeric(36, 18), nullable=True),
                  indexes=(("res_type", "param", "low"),))
idx_quantity = _idx("idx_quantity", Column("system", String(255), nullable=True),
                    Column("code", String(255), nullable=True),
                    Column("low", Numeric(36, 18), nullable=True),
                    Column("high", Numeric(36, 18), nullable=True),
                    indexes=(("res_type", "param", "code", "low"),))
idx_uri = _idx("idx_uri", Column("uri", Text, nullable=False), indexes=(("res_type", "param"),))
idx_text = Table(
    "idx_text", metadata,
    Column("res_pk", PK, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("narrative", Text, nullable=True),
    Column("content", Text, nullable=True),
)
# Compartment membership (Patient, Practitioner, RelatedPerson, Encounter, Device), derived at
# write time from the HL7 CompartmentDefinitions: compartment search and access rules use it.
resource_compartment = Table(
    "resource_compartment", metadata,
    Column("res_pk", PK, nullable=False),
    Column("comp_type", String(64), nullable=False),
    Column("comp_id", String(64), nullable=False),
    Index("ix_resource_compartment_pk", "res_pk"),
    Index("ix_resource_compartment_owner", "comp_type", "comp_id", "res_pk"),
)
INDEX_TABLES = (idx_string, idx_token, idx_reference, idx_date, idx_number, idx_quantity, idx_uri,
                idx_text, resource_compartment)
