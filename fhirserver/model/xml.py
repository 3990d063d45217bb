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
the ``fhir.resources`` R4B pydantic models: for every model class we walk its
``model_fields`` (the ``element_property`` ones, by JSON alias), unwrap the
annotations (``Optional``/``List``/``Annotated`` with the fhir_core primitive
markers, ``abc.<Name>Type`` placeholders that name the model class) and order
them by ``elements_sequence()``. The table is built lazily, one entry per model
class, and cached. (``fhir_core.xml_utils`` is not used: it works on model
instances and writes decimals through ``float``, losing ``6.0``.)

R4B is R4 for almost every resource (checked element by element -- names,
order, cardinality, primitive types -- against the R4 4.0.1
StructureDefinitions). The differences are patched here:

* ``Extension.value[x]`` and the ``ElementDefinition`` ``defaultValue[x]`` /
  ``fixed[x]`` / ``pattern[x]`` / ``example.value[x]`` choices lose R4B's
  ``CodeableReference``/``RatioRange`` and regain R4's ``Meta``;
  ``ActivityDefinition``/``PlanDefinition(.action).subjectCanonical`` (R4B
  only) is removed;
* the R4 resource types that R4B dropped or reshaped -- ``MedicinalProduct*``,
  ``Substance{Specification,NucleicAcid,Polymer,Protein,ReferenceInformation,
  SourceMaterial}``, ``EffectEvidenceSynthesis``, ``RiskEvidenceSynthesis``,
  ``Evidence``, ``EvidenceVariable`` -- and the R4 datatype ``SubstanceAmount``
  are described by ``_R4_ONLY`` below, a compact table generated from the R4
  4.0.1 StructureDefinitions (npm package ``hl7.fhir.r4.examples@4.0.1``,
  ``Bundle-resources.json``/``Bundle-types.json``, CC0). The datatypes they use
  come from the R4B models.

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
import importlib
import re
import types
import typing
from decimal import Decimal
from typing import Any, Union, get_args, get_origin

from lxml import etree

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


# All resource types of FHIR R4 (4.0.1).
R4_RESOURCE_TYPES = frozenset(
    """Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment
    AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct
    BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry
    ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression
    CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage
    CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis
    Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare
    EventDefinition Evidence EvidenceVariable ExampleScenario
    ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
    GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide
    InsurancePlan Invoice Library Linkage List Location Measure MeasureReport
    Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication
    MedicinalProductIndication MedicinalProductIngredient
    MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader
    MolecularSequence NamingSystem NutritionOrder Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole
    Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy
    ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule
    SearchParameter ServiceRequest Slot Specimen SpecimenDefinition
    StructureDefinition StructureMap Subscription Substance
    SubstanceNucleicAcid SubstancePolymer SubstanceProtein
    SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task
    TerminologyCapabilities TestReport TestScript ValueSet VerificationResult
    VisionPrescription""".split()
)

