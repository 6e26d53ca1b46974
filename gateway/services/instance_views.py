"""What WADO-RS derives from one instance: its metadata, its frames, its bulk data.

All three start from the Part 10 file the retriever gives (from the cache once
the series was retrieved), parsed once and kept in small in-memory LRUs keyed
by SOP Instance UID: a viewer asks for the metadata of a series and then for
hundreds of frames of the same instances.

Metadata JSON is built with a placeholder for the service base URL and the
URL is put in when it is served, so one cached JSON serves every
``X-Forwarded-*`` view of the gateway.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.frames import PixelInfo, frame_bytes, pixel_info
from gateway.dicom.part10 import Part10, read_part10
from gateway.dicom.walker import DicomParseError, walk_dataset
from gateway.services.errors import InvalidParameter, NotFound
from gateway.services.retrieve import InstanceData

K = TypeVar("K")
V = TypeVar("V")

BASE_PLACEHOLDER = "\x00BASE\x00"
_PLACEHOLDER_JSON = orjson.dumps(BASE_PLACEHOLDER)[1:-1]


class LRU(Generic[K, V]):
    """A small size-bounded LRU (sizes in bytes, as the caller counts them)."""

    def __init__(self, budget: int, size_of: Callable[[V], int]) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._budget = budget
        self._size_of = size_of
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        size = self._size_of(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= self._size_of(old)
            self._items[key] = value
            self._size += size
            while self._size > self._budget and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._size -= self._size_of(dropped)


@dataclass(frozen=True)
class ParsedInstance:
    part: Part10
    pixels: PixelInfo | None


def _bulk_path(path: tuple[int, ...]) -> str:
    # (tag,) at top level; (seq, item, ..., tag) inside sequences (dicom_json).
    return "/".join(f"{p:08X}" if i % 2 == 0 else str(p) for i, p in enumerate(path))


def instance_url(instance: InstanceData, base: str = BASE_PLACEHOLDER) -> str:
    return (
        f"{base}/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )


class InstanceViews:
    """Metadata, frames and bulk data of instances; one per app."""

    def __init__(self, bulk_threshold: int, memory_budget: int = 256 << 20) -> None:
        self.bulk_threshold = bulk_threshold
        self._metadata: LRU[str, bytes] = LRU(memory_budget // 4, len)
        self._parsed: LRU[str, ParsedInstance] = LRU(memory_budget, lambda p: len(p.part.data))

    def parsed(self, instance: InstanceData, data: bytes) -> ParsedInstance:
        """The Part 10 structure (and pixel layout) of an instance, parsed once."""
        hit = self._parsed.get(instance.sop_instance_uid)
        if hit is not None:
            return hit
        part = read_part10(data)
        try:
            pixels: PixelInfo | None = pixel_info(part)
        except ValueError:
            pixels = None
        parsed = ParsedInstance(part, pixels)
        self._parsed.put(instance.sop_instance_uid, parsed)
        return parsed

    def metadata(self, instance: InstanceData, data: bytes) -> bytes:
        """The instance's DICOM JSON object with the base URL left as a placeholder."""
        hit = self._metadata.get(instance.sop_instance_uid)
        if hit is not None:
            return hit
        part = read_part10(data)
        prefix = instance_url(instance) + "/bulk/"
        item = dataset_to_json(
            part.data,
            offset=part.offset,
            explicit_vr=part.explicit_vr,
            little_endian=part.little_endian,
            bulk_data_uri=lambda path: prefix + _bulk_path(path),
            bulk_threshold=self.bulk_threshold,
        )
        encoded = orjson.dumps(item)
        self._metadata.put(instance.sop_instance_uid, encoded)
        return encoded

    @staticmethod
    def with_base(json_bytes: bytes, base_url: str) -> bytes:
        return json_bytes.replace(_PLACEHOLDER_JSON, orjson.dumps(base_url)[1:-1])

    def frame(self, parsed: ParsedInstance, number: int) -> bytes | memoryview:
        """Frame ``number`` (1-based, PS3.18 8.3.1) as stored; NotFound beyond the last."""
        info = parsed.pixels
        if info is None:
            raise NotFound("the instance has no pixel data")
        if number > info.number_of_frames:
            raise NotFound(f"frame {number}: the instance has {info.number_of_frames} frame(s)")
        return frame_bytes(parsed.part.data, info, number - 1)

    def bulk(self, parsed: ParsedInstance, path: str) -> memoryview:
        """The exact original bytes of the element at ``path`` (``tag[/item/tag...]``)."""
        steps = path.strip("/").split("/")
        if len(steps) % 2 != 1:
            raise InvalidParameter("bulk data path", f"{path!r} must be tag[/item/tag...]")
        part = parsed.part
        data = part.data
        try:
            elements = walk_dataset(
                data, part.offset, explicit_vr=part.explicit_vr, little_endian=part.little_endian
            )
            for i, step in enumerate(steps):
                if i % 2 == 0:
                    tag = int(step, 16)
                    found = next((e for e in elements if e[0] == tag), None)
                    if found is None:
                        raise NotFound(f"bulk data {path}: no element {step}")
                    element = found
                else:
                    items = element[4] or []
                    index = int(step)
                    if not 0 <= index < len(items):
                        raise NotFound(f"bulk data {path}: no item {step}")
                    elements = items[index]
        except ValueError as exc:
            if isinstance(exc, DicomParseError):
                raise NotFound(f"bulk data {path}: {exc}") from exc
            raise InvalidParameter("bulk data path", f"{path!r} is not tag[/item/tag...]") from exc
        _tag, _vr, offset, length, _items, fragments = element
        view = memoryview(data)
        if fragments is not None:
            # Encapsulated Pixel Data: the value as stored, items and delimiter included.
            return view[offset : offset + length]
        return view[offset : offset + length]


def metadata_array(objects: list[bytes]) -> bytes:
    """A JSON array of already-encoded objects (PS3.18 10.4.1.2: one per instance)."""
    return b"[" + b",".join(objects) + b"]"
