"""FHIR R4 XML <-> JSON (Python dict) conversion.

The server holds resources as JSON-shaped dicts (decimals as ``decimal.Decimal``,
parsed with ``parse_float=Decimal``; integers as ``int``; booleans as ``bool``).
This module converts them to and from the FHIR R4 XML format
(https://hl7.org/fhir/R4/xml.html):

* namespace ``http://hl7.org/fhir``; the root element is the resource type;
  ``resourceType`` is not an element;
* every primitive is an element with a ``value`` attribute; its ``id`` and
  ``extension`` come from / go to the JSON ``_field`` companion (for arrays of
  primitives ``_field`` is a parallel list padded with ``None``);
* ``id`` of a complex element and ``url`` of an Extension are XML attributes;
* ``Narrative.div`` is embedded XHTML (``http://www.w3.org/1999/xhtml``); in
  JSON it is the XHTML string;
* resources held inside other resources (``contained``,
  ``Bundle.entry.resource``, ``Parameters.parameter.resource``,
  ``Bundle.entry.response.outcome``) are wrapped in an element named after
  their resource type.

Type information (element order, primitive type, max cardinality) comes from
the one schema table, ``fhirserver.model.schema`` (the fhir.resources R4B models
with R4's differences from ``model/data/r4_schema.json``). (``fhir_core.xml_utils``
is not used: it works on model instances and writes decimals through ``float``,
losing ``6.0``.)

So every R4 type gets exact JSON types and cardinalities; no generic fallback
is needed.

Round-trip notes: JSON -> XML -> JSON gives back the same dict, decimals with
the same text (``6.0``, ``1.00``, ``1E-22``), for all 741 HL7 R4 examples. The
narrative string read from XML is re-serialized the way the HL7 tools write it
(``&amp; &lt; &gt; &quot;`` escaped in text, empty elements as ``<br/>``), so an
unusual spelling in a JSON div (``<br></br>``, ``&#39;``, ``&nbsp;``) comes back
normalized. An ``int`` in a decimal element comes back as a ``Decimal`` of the
same text. ``fhir_comments`` and XML comments are dropped.
"""

from __future__ import annotations

import copy
import decimal
import html.entities
import re
from decimal import Decimal
from typing import Any, Union

from lxml import etree

from fhirserver.model.schema import (
    COMPLEX, J_BOOL, J_DEC, J_INT, J_STR, PRIM, RESOURCE, XHTML, Element, TypeInfo, schema,
)
from fhirserver.model.types import R4_RESOURCE_TYPES

__all__ = [
    "XmlFormatError",
    "resource_to_xml",
    "xml_to_resource",
    "FHIR_NS",
    "XHTML_NS",
    "R4_RESOURCE_TYPES",
]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_F = "{" + FHIR_NS + "}"
_X = "{" + XHTML_NS + "}"
_XHTML_DIV = _X + "div"


class XmlFormatError(ValueError):
    """Unparsable or non-FHIR XML; message says what and where."""




# ---------------------------------------------------------------------------
# The schema table (fhirserver.model.schema), seen as XML tags
# ---------------------------------------------------------------------------

_PRIM, _COMPLEX, _RESOURCE, _XHTML = PRIM, COMPLEX, RESOURCE, XHTML
_J_STR, _J_BOOL, _J_INT, _J_DEC = J_STR, J_BOOL, J_INT, J_DEC


class _Field:
    """A schema element with its XML tag."""

    __slots__ = ("name", "kind", "jtype", "is_list", "model", "tag")

    def __init__(self, el: Element) -> None:
        self.name = el.name
        self.kind = el.kind
        self.jtype = el.jtype
        self.is_list = el.is_list
        self.model = el.model  # _COMPLEX: what schema().type_info takes
        self.tag = _XHTML_DIV if el.kind == XHTML else _F + el.name


class _TypeInfo:
    """A schema type with its XML attributes (Element.id, Extension.url) and children by tag."""

    __slots__ = ("name", "fields", "order", "attrs", "by_tag", "is_resource")

    def __init__(self, ti: TypeInfo) -> None:
        self.name = ti.name
        self.is_resource = ti.is_resource
        self.fields = {n: _Field(e) for n, e in ti.elements.items()}
        self.order = ti.order
        attrs: list[str] = []
        if not ti.is_resource and "id" in self.fields:
            attrs.append("id")  # Element.id is an XML attribute
        if ti.name == "Extension":
            attrs.append("url")  # so is Extension.url
        self.attrs = tuple(attrs)
        self.by_tag = {f.tag: f for n, f in self.fields.items() if n not in attrs}