# R4 types missing from (or reshaped in) R4B, generated from the R4 4.0.1
# StructureDefinitions. Each entry: "<base> name:type[*] ..." where base is
# DomainResource / BackboneElement / Element (whose elements come first),
# "*" marks max cardinality > 1, type "@" is the backbone element at
# "<this path>.<name>" and "@Path" a backbone element elsewhere.
_R4_ONLY: dict[str, str] = {
    "EffectEvidenceSynthesis": (
        "DomainResource url:uri identifier:Identifier* version:string name:string "
        "title:string status:code date:dateTime publisher:string "
        "contact:ContactDetail* description:markdown note:Annotation* "
        "useContext:UsageContext* jurisdiction:CodeableConcept* copyright:markdown "
        "approvalDate:date lastReviewDate:date effectivePeriod:Period "
        "topic:CodeableConcept* author:ContactDetail* editor:ContactDetail* "
        "reviewer:ContactDetail* endorser:ContactDetail* "
        "relatedArtifact:RelatedArtifact* synthesisType:CodeableConcept "
        "studyType:CodeableConcept population:Reference exposure:Reference "
        "exposureAlternative:Reference outcome:Reference sampleSize:@ "
        "resultsByExposure:@* effectEstimate:@* certainty:@*"
    ),
    "Evidence": (
        "DomainResource url:uri identifier:Identifier* version:string name:string "
        "title:string shortTitle:string subtitle:string status:code date:dateTime "
        "publisher:string contact:ContactDetail* description:markdown "
        "note:Annotation* useContext:UsageContext* jurisdiction:CodeableConcept* "
        "copyright:markdown approvalDate:date lastReviewDate:date "
        "effectivePeriod:Period topic:CodeableConcept* author:ContactDetail* "
        "editor:ContactDetail* reviewer:ContactDetail* endorser:ContactDetail* "
        "relatedArtifact:RelatedArtifact* exposureBackground:Reference "
        "exposureVariant:Reference* outcome:Reference*"
    ),
    "EvidenceVariable": (
        "DomainResource url:uri identifier:Identifier* version:string name:string "
        "title:string shortTitle:string subtitle:string status:code date:dateTime "
        "publisher:string contact:ContactDetail* description:markdown "
        "note:Annotation* useContext:UsageContext* jurisdiction:CodeableConcept* "
        "copyright:markdown approvalDate:date lastReviewDate:date "
        "effectivePeriod:Period topic:CodeableConcept* author:ContactDetail* "
        "editor:ContactDetail* reviewer:ContactDetail* endorser:ContactDetail* "
        "relatedArtifact:RelatedArtifact* type:code characteristic:@*"
    ),
    "MedicinalProduct": (
        "DomainResource identifier:Identifier* type:CodeableConcept domain:Coding "
        "combinedPharmaceuticalDoseForm:CodeableConcept "
        "legalStatusOfSupply:CodeableConcept "
        "additionalMonitoringIndicator:CodeableConcept specialMeasures:string* "
        "paediatricUseIndicator:CodeableConcept "
        "productClassification:CodeableConcept* marketingStatus:MarketingStatus* "
        "pharmaceuticalProduct:Reference* packagedMedicinalProduct:Reference* "
        "attachedDocument:Reference* masterFile:Reference* contact:Reference* "
        "clinicalTrial:Reference* name:@* crossReference:Identifier* "
        "manufacturingBusinessOperation:@* specialDesignation:@*"
    ),
    "MedicinalProductAuthorization": (
        "DomainResource identifier:Identifier* subject:Reference "
        "country:CodeableConcept* jurisdiction:CodeableConcept* "
        "status:CodeableConcept statusDate:dateTime restoreDate:dateTime "
        "validityPeriod:Period dataExclusivityPeriod:Period "
        "dateOfFirstAuthorization:dateTime internationalBirthDate:dateTime "
        "legalBasis:CodeableConcept jurisdictionalAuthorization:@* holder:Reference "
        "regulator:Reference procedure:@"
    ),
    "MedicinalProductContraindication": (
        "DomainResource subject:Reference* disease:CodeableConcept "
        "diseaseStatus:CodeableConcept comorbidity:CodeableConcept* "
        "therapeuticIndication:Reference* otherTherapy:@* population:Population*"
    ),
    "MedicinalProductIndication": (
        "DomainResource subject:Reference* diseaseSymptomProcedure:CodeableConcept "
        "diseaseStatus:CodeableConcept comorbidity:CodeableConcept* "
        "intendedEffect:CodeableConcept duration:Quantity otherTherapy:@* "
        "undesirableEffect:Reference* population:Population*"
    ),
    "MedicinalProductIngredient": (
        "DomainResource identifier:Identifier role:CodeableConcept "
        "allergenicIndicator:boolean manufacturer:Reference* specifiedSubstance:@* "
        "substance:@"
    ),
    "MedicinalProductInteraction": (
        "DomainResource subject:Reference* description:string interactant:@* "
        "type:CodeableConcept effect:CodeableConcept incidence:CodeableConcept "
        "management:CodeableConcept"
    ),
    "MedicinalProductManufactured": (
        "DomainResource manufacturedDoseForm:CodeableConcept "
        "unitOfPresentation:CodeableConcept quantity:Quantity manufacturer:Reference* "
        "ingredient:Reference* physicalCharacteristics:ProdCharacteristic "
        "otherCharacteristics:CodeableConcept*"
    ),
    "MedicinalProductPackaged": (
        "DomainResource identifier:Identifier* subject:Reference* description:string "
        "legalStatusOfSupply:CodeableConcept marketingStatus:MarketingStatus* "
        "marketingAuthorization:Reference manufacturer:Reference* batchIdentifier:@* "
        "packageItem:@*"
    ),
    "MedicinalProductPharmaceutical": (
        "DomainResource identifier:Identifier* administrableDoseForm:CodeableConcept "
        "unitOfPresentation:CodeableConcept ingredient:Reference* device:Reference* "
        "characteristics:@* routeOfAdministration:@*"
    ),
    "MedicinalProductUndesirableEffect": (
        "DomainResource subject:Reference* symptomConditionEffect:CodeableConcept "
        "classification:CodeableConcept frequencyOfOccurrence:CodeableConcept "
        "population:Population*"
    ),
    "RiskEvidenceSynthesis": (
        "DomainResource url:uri identifier:Identifier* version:string name:string "
        "title:string status:code date:dateTime publisher:string "
        "contact:ContactDetail* description:markdown note:Annotation* "
        "useContext:UsageContext* jurisdiction:CodeableConcept* copyright:markdown "
        "approvalDate:date lastReviewDate:date effectivePeriod:Period "
        "topic:CodeableConcept* author:ContactDetail* editor:ContactDetail* "
        "reviewer:ContactDetail* endorser:ContactDetail* "
        "relatedArtifact:RelatedArtifact* synthesisType:CodeableConcept "
        "studyType:CodeableConcept population:Reference exposure:Reference "
        "outcome:Reference sampleSize:@ riskEstimate:@ certainty:@*"
    ),
    "SubstanceNucleicAcid": (
        "DomainResource sequenceType:CodeableConcept numberOfSubunits:integer "
        "areaOfHybridisation:string oligoNucleotideType:CodeableConcept subunit:@*"
    ),
    "SubstancePolymer": (
        "DomainResource class:CodeableConcept geometry:CodeableConcept "
        "copolymerConnectivity:CodeableConcept* modification:string* monomerSet:@* "
        "repeat:@*"
    ),
    "SubstanceProtein": (
        "DomainResource sequenceType:CodeableConcept numberOfSubunits:integer "
        "disulfideLinkage:string* subunit:@*"
    ),
    "SubstanceReferenceInformation": (
        "DomainResource comment:string gene:@* geneElement:@* classification:@* "
        "target:@*"
    ),
    "SubstanceSourceMaterial": (
        "DomainResource sourceMaterialClass:CodeableConcept "
        "sourceMaterialType:CodeableConcept sourceMaterialState:CodeableConcept "
        "organismId:Identifier organismName:string parentSubstanceId:Identifier* "
        "parentSubstanceName:string* countryOfOrigin:CodeableConcept* "
        "geographicalLocation:string* developmentStage:CodeableConcept "
        "fractionDescription:@* organism:@ partDescription:@*"
    ),
    "SubstanceSpecification": (
        "DomainResource identifier:Identifier type:CodeableConcept "
        "status:CodeableConcept domain:CodeableConcept description:string "
        "source:Reference* comment:string moiety:@* property:@* "
        "referenceInformation:Reference structure:@ code:@* name:@* "
        "molecularWeight:@SubstanceSpecification.structure.isotope.molecularWeight* "
        "relationship:@* nucleicAcid:Reference polymer:Reference protein:Reference "
        "sourceMaterial:Reference"
    ),
    "EffectEvidenceSynthesis.sampleSize": (
        "BackboneElement description:string numberOfStudies:integer "
        "numberOfParticipants:integer"
    ),
    "EffectEvidenceSynthesis.resultsByExposure": (
        "BackboneElement description:string exposureState:code "
        "variantState:CodeableConcept riskEvidenceSynthesis:Reference"
    ),
    "EffectEvidenceSynthesis.effectEstimate": (
        "BackboneElement description:string type:CodeableConcept "
        "variantState:CodeableConcept value:decimal unitOfMeasure:CodeableConcept "
        "precisionEstimate:@*"
    ),
    "EffectEvidenceSynthesis.certainty": (
        "BackboneElement rating:CodeableConcept* note:Annotation* "
        "certaintySubcomponent:@*"
    ),
    "EvidenceVariable.characteristic": (
        "BackboneElement description:string definitionReference:Reference "
        "definitionCanonical:canonical definitionCodeableConcept:CodeableConcept "
        "definitionExpression:Expression definitionDataRequirement:DataRequirement "
        "definitionTriggerDefinition:TriggerDefinition usageContext:UsageContext* "
        "exclude:boolean participantEffectiveDateTime:dateTime "
        "participantEffectivePeriod:Period participantEffectiveDuration:Duration "
        "participantEffectiveTiming:Timing timeFromStart:Duration groupMeasure:code"
    ),
    "MedicinalProduct.name": (
        "BackboneElement productName:string namePart:@* countryLanguage:@*"
    ),
    "MedicinalProduct.manufacturingBusinessOperation": (
        "BackboneElement operationType:CodeableConcept "
        "authorisationReferenceNumber:Identifier effectiveDate:dateTime "
        "confidentialityIndicator:CodeableConcept manufacturer:Reference* "
        "regulator:Reference"
    ),
    "MedicinalProduct.specialDesignation": (
        "BackboneElement identifier:Identifier* type:CodeableConcept "
        "intendedUse:CodeableConcept indicationCodeableConcept:CodeableConcept "
        "indicationReference:Reference status:CodeableConcept date:dateTime "
        "species:CodeableConcept"
    ),
    "MedicinalProductAuthorization.jurisdictionalAuthorization": (
        "BackboneElement identifier:Identifier* country:CodeableConcept "
        "jurisdiction:CodeableConcept* legalStatusOfSupply:CodeableConcept "
        "validityPeriod:Period"
    ),
    "MedicinalProductAuthorization.procedure": (
        "BackboneElement identifier:Identifier type:CodeableConcept datePeriod:Period "
        "dateDateTime:dateTime application:@MedicinalProductAuthorization.procedure*"
    ),
    "MedicinalProductContraindication.otherTherapy": (
        "BackboneElement therapyRelationshipType:CodeableConcept "
        "medicationCodeableConcept:CodeableConcept medicationReference:Reference"
    ),
    "MedicinalProductIndication.otherTherapy": (
        "BackboneElement therapyRelationshipType:CodeableConcept "
        "medicationCodeableConcept:CodeableConcept medicationReference:Reference"
    ),
    "MedicinalProductIngredient.specifiedSubstance": (
        "BackboneElement code:CodeableConcept group:CodeableConcept "
        "confidentiality:CodeableConcept strength:@*"
    ),
    "MedicinalProductIngredient.substance": (
        "BackboneElement code:CodeableConcept "
        "strength:@MedicinalProductIngredient.specifiedSubstance.strength*"
    ),
    "MedicinalProductInteraction.interactant": (
        "BackboneElement itemReference:Reference itemCodeableConcept:CodeableConcept"
    ),
    "MedicinalProductPackaged.batchIdentifier": (
        "BackboneElement outerPackaging:Identifier immediatePackaging:Identifier"
    ),
    "MedicinalProductPackaged.packageItem": (
        "BackboneElement identifier:Identifier* type:CodeableConcept "
        "quantity:Quantity material:CodeableConcept* "
        "alternateMaterial:CodeableConcept* device:Reference* "
        "manufacturedItem:Reference* "
        "packageItem:@MedicinalProductPackaged.packageItem* "
        "physicalCharacteristics:ProdCharacteristic "
        "otherCharacteristics:CodeableConcept* shelfLifeStorage:ProductShelfLife* "
        "manufacturer:Reference*"
    ),
    "MedicinalProductPharmaceutical.characteristics": (
        "BackboneElement code:CodeableConcept status:CodeableConcept"
    ),
    "MedicinalProductPharmaceutical.routeOfAdministration": (
        "BackboneElement code:CodeableConcept firstDose:Quantity "
        "maxSingleDose:Quantity maxDosePerDay:Quantity "
        "maxDosePerTreatmentPeriod:Ratio maxTreatmentPeriod:Duration targetSpecies:@*"
    ),
    "RiskEvidenceSynthesis.sampleSize": (
        "BackboneElement description:string numberOfStudies:integer "
        "numberOfParticipants:integer"
    ),
    "RiskEvidenceSynthesis.riskEstimate": (
        "BackboneElement description:string type:CodeableConcept value:decimal "
        "unitOfMeasure:CodeableConcept denominatorCount:integer "
        "numeratorCount:integer precisionEstimate:@*"
    ),
    "RiskEvidenceSynthesis.certainty": (
        "BackboneElement rating:CodeableConcept* note:Annotation* "
        "certaintySubcomponent:@*"
    ),
    "SubstanceNucleicAcid.subunit": (
        "BackboneElement subunit:integer sequence:string length:integer "
        "sequenceAttachment:Attachment fivePrime:CodeableConcept "
        "threePrime:CodeableConcept linkage:@* sugar:@*"
    ),
    "SubstancePolymer.monomerSet": (
        "BackboneElement ratioType:CodeableConcept startingMaterial:@*"
    ),
    "SubstancePolymer.repeat": (
        "BackboneElement numberOfUnits:integer averageMolecularFormula:string "
        "repeatUnitAmountType:CodeableConcept repeatUnit:@*"
    ),
    "SubstanceProtein.subunit": (
        "BackboneElement subunit:integer sequence:string length:integer "
        "sequenceAttachment:Attachment nTerminalModificationId:Identifier "
        "nTerminalModification:string cTerminalModificationId:Identifier "
        "cTerminalModification:string"
    ),
    "SubstanceReferenceInformation.gene": (
        "BackboneElement geneSequenceOrigin:CodeableConcept gene:CodeableConcept "
        "source:Reference*"
    ),
    "SubstanceReferenceInformation.geneElement": (
        "BackboneElement type:CodeableConcept element:Identifier source:Reference*"
    ),
    "SubstanceReferenceInformation.classification": (
        "BackboneElement domain:CodeableConcept classification:CodeableConcept "
        "subtype:CodeableConcept* source:Reference*"
    ),
    "SubstanceReferenceInformation.target": (
        "BackboneElement target:Identifier type:CodeableConcept "
        "interaction:CodeableConcept organism:CodeableConcept "
        "organismType:CodeableConcept amountQuantity:Quantity amountRange:Range "
        "amountString:string amountType:CodeableConcept source:Reference*"
    ),
    "SubstanceSourceMaterial.fractionDescription": (
        "BackboneElement fraction:string materialType:CodeableConcept"
    ),
    "SubstanceSourceMaterial.organism": (
        "BackboneElement family:CodeableConcept genus:CodeableConcept "
        "species:CodeableConcept intraspecificType:CodeableConcept "
        "intraspecificDescription:string author:@* hybrid:@ organismGeneral:@"
    ),
    "SubstanceSourceMaterial.partDescription": (
        "BackboneElement part:CodeableConcept partLocation:CodeableConcept"
    ),
    "SubstanceSpecification.moiety": (
        "BackboneElement role:CodeableConcept identifier:Identifier name:string "
        "stereochemistry:CodeableConcept opticalActivity:CodeableConcept "
        "molecularFormula:string amountQuantity:Quantity amountString:string"
    ),
    "SubstanceSpecification.property": (
        "BackboneElement category:CodeableConcept code:CodeableConcept "
        "parameters:string definingSubstanceReference:Reference "
        "definingSubstanceCodeableConcept:CodeableConcept amountQuantity:Quantity "
        "amountString:string"
    ),
    "SubstanceSpecification.structure": (
        "BackboneElement stereochemistry:CodeableConcept "
        "opticalActivity:CodeableConcept molecularFormula:string "
        "molecularFormulaByMoiety:string isotope:@* "
        "molecularWeight:@SubstanceSpecification.structure.isotope.molecularWeight "
        "source:Reference* representation:@*"
    ),
    "SubstanceSpecification.code": (
        "BackboneElement code:CodeableConcept status:CodeableConcept "
        "statusDate:dateTime comment:string source:Reference*"
    ),
    "SubstanceSpecification.name": (
        "BackboneElement name:string type:CodeableConcept status:CodeableConcept "
        "preferred:boolean language:CodeableConcept* domain:CodeableConcept* "
        "jurisdiction:CodeableConcept* synonym:@SubstanceSpecification.name* "
        "translation:@SubstanceSpecification.name* official:@* source:Reference*"
    ),
    "SubstanceSpecification.structure.isotope.molecularWeight": (
        "BackboneElement method:CodeableConcept type:CodeableConcept amount:Quantity"
    ),
    "SubstanceSpecification.relationship": (
        "BackboneElement substanceReference:Reference "
        "substanceCodeableConcept:CodeableConcept relationship:CodeableConcept "
        "isDefining:boolean amountQuantity:Quantity amountRange:Range "
        "amountRatio:Ratio amountString:string amountRatioLowLimit:Ratio "
        "amountType:CodeableConcept source:Reference*"
    ),
    "EffectEvidenceSynthesis.effectEstimate.precisionEstimate": (
        "BackboneElement type:CodeableConcept level:decimal from:decimal to:decimal"
    ),
    "EffectEvidenceSynthesis.certainty.certaintySubcomponent": (
        "BackboneElement type:CodeableConcept rating:CodeableConcept* "
        "note:Annotation*"
    ),
    "MedicinalProduct.name.namePart": (
        "BackboneElement part:string type:Coding"
    ),
    "MedicinalProduct.name.countryLanguage": (
        "BackboneElement country:CodeableConcept jurisdiction:CodeableConcept "
        "language:CodeableConcept"
    ),
    "MedicinalProductIngredient.specifiedSubstance.strength": (
        "BackboneElement presentation:Ratio presentationLowLimit:Ratio "
        "concentration:Ratio concentrationLowLimit:Ratio measurementPoint:string "
        "country:CodeableConcept* referenceStrength:@*"
    ),
    "MedicinalProductPharmaceutical.routeOfAdministration.targetSpecies": (
        "BackboneElement code:CodeableConcept withdrawalPeriod:@*"
    ),
    "RiskEvidenceSynthesis.riskEstimate.precisionEstimate": (
        "BackboneElement type:CodeableConcept level:decimal from:decimal to:decimal"
    ),
    "RiskEvidenceSynthesis.certainty.certaintySubcomponent": (
        "BackboneElement type:CodeableConcept rating:CodeableConcept* "
        "note:Annotation*"
    ),
    "SubstanceNucleicAcid.subunit.linkage": (
        "BackboneElement connectivity:string identifier:Identifier name:string "
        "residueSite:string"
    ),
    "SubstanceNucleicAcid.subunit.sugar": (
        "BackboneElement identifier:Identifier name:string residueSite:string"
    ),
    "SubstancePolymer.monomerSet.startingMaterial": (
        "BackboneElement material:CodeableConcept type:CodeableConcept "
        "isDefining:boolean amount:SubstanceAmount"
    ),
    "SubstancePolymer.repeat.repeatUnit": (
        "BackboneElement orientationOfPolymerisation:CodeableConcept "
        "repeatUnit:string amount:SubstanceAmount degreeOfPolymerisation:@* "
        "structuralRepresentation:@*"
    ),
    "SubstanceSourceMaterial.organism.author": (
        "BackboneElement authorType:CodeableConcept authorDescription:string"
    ),
    "SubstanceSourceMaterial.organism.hybrid": (
        "BackboneElement maternalOrganismId:string maternalOrganismName:string "
        "paternalOrganismId:string paternalOrganismName:string "
        "hybridType:CodeableConcept"
    ),
    "SubstanceSourceMaterial.organism.organismGeneral": (
        "BackboneElement kingdom:CodeableConcept phylum:CodeableConcept "
        "class:CodeableConcept order:CodeableConcept"
    ),
    "SubstanceSpecification.structure.isotope": (
        "BackboneElement identifier:Identifier name:CodeableConcept "
        "substitution:CodeableConcept halfLife:Quantity molecularWeight:@"
    ),
    "SubstanceSpecification.structure.representation": (
        "BackboneElement type:CodeableConcept representation:string "
        "attachment:Attachment"
    ),
    "SubstanceSpecification.name.official": (
        "BackboneElement authority:CodeableConcept status:CodeableConcept "
        "date:dateTime"
    ),
    "MedicinalProductIngredient.specifiedSubstance.strength.referenceStrength": (
        "BackboneElement substance:CodeableConcept strength:Ratio "
        "strengthLowLimit:Ratio measurementPoint:string country:CodeableConcept*"
    ),
    "MedicinalProductPharmaceutical.routeOfAdministration.targetSpecies.withdrawalPeriod": (
        "BackboneElement tissue:CodeableConcept value:Quantity "
        "supportingInformation:string"
    ),
    "SubstancePolymer.repeat.repeatUnit.degreeOfPolymerisation": (
        "BackboneElement degree:CodeableConcept amount:SubstanceAmount"
    ),
    "SubstancePolymer.repeat.repeatUnit.structuralRepresentation": (
        "BackboneElement type:CodeableConcept representation:string "
        "attachment:Attachment"
    ),
    "SubstanceAmount": (
        "BackboneElement amountQuantity:Quantity amountRange:Range "
        "amountString:string amountType:CodeableConcept amountText:string "
        "referenceRange:@"
    ),
    "SubstanceAmount.referenceRange": (
        "Element lowLimit:Quantity highLimit:Quantity"
    ),
}

