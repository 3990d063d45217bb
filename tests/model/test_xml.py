"""FHIR R4 XML <-> JSON conversion (fhirserver.model.xml)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from fhirserver.model.xml import XmlFormatError, resource_to_xml, xml_to_resource

DATA = Path(__file__).resolve().parent.parent / "data" / "xml"
FIXTURES = sorted(p.name for p in DATA.glob("*.json"))
F = "{http://hl7.org/fhir}"
X = "{http://www.w3.org/1999/xhtml}"


def load(name: str) -> dict:
    with open(DATA / name, encoding="utf-8") as fh:
        return json.load(fh, parse_float=Decimal)


def canon(value) -> str:
    """JSON text with numbers written as held (Decimal('6.0') -> 6.0)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(canon(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ",".join(json.dumps(k) + ":" + canon(value[k]) for k in sorted(value)) + "}"


def roundtrip(resource: dict, pretty: bool = False) -> dict:
    return xml_to_resource(resource_to_xml(resource, pretty=pretty))


def tree(resource: dict):
    return etree.fromstring(resource_to_xml(resource))


def test_fixtures_present():
    assert len(FIXTURES) >= 6


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize("name", FIXTURES)
def test_roundtrip_exact(name, pretty):
    original = load(name)
    back = roundtrip(original, pretty=pretty)
    assert back == original
    assert canon(back) == canon(original)


def test_patient_xml_shape():
    patient = load("Patient-example.json")
    root = tree(patient)
    assert root.tag == F + "Patient"
    assert root.nsmap[None] == "http://hl7.org/fhir"
    assert root.find(F + "resourceType") is None
    children = [c.tag for c in root]
    assert children[:2] == [F + "id", F + "text"]
    assert root.find(F + "id").get("value") == "example"
    assert root.find(F + "active").get("value") == "true"
    # the narrative is embedded XHTML
    div = root.find(F + "text/" + X + "div")
    assert div is not None
    assert div.find(".//" + X + "table") is not None
    # _birthDate extension becomes children of the primitive element
    birth = root.find(F + "birthDate")
    assert birth.get("value") == "1974-12-25"
    ext = birth.find(F + "extension")
    assert ext.get("url") == "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    assert ext.find(F + "valueDateTime").get("value") == "1974-12-25T14:35:45-05:00"
    # every primitive carries a value attribute
    for el in root.iter(F + "given", F + "family", F + "gender", F + "system"):
        assert el.get("value") is not None


def test_decimals_keep_their_text():
    obs = load("Observation-f003.json")
    assert str(obs["referenceRange"][0]["high"]["value"]) == "6.0"
    xml = resource_to_xml(obs)
    assert b'<value value="6.0"/>' in xml
    back = xml_to_resource(xml)
    value = back["referenceRange"][0]["high"]["value"]
    assert isinstance(value, Decimal) and str(value) == "6.0"
    assert str(back["valueQuantity"]["value"]) == "6.2"

    dec = load("Observation-decimal.json")
    texts = [c["valueQuantity"]["value"] for c in xml_to_resource(resource_to_xml(dec))["component"]]
    assert [str(t) for t in texts] == [str(c["valueQuantity"]["value"]) for c in dec["component"]]
    assert "1.00" in [str(t) for t in texts]


def test_primitive_json_types_and_cardinality():
    xml = b"""<Patient xmlns="http://hl7.org/fhir">
      <id value="p1"/>
      <active value="false"/>
      <name><given value="Ann"/></name>
      <multipleBirthInteger value="2"/>
      <photo><size value="12"/></photo>
    </Patient>"""
    res = xml_to_resource(xml)
    assert res == {
        "resourceType": "Patient",
        "id": "p1",
        "active": False,
        "name": [{"given": ["Ann"]}],
        "multipleBirthInteger": 2,
        "photo": [{"size": 12}],
    }
    assert type(res["multipleBirthInteger"]) is int
    obs = xml_to_resource(
        '<Observation xmlns="http://hl7.org/fhir"><status value="final"/>'
        '<code><text value="x"/></code><valueQuantity><value value="0.50"/></valueQuantity>'
        "</Observation>"
    )
    assert str(obs["valueQuantity"]["value"]) == "0.50"
    assert obs["code"] == {"text": "x"}  # max 1: an object, not an array


def test_primitive_array_extension_pairing():
    ext = {"url": "http://example.org/x", "valueString": "v"}
    patient = {
        "resourceType": "Patient",
        "name": [
            {
                "given": ["A", None, "C"],
                "_given": [None, {"extension": [ext]}, {"id": "g3"}],
            }
        ],
    }
    root = tree(patient)
    given = root.findall(F + "name/" + F + "given")
    assert [g.get("value") for g in given] == ["A", None, "C"]
    assert given[1].find(F + "extension").get("url") == "http://example.org/x"
    assert given[2].get("id") == "g3"
    assert roundtrip(patient) == patient


def test_element_id_and_extension_url_are_attributes():
    patient = {
        "resourceType": "Patient",
        "id": "x",
        "extension": [{"id": "e1", "url": "http://example.org/e", "valueBoolean": True}],
        "name": [{"id": "n1", "family": "Doe"}],
    }
    root = tree(patient)
    ext = root.find(F + "extension")
    assert ext.get("id") == "e1" and ext.get("url") == "http://example.org/e"
    assert ext.find(F + "url") is None
    assert ext.find(F + "valueBoolean").get("value") == "true"
    assert root.find(F + "name").get("id") == "n1"
    assert root.find(F + "id").get("value") == "x"  # a resource id is an element
    assert roundtrip(patient) == patient


def test_element_order_follows_definition_not_json():
    obs = {
        "valueQuantity": {"unit": "mg", "value": Decimal("1.0"), "system": "http://unitsofmeasure.org"},
        "subject": {"reference": "Patient/1"},
        "code": {"text": "c"},
        "status": "final",
        "id": "o1",
        "resourceType": "Observation",
    }
    root = tree(obs)
    assert [c.tag[len(F):] for c in root] == ["id", "status", "code", "subject", "valueQuantity"]
    qty = root.find(F + "valueQuantity")
    assert [c.tag[len(F):] for c in qty] == ["value", "unit", "system"]
    assert roundtrip(obs) == obs


def test_contained_and_nested_resources_are_wrapped():
    care = load("CareTeam-example.json")
    root = tree(care)
    contained = root.find(F + "contained")
    assert [c.tag for c in contained] == [F + "Practitioner"]
    assert contained[0].find(F + "id").get("value") == "pr1"

    bundle = load("Bundle-bundle-transaction.json")
    root = tree(bundle)
    wrapped = [e.find(F + "resource") for e in root.findall(F + "entry")]
    assert any(w is not None and w[0].tag == F + "Patient" for w in wrapped)

    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "return", "resource": {"resourceType": "Patient", "id": "p", "active": True}},
            {"name": "count", "valueInteger": 3},
        ],
    }
    root = tree(params)
    assert root.find(F + "parameter/" + F + "resource/" + F + "Patient") is not None
    assert roundtrip(params) == params