def _view(ti: TypeInfo) -> _TypeInfo:
    view = ti.memo.get("xml")
    if view is None:
        view = ti.memo["xml"] = _TypeInfo(ti)
    return view


def _type_info(model: Any) -> _TypeInfo:
    """The XML view of an R4B model class or an R4-only table path."""
    return _view(schema().type_info(model))


def _resource_info(rtype: Any) -> _TypeInfo | None:
    """The XML view of an R4 resource type, or None if it is not one."""
    ti = schema().resource(rtype)
    return None if ti is None else _view(ti)


def _named_info(name: str) -> _TypeInfo:
    return _type_info(schema().model_class(name))


# ---------------------------------------------------------------------------
# JSON -> XML
# ---------------------------------------------------------------------------

_HTML_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=False,
        strip_cdata=True,
    )


def _prim_text(value: Any, path: str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise XmlFormatError(f"non-finite decimal at {path}")
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise XmlFormatError(f"non-finite decimal at {path}")
        return repr(value)
    raise XmlFormatError(
        f"expected a primitive value at {path}, got {type(value).__name__}"
    )


def _set_attr(el: Any, name: str, value: Any, path: str) -> None:
    try:
        el.set(name, _prim_text(value, path))
    except ValueError as exc:
        if isinstance(exc, XmlFormatError):
            raise
        raise XmlFormatError(f"value not representable in XML at {path}: {exc}") from None


def _xhtml_element(text: Any, path: str) -> Any:
    if not isinstance(text, str):
        raise XmlFormatError(f"narrative div must be a string at {path}")
    src = text
    if not re.match(r"\s*<div\b[^>]*\bxmlns\s*=", src):
        src = re.sub(r"^\s*<div\b", f'<div xmlns="{XHTML_NS}"', src, count=1)
    parser = _safe_parser()
    for attempt in (0, 1):
        try:
            el = etree.fromstring(src.encode("utf-8"), parser)
            break
        except etree.XMLSyntaxError as exc:
            if attempt == 0 and _HTML_ENTITY.search(src):
                # HTML named entities (&nbsp; ...) are not XML: use char refs
                def repl(m: re.Match) -> str:
                    name = m.group(1)
                    if name in _XML_ENTITIES:
                        return m.group(0)
                    cp = html.entities.name2codepoint.get(name)
                    return f"&#{cp};" if cp is not None else m.group(0)

                src = _HTML_ENTITY.sub(repl, src)
                continue
            raise XmlFormatError(f"narrative div is not well-formed XHTML at {path}: {exc}") from None
    if el.tag != _XHTML_DIV:
        raise XmlFormatError(f"narrative must be an XHTML <div> at {path}, got {el.tag}")
    el.tail = None
    return el


def _write_prim(parent: Any, tag: str, value: Any, ext: Any, f: _Field | None, path: str) -> None:
    el = etree.SubElement(parent, tag)
    if ext is not None:
        if not isinstance(ext, dict):
            raise XmlFormatError(f"primitive extension must be an object at {path}")
        for k in ext:
            if k not in ("id", "extension", "fhir_comments"):
                raise XmlFormatError(f"unknown property {k!r} in primitive extension at {path}")
        if ext.get("id") is not None:
            _set_attr(el, "id", ext["id"], path + ".id")
    if value is not None:
        if isinstance(value, (dict, list)):
            raise XmlFormatError(f"expected a primitive value at {path}")
        _set_attr(el, "value", value, path)
    if ext is not None and ext.get("extension"):
        exti = _named_info("Extension")
        exts = ext["extension"]
        if not isinstance(exts, list):
            raise XmlFormatError(f"extension must be an array at {path}")
        for i, e in enumerate(exts):
            _write_complex(etree.SubElement(el, _F + "extension"), e, exti, f"{path}.extension[{i}]")


def _write_resource(el: Any, data: Any, path: str) -> None:
    """Write `data` (a resource dict) as the content of element `el`."""
    if not isinstance(data, dict):
        raise XmlFormatError(f"expected a resource object at {path}")
    ti = _resource_info(data.get("resourceType"))
    if ti is None:
        raise XmlFormatError(
            f"unknown or missing resourceType {data.get('resourceType')!r} at {path}"
        )
    _write_complex(el, data, ti, path)


def _write_value(parent: Any, f: _Field, value: Any, path: str) -> None:
    kind = f.kind
    if kind == _COMPLEX:
        el = etree.SubElement(parent, f.tag)
        _write_complex(el, value, _type_info(f.model), path)
    elif kind == _RESOURCE:
        if not isinstance(value, dict):
            raise XmlFormatError(f"expected a resource object at {path}")
        rtype = value.get("resourceType")
        if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
            raise XmlFormatError(f"unknown or missing resourceType {rtype!r} at {path}")
        wrapper = etree.SubElement(parent, f.tag)
        _write_resource(etree.SubElement(wrapper, _F + rtype), value, path)
    else:  # _XHTML
        parent.append(_xhtml_element(value, path))


def _write_complex(el: Any, data: Any, ti: _TypeInfo, path: str) -> None:
    if not isinstance(data, dict):
        raise XmlFormatError(f"expected an object at {path}")
    fields = ti.fields
    for k in data:
        if k in fields:
            continue
        if k[:1] == "_" and k[1:] in fields and fields[k[1:]].kind == _PRIM:
            continue
        if k == "fhir_comments" or (k == "resourceType" and ti.is_resource):
            continue
        raise XmlFormatError(f"unknown element {path}.{k} (not in FHIR R4 {ti.name})")
    for a in ti.attrs:
        v = data.get(a)
        if v is not None:
            _set_attr(el, a, v, f"{path}.{a}")
    for name in ti.order:
        f = fields[name]
        if f.kind == _PRIM:
            value = data.get(name)
            ext = data.get("_" + name)
            if value is None and ext is None:
                continue
            if name in ti.attrs:
                continue
            fpath = f"{path}.{name}"
            if f.is_list:
                if value is not None and not isinstance(value, list):
                    raise XmlFormatError(f"expected an array at {fpath}")
                if ext is not None and not isinstance(ext, list):
                    raise XmlFormatError(f"expected an array at {path}._{name}")
                n = max(len(value or ()), len(ext or ()))
                for i in range(n):
                    v = value[i] if value is not None and i < len(value) else None
                    x = ext[i] if ext is not None and i < len(ext) else None
                    if v is None and x is None:
                        continue
                    _write_prim(el, f.tag, v, x, f, f"{fpath}[{i}]")
            else:
                _write_prim(el, f.tag, value, ext, f, fpath)
            continue
        value = data.get(name)
        if value is None:
            continue
        fpath = f"{path}.{name}"
        if f.is_list:
            if not isinstance(value, list):
                raise XmlFormatError(f"expected an array at {fpath}")
            for i, item in enumerate(value):
                if item is not None:
                    _write_value(el, f, item, f"{fpath}[{i}]")
        else:
            _write_value(el, f, value, fpath)


def _indent(el: Any, level: int) -> None:
    """Pretty-print FHIR elements; XHTML content is left untouched."""
    children = list(el)
    if not children or el.tag == _XHTML_DIV:
        return
    if el.text is None or not el.text.strip():
        el.text = "\n" + "  " * (level + 1)
    for c in children:
        _indent(c, level + 1)
        if c.tail is None or not c.tail.strip():
            c.tail = "\n" + "  " * (level + 1)
    last = children[-1]
    if last.tail is None or not last.tail.strip():
        last.tail = "\n" + "  " * level


def resource_to_xml(resource: dict, pretty: bool = False) -> bytes:
    """Serialize a FHIR R4 resource (JSON dict) as FHIR XML (UTF-8 bytes).

    Raises XmlFormatError (a ValueError) if the dict cannot be represented:
    unknown resourceType, unknown element names, wrong shapes.
    """
    if not isinstance(resource, dict):
        raise XmlFormatError("resource must be a JSON object")
    rtype = resource.get("resourceType")
    if _resource_info(rtype) is None:
        raise XmlFormatError(f"unknown or missing resourceType {rtype!r}")
    root = etree.Element(_F + rtype, nsmap={None: FHIR_NS})
    _write_resource(root, resource, rtype)
    if pretty:
        _indent(root, 0)
    body = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + (b"\n" if pretty else b"")


# ---------------------------------------------------------------------------
# XML -> JSON
# ---------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]{1,10}\Z")
_DEC_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def _where(el: Any, path: str) -> str:
    line = getattr(el, "sourceline", None)
    return f"{path} (line {line})" if line else path


def _local(tag: str) -> tuple[str | None, str]:
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def _convert(text: str, jtype: int, el: Any, path: str) -> Any:
    if jtype == _J_STR:
        return text
    if jtype == _J_BOOL:
        if text == "true":
            return True
        if text == "false":
            return False
        raise XmlFormatError(f"invalid boolean {text!r} at {_where(el, path)}")
    if jtype == _J_INT:
        if _INT_RE.match(text):
            value = int(text)
            if -2147483648 <= value <= 2147483647:
                return value
        raise XmlFormatError(f"invalid integer {text!r} at {_where(el, path)}")
    if _DEC_RE.match(text):
        try:
            return Decimal(text)
        except decimal.InvalidOperation:
            pass
    raise XmlFormatError(f"invalid decimal {text!r} at {_where(el, path)}")


def _check_text(el: Any, path: str) -> None:
    if el.text is not None and el.text.strip():
        raise XmlFormatError(f"unexpected text content {el.text.strip()[:40]!r} at {_where(el, path)}")


def _children(el: Any, path: str):
    """Element children of a FHIR element (skipping comments and PIs)."""
    for child in el:
        tail = child.tail
        if tail is not None and tail.strip():
            raise XmlFormatError(f"unexpected text content {tail.strip()[:40]!r} at {_where(el, path)}")
        if isinstance(child.tag, str):
            yield child


def _read_prim(el: Any, jtype: int, path: str) -> tuple[Any, Any]:
    value = None
    ext_id = None
    for k, v in el.attrib.items():
        if k == "value":
            value = _convert(v, jtype, el, path)
        elif k == "id":
            ext_id = v
        elif k[:1] != "{":
            raise XmlFormatError(f"unexpected attribute {k!r} at {_where(el, path)}")
    _check_text(el, path)
    extensions = None
    for child in _children(el, path):
        if child.tag != _F + "extension":
            ns, local = _local(child.tag)
            if ns != FHIR_NS:
                raise XmlFormatError(
                    f"element {_where(child, path + '.' + local)} is not in the FHIR namespace (found {ns!r})"
                )
            raise XmlFormatError(
                f"unknown element {_where(child, path + '.' + local)}: a primitive may only contain extension"
            )
        if extensions is None:
            extensions = []
        extensions.append(
            _read_complex(child, _named_info("Extension"), f"{path}.extension[{len(extensions)}]")
        )
    ext = None
    if ext_id is not None or extensions:
        ext = {}
        if ext_id is not None:
            ext["id"] = ext_id
        if extensions:
            ext["extension"] = extensions
    if value is None and ext is None:
        raise XmlFormatError(
            f"primitive element has neither a value attribute nor extensions at {_where(el, path)}"
        )
    return value, ext


_XML_NS_ATTR = "{http://www.w3.org/XML/1998/namespace}"


def _esc_text(text: str) -> str:
    # the escaping the HL7 reference serializers use in narrative JSON
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def _esc_attr(text: str) -> str:
    text = _esc_text(text)
    if "\n" in text or "\t" in text:
        text = text.replace("\n", "&#10;").replace("\t", "&#9;")
    return text


def _plain_xhtml(el: Any) -> bool:
    """True if the subtree is plain XHTML (serializable by _xhtml_serialize)."""
    for node in el.iter():
        tag = node.tag
        if isinstance(tag, str):
            if not tag.startswith(_X):
                return False
            for k in node.attrib:
                if k[:1] == "{" and not k.startswith(_XML_NS_ATTR):
                    return False
        elif tag is not etree.Comment:
            return False
    return True


def _xhtml_serialize(el: Any, out: list, root: bool) -> None:
    tag = el.tag
    if not isinstance(tag, str):  # comment
        out.append("<!--" + (el.text or "") + "-->")
        if el.tail:
            out.append(_esc_text(el.tail))
        return
    name = tag[len(_X):]
    out.append("<" + name)
    if root:
        out.append(' xmlns="' + XHTML_NS + '"')
    for k, v in el.attrib.items():
        if k[:1] == "{":
            k = "xml:" + k[len(_XML_NS_ATTR):]
        out.append(" " + k + '="' + _esc_attr(v) + '"')
    if el.text is None and len(el) == 0:
        out.append("/>")
    else:
        out.append(">")
        if el.text:
            out.append(_esc_text(el.text))
        for child in el:
            _xhtml_serialize(child, out, False)
        out.append("</" + name + ">")
    if not root and el.tail:
        out.append(_esc_text(el.tail))


def _xhtml_string(el: Any) -> str:
    if _plain_xhtml(el):
        out: list = []
        _xhtml_serialize(el, out, True)
        return "".join(out)
    div = copy.deepcopy(el)
    div.tail = None
    etree.cleanup_namespaces(div)
    return etree.tostring(div, encoding="unicode", with_tail=False)


def _read_resource_wrapper(el: Any, path: str) -> dict:
    _check_text(el, path)
    for k in el.attrib:
        if k[:1] != "{":
            raise XmlFormatError(f"unexpected attribute {k!r} at {_where(el, path)}")
    inner = list(_children(el, path))
    if len(inner) != 1:
        raise XmlFormatError(
            f"expected exactly one resource inside {_where(el, path)}, found {len(inner)}"
        )
    return _read_resource(inner[0], path)


def _read_resource(el: Any, path: str) -> dict:
    ns, local = _local(el.tag)
    if ns != FHIR_NS:
        raise XmlFormatError(
            f"element {_where(el, (path + '.' if path else '') + local)} is not in the FHIR namespace "
            f"{FHIR_NS!r} (found {ns!r})"
        )
    ti = _resource_info(local)
    if ti is None:
        raise XmlFormatError(
            f"element {_where(el, (path + '.' if path else '') + local)} is not a FHIR R4 resource type"
        )
    out: dict = {"resourceType": local}
    _read_complex(el, ti, local if path == "" else f"{path}({local})", out)
    return out


def _read_complex(el: Any, ti: _TypeInfo, path: str, out: dict | None = None) -> dict:
    if out is None:
        out = {}
    attrs = ti.attrs
    for k, v in el.attrib.items():
        if k in attrs:
            out[k] = v
        elif k[:1] != "{":
            raise XmlFormatError(f"unexpected attribute {k!r} at {_where(el, path)}")
    _check_text(el, path)
    by_tag = ti.by_tag
    values: dict[str, list] = {}
    exts: dict[str, list] = {}
    for child in _children(el, path):
        f = by_tag.get(child.tag)
        if f is None:
            ns, local = _local(child.tag)
            if ns != FHIR_NS and not (local == "div" and ns == XHTML_NS):
                raise XmlFormatError(
                    f"element {_where(child, path + '.' + local)} is not in the FHIR namespace (found {ns!r})"
                )
            raise XmlFormatError(
                f"unknown element {_where(child, path + '.' + local)}: not an element of FHIR R4 {ti.name}"
            )
        name = f.name
        lst = values.get(name)
        if lst is None:
            lst = values[name] = []
        elif not f.is_list:
            raise XmlFormatError(
                f"element {_where(child, path + '.' + name)} repeats but has max cardinality 1"
            )
        cpath = f"{path}.{name}[{len(lst)}]" if f.is_list else f"{path}.{name}"
        kind = f.kind
        if kind == _PRIM:
            v, x = _read_prim(child, f.jtype, cpath)
            lst.append(v)
            xl = exts.get(name)
            if xl is None:
                xl = exts[name] = []
            xl.append(x)
        elif kind == _COMPLEX:
            lst.append(_read_complex(child, _type_info(f.model), cpath))
        elif kind == _RESOURCE:
            lst.append(_read_resource_wrapper(child, cpath))
        else:
            lst.append(_xhtml_string(child))
    fields = ti.fields
    for name, lst in values.items():
        f = fields[name]
        if f.kind == _PRIM:
            xl = exts[name]
            if f.is_list:
                if any(v is not None for v in lst):
                    out[name] = lst
                if any(x is not None for x in xl):
                    out["_" + name] = xl
            else:
                if lst[0] is not None:
                    out[name] = lst[0]
                if xl[0] is not None:
                    out["_" + name] = xl[0]
        elif f.is_list:
            out[name] = lst
        else:
            out[name] = lst[0]
    return out


def xml_to_resource(data: Union[bytes, str]) -> dict:
    """Parse FHIR R4 XML into a resource dict (JSON shape, decimals as Decimal).

    Raises XmlFormatError for malformed XML, DTDs/entities, a wrong namespace,
    unknown elements, values of the wrong primitive type, or a root element
    that is not an R4 resource type.
    """
    if isinstance(data, str):
        data = _XML_DECL.sub("", data, count=1).encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise XmlFormatError("XML input must be bytes or str")
    data = bytes(data)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlFormatError("DOCTYPE / entity declarations are not allowed in FHIR XML")
    try:
        root = etree.fromstring(data, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlFormatError(f"XML is not well-formed: {exc}") from None
    except ValueError as exc:  # e.g. encoding problems
        raise XmlFormatError(f"XML could not be parsed: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlFormatError("DOCTYPE declarations are not allowed in FHIR XML")
    ns, local = _local(root.tag)
    if ns != FHIR_NS:
        raise XmlFormatError(
            f"root element {local!r} is not in the FHIR namespace {FHIR_NS!r} (found {ns!r})"
        )
    if local not in R4_RESOURCE_TYPES:
        raise XmlFormatError(f"root element {local!r} is not a FHIR R4 resource type")
    return _read_resource(root, "")