# R4B elements that differ from R4: (removed names, [(added name, R4B type)])
_R4_PATCHES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "Extension": (("valueCodeableReference", "valueRatioRange"), (("valueMeta", "Meta"),)),
    "ElementDefinitionExample": (
        ("valueCodeableReference", "valueRatioRange"),
        (("valueMeta", "Meta"),),
    ),
    "ElementDefinition": (
        (
            "defaultValueCodeableReference",
            "defaultValueRatioRange",
            "fixedCodeableReference",
            "fixedRatioRange",
            "patternCodeableReference",
            "patternRatioRange",
        ),
        (("defaultValueMeta", "Meta"), ("fixedMeta", "Meta"), ("patternMeta", "Meta")),
    ),
    "ActivityDefinition": (("subjectCanonical",), ()),
    "PlanDefinition": (("subjectCanonical",), ()),
    "PlanDefinitionAction": (("subjectCanonical",), ()),
}

# ---------------------------------------------------------------------------
# Schema table built from the fhir.resources R4B models
# ---------------------------------------------------------------------------

# field kinds
_PRIM = 1  # primitive: element with @value
_COMPLEX = 2  # complex datatype / backbone element
_RESOURCE = 3  # a resource wrapped in an element named after its type
_XHTML = 4  # Narrative.div

