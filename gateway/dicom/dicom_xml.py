"""The Native DICOM Model (PS3.19 A.1) from the DICOM JSON model (PS3.18 F.2).

QIDO-RS may answer ``multipart/related; type="application/dicom+xml"`` with
one XML document per match (PS3.18 8.3.5.2).  Converting from the JSON model
keeps one decoder (the fast walker) for both representations.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"


def _value_xml(vr: str, values: list[Any]) -> str:
    out = []
    for n, value in enumerate(values, 1):
        if vr == "PN":
            groups = []
            for group in ("Alphabetic", "Ideographic", "Phonetic"):
                text = (value or {}).get(group)
                if text:
                    comps = text.split("^")
                    names = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
                    inner = "".join(
                        f"<{name}>{escape(c)}</{name}>"
                        for name, c in zip(names, comps, strict=False)
                        if c
                    )
                    groups.append(f"<{group}>{inner}</{group}>")
            out.append(f'<PersonName number="{n}">{"".join(groups)}</PersonName>')
        elif vr == "SQ":
            out.append(f'<Item number="{n}">{_attributes_xml(value or {})}</Item>')
        elif value is None:
            out.append(f'<Value number="{n}"/>')
        else:
            out.append(f'<Value number="{n}">{escape(str(value))}</Value>')
    return "".join(out)


def _attributes_xml(dataset: dict[str, Any]) -> str:
    parts = []
    for tag, attr in dataset.items():
        vr = attr.get("vr", "UN")
        keyword = keyword_for_tag(int(tag, 16)) if len(tag) == 8 else ""
        head = f"<DicomAttribute tag={quoteattr(tag)} vr={quoteattr(vr)}"
        if keyword:
            head += f" keyword={quoteattr(keyword)}"
        if "Value" in attr:
            body = _value_xml(vr, attr["Value"])
        elif "BulkDataURI" in attr:
            body = f"<BulkData uri={quoteattr(attr['BulkDataURI'])}/>"
        elif "InlineBinary" in attr:
            body = f"<InlineBinary>{attr['InlineBinary']}</InlineBinary>"
        else:
            body = ""
        parts.append(f"{head}>{body}</DicomAttribute>")
    return "".join(parts)


def json_to_xml(dataset: dict[str, Any]) -> bytes:
    """One NativeDicomModel document for one dataset in the DICOM JSON model."""
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<NativeDicomModel xmlns="{_NS}">{_attributes_xml(dataset)}</NativeDicomModel>\n'
    )
    return doc.encode("utf-8")
