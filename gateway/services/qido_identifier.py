"""The C-FIND identifier of a QIDO-RS search (PS3.4 C.4.1.1.3, PS3.18 10.6.1.3)."""

from __future__ import annotations

import codecs

from pydicom import Dataset
from pydicom.charset import convert_encodings, python_encoding
from pydicom.datadict import keyword_for_tag

from gateway.services.errors import InvalidParameter
from gateway.services.qido_attributes import (
    GATEWAY_COMPUTED,
    LOWER_LEVEL_STAND_INS,
    TagPath,
    is_below,
    return_keys,
)
from gateway.services.qido_query import MatchValue, QidoQuery


def build_identifier(query: QidoQuery, *, charset: str) -> Dataset:
    """The identifier for ``query``: level, path scope, return keys, then match keys.

    Return keys are the level's result attributes (with the higher levels' for
    All Series, Study's Instances and All Instances), the ``includefield=all``
    list when asked, and the client's include fields, all empty; an include
    field of a level below the query's is left out (``include_keys``).  A sequence
    return key is a sequence with no items (universal matching of the whole
    sequence, PS3.4 C.2.2.2.6) unless a sub-attribute is named, in which case it
    gets the single item sequence matching uses.  ``charset`` is the Specific
    Character Set (0008,0005) sent when a value is not ASCII (PS3.18 8.3.4.1).
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = query.level
    keys = return_keys(
        query.level,
        study_scoped=query.study_uid is not None,
        series_scoped=query.series_uid is not None,
        include_all=query.include_all,
    )
    for path in (*keys, *include_keys(query)):
        if path not in GATEWAY_COMPUTED:
            _put(ds, path, query.vr_of(path), None)
    for key in query.match_keys:
        _put(ds, key.path, key.vr, key.value)
    if query.study_uid is not None:
        ds.StudyInstanceUID = query.study_uid
    if query.series_uid is not None:
        ds.SeriesInstanceUID = query.series_uid
    if query.has_non_ascii:
        _check_encodable(query, charset)
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    return ds


def include_keys(query: QidoQuery) -> tuple[TagPath, ...]:
    """The client's include fields that can go into a C-FIND at the query's level.

    An attribute of a level below the query level (``Modality`` in a study
    search) is not a key of that C-FIND: a hierarchical SCP may refuse it
    (pynetdicom's qrscp answers A900) or ignore it, and no study has
    one Modality.  It is left out, and so missing from the results
    (docs/qido.md); where the level has an attribute that summarises it
    (``ModalitiesInStudy`` for ``Modality``), that one is asked for instead.
    Attributes of the query's level or above, and any our tables do not place
    (``attribute_level`` None), go to the PACS as asked.
    """
    out: dict[TagPath, None] = {}
    for path in sorted(query.include_fields):
        if is_below(path[0], query.level):
            stand_in = LOWER_LEVEL_STAND_INS.get((query.level, path))
            if stand_in is not None:
                out.setdefault(stand_in, None)
            continue
        out.setdefault(path, None)
    return tuple(out)


def _put(ds: Dataset, path: TagPath, vr: str, value: MatchValue | None) -> None:
    """Set the element at ``path``, creating the one item of each sequence on the way."""
    node = ds
    for tag in path[:-1]:
        if tag not in node or node[tag].VR != "SQ":
            node.add_new(tag, "SQ", [])
        items = node[tag].value
        if len(items) == 0:
            items.append(Dataset())
        node = items[0]
    tag = path[-1]
    if value is not None:
        node.add_new(tag, vr, value)
    elif tag not in node:
        node.add_new(tag, vr, [] if vr == "SQ" else None)


def _check_encodable(query: QidoQuery, charset: str) -> None:
    """400 when a value has characters the PACS's character set cannot carry."""
    terms = charset.split("\\")
    unknown = [t for t in terms if t not in python_encoding]
    if unknown:
        raise ValueError(f"not a Specific Character Set term pydicom knows: {unknown}")
    encodings = convert_encodings(terms)
    for key in query.match_keys:
        if not isinstance(key.value, str) or key.value.isascii():
            continue
        for char in set(key.value):
            if not any(_encodes(char, e) for e in encodings):
                raise InvalidParameter(
                    _name(key.path), f"{char!r} cannot be sent in the PACS character set {charset}"
                )


def _encodes(char: str, encoding: str) -> bool:
    try:
        codecs.encode(char, encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def _name(path: TagPath) -> str:
    return ".".join(keyword_for_tag(t) or f"{t:08X}" for t in path)