# JSON value types of primitives
_J_STR = 0
_J_BOOL = 1
_J_INT = 2
_J_DEC = 3

_PRIMITIVE_JSON = {
    "boolean": _J_BOOL,
    "integer": _J_INT,
    "positiveInt": _J_INT,
    "unsignedInt": _J_INT,
    "decimal": _J_DEC,
}


class _Field:
    __slots__ = ("name", "kind", "jtype", "is_list", "model", "tag")

    def __init__(self, name: str, kind: int, jtype: int, is_list: bool, model: Any):
        self.name = name
        self.kind = kind
        self.jtype = jtype
        self.is_list = is_list
        # _COMPLEX: an R4B model class, or a path in _R4_ONLY
        self.model = model
        self.tag = _XHTML_DIV if kind == _XHTML else _F + name


class _TypeInfo:
    __slots__ = ("name", "fields", "order", "attrs", "by_tag", "is_resource")

    def __init__(self, name: str, is_resource: bool, fields: dict[str, _Field], order: list[str]):
        self.name = name
        self.is_resource = is_resource
        self.fields = fields
        self.order = tuple(order)
        attrs: list[str] = []
        if not is_resource and "id" in fields:
            attrs.append("id")  # Element.id is an XML attribute
        if name == "Extension":
            attrs.append("url")  # so is Extension.url
        self.attrs = tuple(attrs)
        self.by_tag = {f.tag: f for n, f in fields.items() if n not in attrs}