def test_nested_questionnaire_items():
    q = load("Questionnaire-3141.json")
    root = tree(q)
    assert root.find(F + "item/" + F + "item") is not None
    assert roundtrip(q) == q


def test_xhtml_div_roundtrip_and_escaping():
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p class="a">Say &quot;hi&quot; '
        "&amp; 1 &lt; 2 &gt; 0, it's <b>bold</b><br/></p></div>"
    )
    res = {"resourceType": "Basic", "text": {"status": "generated", "div": div}, "code": {"text": "x"}}
    xml = resource_to_xml(res, pretty=True)
    el = etree.fromstring(xml).find(F + "text/" + X + "div")
    assert el.find(X + "p/" + X + "b").text == "bold"
    assert xml_to_resource(xml)["text"]["div"] == div


def test_xhtml_from_xml_with_prefix_and_html_entities():
    xml = (
        '<Basic xmlns="http://hl7.org/fhir" xmlns:h="http://www.w3.org/1999/xhtml">'
        '<text><status value="generated"/><h:div><h:p>x</h:p></h:div></text>'
        '<code><text value="c"/></code></Basic>'
    )
    assert xml_to_resource(xml)["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div>'
    res = {
        "resourceType": "Basic",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a&nbsp;b</div>'},
        "code": {"text": "c"},
    }
    assert xml_to_resource(resource_to_xml(res))["text"]["div"].endswith(">a\u00a0b</div>")


def test_r4_only_types_and_r4b_differences():
    mpi = load("MedicinalProductIngredient-example.json")
    back = roundtrip(mpi)
    assert back == mpi and canon(back) == canon(mpi)
    # R4 Extension.valueMeta exists; R4B's valueRatioRange does not
    ext_meta = {"resourceType": "Basic", "code": {"text": "c"},
                "extension": [{"url": "http://e", "valueMeta": {"versionId": "1"}}]}
    assert roundtrip(ext_meta) == ext_meta
    with pytest.raises(XmlFormatError, match="valueRatioRange"):
        resource_to_xml({"resourceType": "Basic", "extension": [{"url": "http://e", "valueRatioRange": {}}]})
    with pytest.raises(XmlFormatError, match="subjectCanonical"):
        xml_to_resource(
            '<ActivityDefinition xmlns="http://hl7.org/fhir"><status value="draft"/>'
            '<subjectCanonical value="http://x"/></ActivityDefinition>'
        )


def test_comments_and_extension_only_primitives():
    xml = b"""<!-- leading comment --><Patient xmlns="http://hl7.org/fhir">
      <!-- a comment -->
      <id value="c"/>
      <name><given><extension url="http://e"><valueCode value="x"/></extension></given></name>
    </Patient>"""
    res = xml_to_resource(xml)
    assert res == {
        "resourceType": "Patient",
        "id": "c",
        "name": [{"_given": [{"extension": [{"url": "http://e", "valueCode": "x"}]}]}],
    }
    assert roundtrip(res) == res


def test_str_input_with_declaration():
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n<Patient xmlns="http://hl7.org/fhir"><id value="é"/></Patient>'
    assert xml_to_resource(xml) == {"resourceType": "Patient", "id": "é"}


@pytest.mark.parametrize(
    "xml, fragment",
    [
        (b"<Patient xmlns='http://hl7.org/fhir'><id value='1'/>", "not well-formed"),
        (b"not xml at all", "not well-formed"),
        (b"<Patient><id value='1'/></Patient>", "namespace"),
        (b"<Patient xmlns='http://hl7.org/fhir/x'/>", "namespace"),
        (b"<Foo xmlns='http://hl7.org/fhir'/>", "not a FHIR R4 resource type"),
        (b"<HumanName xmlns='http://hl7.org/fhir'/>", "not a FHIR R4 resource type"),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><name><nickname value='x'/></name></Patient>",
            "Patient.name[0].nickname",
        ),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><name xmlns='urn:other'/></Patient>",
            "namespace",
        ),
        (b"<Patient xmlns='http://hl7.org/fhir'><active value='yes'/></Patient>", "invalid boolean"),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/><gender value='female'/></Patient>",
            "max cardinality 1",
        ),
        (b"<Patient xmlns='http://hl7.org/fhir'><active value='true'>text</active></Patient>", "text"),
        (b"<Patient xmlns='http://hl7.org/fhir'><active/></Patient>", "neither a value"),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><contained><Foo/></contained></Patient>",
            "not a FHIR R4 resource type",
        ),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><multipleBirthInteger value='1.5'/></Patient>",
            "invalid integer",
        ),
        (b"<Patient xmlns='http://hl7.org/fhir' resourceType='Patient'/>", "attribute"),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><multipleBirthInteger value='99999999999'/></Patient>",
            "invalid integer",
        ),
        (
            b"<MedicinalProduct xmlns='http://hl7.org/fhir'><name><productName value='x'/>"
            b"<bogus value='1'/></name></MedicinalProduct>",
            "MedicinalProduct.name[0].bogus",
        ),
    ],
)
def test_invalid_xml_raises(xml, fragment):
    with pytest.raises(XmlFormatError) as info:
        xml_to_resource(xml)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_element_message_has_path_and_line():
    xml = b"<Patient xmlns='http://hl7.org/fhir'>\n<contact>\n<bogus value='1'/>\n</contact>\n</Patient>"
    with pytest.raises(XmlFormatError) as info:
        xml_to_resource(xml)
    msg = str(info.value)
    assert "Patient.contact[0].bogus" in msg and "line 3" in msg


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="&xxe;"/></Patient>',
        b'<!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="&b;"/></Patient>',
        b'<!DOCTYPE Patient SYSTEM "http://example.org/evil.dtd">'
        b'<Patient xmlns="http://hl7.org/fhir"/>',
        '<!DOCTYPE Patient [<!ENTITY x "y">]><Patient xmlns="http://hl7.org/fhir"/>'.encode("utf-16"),
    ],
)
def test_doctype_and_entities_rejected(xml):
    with pytest.raises(XmlFormatError):
        xml_to_resource(xml)


@pytest.mark.parametrize(
    "resource, fragment",
    [
        ({"resourceType": "Patient", "nickname": "x"}, "Patient.nickname"),
        ({"resourceType": "NotAType"}, "resourceType"),
        ({"id": "x"}, "resourceType"),
        ({"resourceType": "Patient", "contained": [{"id": "c"}]}, "resourceType"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "array"),
        ({"resourceType": "Basic", "text": {"status": "generated", "div": "<div><p>unclosed</div>"}}, "div"),
    ],
)
def test_unrepresentable_json_raises(resource, fragment):
    with pytest.raises(XmlFormatError) as info:
        resource_to_xml(resource)
    assert fragment in str(info.value)


def test_pretty_and_compact_parse_the_same():
    patient = load("Patient-example.json")
    compact = resource_to_xml(patient)
    pretty = resource_to_xml(patient, pretty=True)
    assert compact.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b"\n  <id " in pretty and b"\n  <id " not in compact
    assert xml_to_resource(compact) == xml_to_resource(pretty) == patient