_TYPE_CACHE: dict[Any, _TypeInfo] = {}
_RESOURCE_CACHE: dict[str, _TypeInfo] = {}
_CLASS_CACHE: dict[str, Any] = {}
_CORE: dict[str, Any] = {}


def _core() -> dict[str, Any]:
    if not _CORE:
        from fhir.resources.R4B import get_fhir_model_class
        from fhir.resources.R4B.resource import Resource
        from fhir_core.constraints import FHIR_PRIMITIVES_MAPS

        _CORE["prim"] = FHIR_PRIMITIVES_MAPS
        _CORE["Resource"] = Resource
        _CORE["model"] = get_fhir_model_class
    return _CORE


def _model_class(name: str) -> Any:
    cls = _CLASS_CACHE.get(name)
    if cls is None:
        if "." in name:  # "fhir.resources.R4B.meta.Meta"
            mod, _, attr = name.rpartition(".")
            cls = getattr(importlib.import_module(mod), attr)
        else:
            cls = _core()["model"](name)
        _CLASS_CACHE[name] = cls
    return cls


def _resolve_annotation(finfo: Any) -> tuple[int, int, bool, Any]:
    """(kind, json type, is_list, model class) of one pydantic field."""
    prim_map = _core()["prim"]
    is_list = False

    def walk(ann: Any, meta: list) -> Any:
        nonlocal is_list
        origin = get_origin(ann)
        if origin is typing.Annotated:
            return walk(get_args(ann)[0], meta + list(ann.__metadata__))
        if origin is Union or origin is types.UnionType:
            for arg in get_args(ann):
                if arg is not type(None):
                    found = walk(arg, meta)
                    if found is not None:
                        return found
            return None
        if origin is list:
            is_list = True
            return walk(get_args(ann)[0], meta)
        for m in meta:  # fhir_core markers: Id(), Uri(), Date(), Xhtml(), ...
            name = prim_map.get(type(m))
            if isinstance(name, str):
                return ("P", name)
        model_path = getattr(ann, "_model_klass", None)  # abc.<Name>Type
        if isinstance(model_path, str):
            return ("C", _model_class(model_path))
        try:
            name = prim_map.get(ann)  # bare str / bool / int / Decimal ...
        except TypeError:
            name = None
        return ("P", name) if isinstance(name, str) else None

    found = walk(finfo.annotation, list(finfo.metadata or ()))
    if found is None:
        raise TypeError(f"cannot resolve the FHIR type of {finfo.annotation!r}")
    what, val = found
    if what == "P":
        if val == "xhtml":
            return _XHTML, _J_STR, is_list, None
        return _PRIM, _PRIMITIVE_JSON.get(val, _J_STR), is_list, None
    if val is _core()["Resource"]:
        return _RESOURCE, _J_STR, is_list, None
    return _COMPLEX, _J_STR, is_list, val


def _field_for_code(name: str, code: str, is_list: bool) -> _Field:
    """A field from an R4 type code (primitive name, datatype, table path)."""
    if code == "xhtml":
        return _Field(name, _XHTML, _J_STR, is_list, None)
    if code[:1].islower():
        return _Field(name, _PRIM, _PRIMITIVE_JSON.get(code, _J_STR), is_list, None)
    if code == "Resource":
        return _Field(name, _RESOURCE, _J_STR, is_list, None)
    model = code if code in _R4_ONLY else _model_class(code)
    return _Field(name, _COMPLEX, _J_STR, is_list, model)


def _model_type_info(cls: Any) -> _TypeInfo:
    fields: dict[str, _Field] = {}
    for fname, finfo in cls.model_fields.items():
        extra = finfo.json_schema_extra
        if not isinstance(extra, dict) or not extra.get("element_property"):
            continue
        name = finfo.alias or fname
        kind, jtype, is_list, model = _resolve_annotation(finfo)
        fields[name] = _Field(name, kind, jtype, is_list, model)
    order = [n for n in cls.elements_sequence() if n in fields]
    order += [n for n in fields if n not in order]
    patch = _R4_PATCHES.get(cls.__name__)
    if patch is not None and cls.__module__.startswith("fhir.resources.R4B."):
        removed, added = patch
        order = [n for n in order if n not in removed]
        for n in removed:
            fields.pop(n, None)
        for n, code in added:
            # a choice type: insert it after the last sibling of the choice
            prefix = re.match(r"[a-z]+(?:Value)?", n).group(0)
            pos = max(i for i, o in enumerate(order) if o.startswith(prefix)) + 1
            order.insert(pos, n)
            fields[n] = _field_for_code(n, code, False)
    is_resource = issubclass(cls, _core()["Resource"])
    return _TypeInfo(cls.__name__, is_resource, fields, order)


def _table_type_info(path: str) -> _TypeInfo:
    base, *items = _R4_ONLY[path].split()
    base_ti = _type_info(_model_class(base))
    fields = dict(base_ti.fields)
    order = list(base_ti.order)
    for item in items:
        name, _, code = item.partition(":")
        is_list = code.endswith("*")
        code = code.rstrip("*")
        if code == "@":
            code = f"{path}.{name}"
        elif code[:1] == "@":
            code = code[1:]
        fields[name] = _field_for_code(name, code, is_list)
        order.append(name)
    return _TypeInfo(path, path in R4_RESOURCE_TYPES, fields, order)


def _type_info(model: Any) -> _TypeInfo:
    """Cached type info of an R4B model class or an _R4_ONLY path."""
    ti = _TYPE_CACHE.get(model)
    if ti is None:
        ti = _table_type_info(model) if isinstance(model, str) else _model_type_info(model)
        _TYPE_CACHE[model] = ti
    return ti


def _resource_info(rtype: Any) -> _TypeInfo | None:
    """Type info of an R4 resource type, or None if it is not one."""
    ti = _RESOURCE_CACHE.get(rtype) if isinstance(rtype, str) else None
    if ti is None:
        if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
            return None
        ti = _type_info(rtype if rtype in _R4_ONLY else _model_class(rtype))
        _RESOURCE_CACHE[rtype] = ti
    return ti


def _named_info(name: str) -> _TypeInfo:
    return _type_info(_model_class(name))


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
