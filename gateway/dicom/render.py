"""Rendered frames: stored pixels to an 8-bit consumer image (PS3.18 8.3.5.1, 8.7.4).

Why: WADO-RS /rendered and /thumbnail (and WADO-URI) promise a browser can show
a frame without knowing DICOM. That means running the grayscale pipeline of
PS3.3 C.11 (Modality LUT, VOI LUT or window, Presentation LUT) or the colour
conversions of PS3.3 C.7.6.3, then cropping and scaling to the requested
viewport, then encoding as JPEG, PNG or GIF with at most 8 bits per channel
(PS3.18 8.7.4). Decoding is `codecs`; attributes are read with `walker` and
`dicom_json` (no `pydicom.dcmread`), so the cost is one walk of the header.

Everything is a pure function of its arguments (new arrays and images per
call, no module state that changes), so a worker pool can render frames of
the same instance in parallel.

Order of VOI choices, as DESIGN.md section 4 says: the window of the request
(PS3.18 8.3.5.1.4), else the instance's first Window Center/Width with its
VOI LUT Function (PS3.3 C.11.2, including the Frame VOI LUT of an enhanced
multi-frame, C.7.6.16.2.10), else its first VOI LUT Sequence item, else the
minimum..maximum of the frame after the Modality LUT, so that every image
shows something. Windows apply to grayscale only: colour stays colour.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from gateway.dicom.codecs import decode_frame, decoded_photometric
from gateway.dicom.dicom_json import elements_to_json
from gateway.dicom.frames import PixelInfo, frame_bytes, pixel_info
from gateway.dicom.part10 import Part10, read_part10
from gateway.dicom.walker import walk_dataset

__all__ = [
    "MEDIA_TYPES",
    "WINDOW_FUNCTIONS",
    "DisplayAttributes",
    "Lut",
    "RenderError",
    "RenderParams",
    "Viewport",
    "Window",
    "apply_viewport",
    "display_attributes",
    "encode_image",
    "parse_quality",
    "parse_viewport",
    "parse_window",
    "render_frame",
    "to_display",
    "voi_window",
]

Pixels: TypeAlias = NDArray[Any]
Floats: TypeAlias = NDArray[np.float64]
Bytes8: TypeAlias = NDArray[np.uint8]
#: (center, width, function): PS3.18 8.3.5.1.4 window, function lower case.
Window: TypeAlias = tuple[float, float, str]

#: PS3.18 8.3.5.1.4 window functions (PS3.3 C.11.2.1.2 VOI LUT Function, lower case).
WINDOW_FUNCTIONS: Final = frozenset({"linear", "linear-exact", "sigmoid"})
#: PS3.18 8.7.4: the rendered media types we produce; image/jpeg is the default.
MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif")
DEFAULT_QUALITY: Final = 90

_Y_MAX: Final = 255.0  # 8 bits per channel (PS3.18 8.7.4)


class RenderError(ValueError):
    """The frame cannot be rendered as asked (unsupported colour space, a
    viewport that selects no pixels, an unknown media type)."""


@dataclass(frozen=True, slots=True)
class Viewport:
    """PS3.18 8.3.5.1.3 ``viewport=vw,vh[,sx,sy,sw,sh]``: the region
    (sx, sy, sw, sh) of the source (whole image when absent; a negative sw or
    sh flips) scaled to fit vw x vh with its aspect ratio kept."""

    vw: int
    vh: int
    sx: int | None = None
    sy: int | None = None
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True, slots=True)
class RenderParams:
    """What the request asks for (PS3.18 8.3.5.1): ``window``, ``viewport``,
    ``quality`` and the media type chosen from Accept."""

    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY
    media_type: str = "image/jpeg"


@dataclass(frozen=True, slots=True, eq=False)
class Lut:
    """One lookup table (PS3.3 C.11.1.1.1 Modality LUT, C.11.2.1.1 VOI LUT,
    C.7.6.3.1.5 Palette Color LUT): input values below `first_mapped` map to
    the first entry, above the last input to the last entry; entries are
    `bits` wide."""

    first_mapped: int
    bits: int
    data: NDArray[Any]

    def lookup(self, values: Pixels) -> Floats:
        """Map `values` (rounded to integers) through the table."""
        index = np.rint(values).astype(np.int64) - self.first_mapped
        np.clip(index, 0, len(self.data) - 1, out=index)
        return self.data[index].astype(np.float64)

    @property
    def output_max(self) -> float:
        """The largest value the table may hold (2^bits - 1)."""
        return float(2**self.bits - 1)


@dataclass(frozen=True, slots=True)
class DisplayAttributes:
    """The attributes of one frame that rendering needs, read once per frame.

    `photometric` is that of the decoded array (`codecs.decoded_photometric`:
    codecs may already have converted YBR to RGB). `window` and `voi_lut` are
    the instance's own VOI (PS3.3 C.11.2), `modality_lut` or the rescale pair
    its Modality LUT (C.11.1), `palette` the Red, Green and Blue Palette Color
    LUTs (C.7.6.3.1.5).
    """

    photometric: str
    bits_stored: int
    pixel_representation: int = 0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: Lut | None = None
    window: Window | None = None
    voi_lut: Lut | None = None
    palette: tuple[Lut, Lut, Lut] | None = None


# ---------------------------------------------------------------- parameters


def parse_window(value: str) -> Window:
    """Parse ``window=center,width,function`` (PS3.18 8.3.5.1.4): all three
    are required. Raises `ValueError` with a short reason; PS3.3 C.11.2.1.2
    requires width >= 1 for linear and > 0 otherwise."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 3:
        raise ValueError("expected center,width,function")
    center, width = _finite(parts[0], "center"), _finite(parts[1], "width")
    function = parts[2].lower()
    if function not in WINDOW_FUNCTIONS:
        raise ValueError("function must be linear, linear-exact or sigmoid")
    if function == "linear" and width < 1:
        raise ValueError("width must be at least 1 for linear")
    if width <= 0:
        raise ValueError("width must be positive")
    return center, width, function


def parse_viewport(value: str) -> Viewport:
    """Parse ``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3). vw and vh
    are positive integers; sx and sy non-negative and sw and sh non-zero
    integers, each of the four may be left empty for its default. Raises
    `ValueError` with a short reason."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (2, 6):
        raise ValueError("expected vw,vh or vw,vh,sx,sy,sw,sh")
    vw, vh = _integer(parts[0], "vw"), _integer(parts[1], "vh")
    if vw is None or vh is None or vw < 1 or vh < 1:
        raise ValueError("vw and vh must be positive integers")
    if len(parts) == 2:
        return Viewport(vw, vh)
    sx, sy, sw, sh = (_integer(part, name) for part, name in zip(parts[2:], "xywh", strict=True))
    if (sx is not None and sx < 0) or (sy is not None and sy < 0):
        raise ValueError("sx and sy must not be negative")
    if sw == 0 or sh == 0:
        raise ValueError("sw and sh must not be zero")
    return Viewport(vw, vh, sx, sy, sw, sh)


def parse_quality(value: str) -> int:
    """Parse ``quality`` (PS3.18 8.3.5.1.5): an integer 1..100. Raises
    `ValueError` with a short reason."""
    quality = _integer(value.strip(), "quality")
    if quality is None or not 1 <= quality <= 100:
        raise ValueError("quality must be an integer from 1 to 100")
    return quality


def _finite(text: str, name: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{name} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} is not finite")
    return number


def _integer(text: str, name: str) -> int | None:
    """An optional decimal integer; empty is None."""
    if not text:
        return None
    try:
        return int(text, 10)
    except ValueError:
        raise ValueError(f"{name} is not an integer") from None


# ---------------------------------------------------------------- pipeline


def render_frame(part10_data: bytes, frame_index: int, params: RenderParams) -> bytes:
    """Render frame `frame_index` (0-based) of a Part 10 instance as
    `params.media_type`.

    Raises `IndexError` for a frame that does not exist, `ValueError`
    subclasses (`PixelDataError`, `CodecError`, `DicomParseError`,
    `RenderError`) for pixels that cannot be rendered.
    """
    part10 = read_part10(part10_data)
    info = pixel_info(part10)
    pixels = decode_frame(frame_bytes(part10.data, info, frame_index), info)
    attrs = display_attributes(part10, info, frame_index)
    image = Image.fromarray(to_display(pixels, attrs, params))
    image = apply_viewport(image, params.viewport)
    return encode_image(image, params.media_type, params.quality)


def to_display(pixels: Pixels, attrs: DisplayAttributes, params: RenderParams) -> Bytes8:
    """Turn a decoded frame into 8-bit display values: (rows, columns) grey or
    (rows, columns, 3) RGB. Grey goes through PS3.3 C.11 (Modality LUT, VOI,
    MONOCHROME1 inverted as its Presentation LUT Shape INVERSE would); colour
    through PS3.3 C.7.6.3.1.2 (YBR_FULL to RGB) or the Palette Color LUTs."""
    photometric = attrs.photometric
    if photometric == "PALETTE COLOR":
        return _palette(_stored(pixels, attrs), attrs)
    if pixels.ndim == 2:  # MONOCHROME1/2, and grey under any other label
        grey = _to_uint8(_voi(_modality(_stored(pixels, attrs), attrs), attrs, params.window))
        return 255 - grey if photometric == "MONOCHROME1" else grey
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise RenderError(f"{photometric} frame of shape {pixels.shape}")
    full = _full_scale(attrs.bits_stored, pixels)
    if photometric == "RGB":
        return _to_uint8(_stored(pixels, attrs).astype(np.float64) * (_Y_MAX / full))
    if photometric == "YBR_FULL":
        return _to_uint8(_ybr_full_to_rgb(_stored(pixels, attrs), full) * (_Y_MAX / full))
    raise RenderError(f"cannot render Photometric Interpretation {photometric}")


def voi_window(values: Pixels, window: Window) -> Floats:
    """Apply a window to 0..255 (PS3.3 C.11.2.1.2.1 linear, C.11.2.1.3.2
    linear-exact, C.11.2.1.3.1 sigmoid), as floats before rounding."""
    center, width, function = window
    x = np.asarray(values, dtype=np.float64)
    if function == "sigmoid":
        with np.errstate(over="ignore"):
            return _Y_MAX / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "linear-exact":
        y = ((x - center) / width + 0.5) * _Y_MAX
        low, high = center - width / 2, center + width / 2
    elif function == "linear":
        y = ((x - (center - 0.5)) / (width - 1) + 0.5) * _Y_MAX if width > 1 else x
        low = center - 0.5 - (width - 1) / 2
        high = center - 0.5 + (width - 1) / 2
    else:
        raise RenderError(f"unknown window function {function}")
    # "if x <= low then y = ymin; else if x > high then y = ymax"
    return np.where(x <= low, 0.0, np.where(x > high, _Y_MAX, y))


def apply_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Crop to (sx, sy, sw, sh), flipping for a negative sw or sh, then scale
    to fit vw x vh with the aspect ratio kept (PS3.18 8.3.5.1.3). Missing sx,
    sy default to 0, missing sw, sh to the rest of the image. Raises
    `RenderError` if the region holds no pixel."""
    if viewport is None:
        return image
    columns, rows = image.size
    x0, x1, flip_x = _span(viewport.sx, viewport.sw, columns)
    y0, y1, flip_y = _span(viewport.sy, viewport.sh, rows)
    if x1 <= x0 or y1 <= y0:
        raise RenderError("the viewport selects no pixels")
    if (x0, y0, x1, y1) != (0, 0, columns, rows):
        image = image.crop((x0, y0, x1, y1))
    if flip_x:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip_y:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    width, height = image.size
    scale = min(viewport.vw / width, viewport.vh / height)
    size = (
        max(1, min(viewport.vw, round(width * scale))),
        max(1, min(viewport.vh, round(height * scale))),
    )
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def encode_image(image: Image.Image, media_type: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode an L or RGB image as JPEG (with `quality`), PNG or GIF
    (PS3.18 8.7.4; GIF needs a palette, colour is quantized to 256 colours)."""
    out = io.BytesIO()
    if media_type == "image/jpeg":
        image.save(out, format="JPEG", quality=quality)
    elif media_type == "image/png":
        image.save(out, format="PNG", compress_level=3)
    elif media_type == "image/gif":
        if image.mode != "L":
            image = image.quantize(256)
        image.save(out, format="GIF")
    else:
        raise RenderError(f"cannot render as {media_type}")
    return out.getvalue()


def _span(start: int | None, length: int | None, size: int) -> tuple[int, int, bool]:
    """The source range [a, b) of one axis and whether it is flipped; a
    negative length extends from `start` towards 0 (PS3.18 8.3.5.1.3)."""
    begin = 0 if start is None else start
    if length is None:
        length = size - begin
    if length < 0:
        return max(0, begin + length), min(size, begin), True
    return max(0, begin), min(size, begin + length), False


def _stored(pixels: Pixels, attrs: DisplayAttributes) -> Pixels:
    """Drop the bits above Bits Stored of unsigned integer pixels (PS3.5
    8.1.1: they are not pixel data, old files keep overlays there)."""
    if pixels.dtype.kind == "u" and attrs.bits_stored < pixels.dtype.itemsize * 8:
        masked: Pixels = pixels & np.asarray((1 << attrs.bits_stored) - 1, dtype=pixels.dtype)
        return masked
    return pixels


def _modality(pixels: Pixels, attrs: DisplayAttributes) -> Floats:
    """PS3.3 C.11.1: the Modality LUT Sequence, else Rescale Slope/Intercept."""
    if attrs.modality_lut is not None and pixels.dtype.kind in "iub":
        return attrs.modality_lut.lookup(pixels)
    values = pixels.astype(np.float64)
    if attrs.rescale_slope != 1.0:
        values *= attrs.rescale_slope
    if attrs.rescale_intercept != 0.0:
        values += attrs.rescale_intercept
    return values


def _voi(values: Floats, attrs: DisplayAttributes, requested: Window | None) -> Floats:
    """PS3.3 C.11.2 to 0..255; see the module docstring for the order."""
    window = requested or attrs.window
    if window is not None:
        return voi_window(values, window)
    if attrs.voi_lut is not None:
        return attrs.voi_lut.lookup(values) * (_Y_MAX / attrs.voi_lut.output_max)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros_like(values)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (_Y_MAX / (high - low))


def _palette(pixels: Pixels, attrs: DisplayAttributes) -> Bytes8:
    """PS3.3 C.7.6.3.1.5: each stored value indexes the three Palette Color
    LUTs; entries are scaled from their bit depth to 8 bits."""
    if attrs.palette is None or pixels.ndim != 2:
        raise RenderError("PALETTE COLOR without usable Palette Color Lookup Tables")
    channels = [lut.lookup(pixels) * (_Y_MAX / lut.output_max) for lut in attrs.palette]
    return _to_uint8(np.stack(channels, axis=-1))


def _ybr_full_to_rgb(pixels: Pixels, full: float) -> Floats:
    """YBR_FULL to RGB (PS3.3 C.7.6.3.1.2, the ITU-R BT.601 full range
    equations), with the chroma offset of half the sample range."""
    ybr = pixels.astype(np.float64)
    y = ybr[..., 0]
    cb = ybr[..., 1] - (full + 1) / 2
    cr = ybr[..., 2] - (full + 1) / 2
    rgb = np.empty_like(ybr)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    return np.clip(rgb, 0.0, full)


def _full_scale(bits_stored: int, pixels: Pixels) -> float:
    """The largest value of a colour sample: 2^Bits Stored - 1 for integers,
    1.0 for floating point samples."""
    if pixels.dtype.kind == "f":
        return 1.0
    bits = min(bits_stored, pixels.dtype.itemsize * 8) or 8
    return float(2**bits - 1)


def _to_uint8(values: Floats) -> Bytes8:
    """Round half up and clip to 0..255; NaN becomes 0."""
    out = np.nan_to_num(np.floor(values + 0.5), nan=0.0, posinf=_Y_MAX, neginf=0.0)
    clipped: Floats = np.clip(out, 0.0, _Y_MAX)
    return clipped.astype(np.uint8)


# ---------------------------------------------------------------- attributes

_WANTED_GROUP: Final = 0x0028
_PER_FRAME_GROUPS: Final = 0x52009230
_SHARED_GROUPS: Final = 0x52009229
_FRAME_VOI_LUT: Final = "00289132"
_PIXEL_VALUE_TRANSFORMATION: Final = "00289145"
_WINDOW_CENTER: Final = "00281050"
_WINDOW_WIDTH: Final = "00281051"
_VOI_LUT_FUNCTION: Final = "00281056"
_RESCALE_INTERCEPT: Final = "00281052"
_RESCALE_SLOPE: Final = "00281053"
_MODALITY_LUT_SEQUENCE: Final = "00283000"
_VOI_LUT_SEQUENCE: Final = "00283010"
_LUT_DESCRIPTOR: Final = "00283002"
_LUT_DATA: Final = "00283006"
_PALETTE: Final = (
    ("00281101", "00281201", "00281221"),  # Red descriptor, data, segmented data
    ("00281102", "00281202", "00281222"),  # Green
    ("00281103", "00281203", "00281223"),  # Blue
)


def display_attributes(part10: Part10, info: PixelInfo, frame_index: int = 0) -> DisplayAttributes:
    """Read the rendering attributes of frame `frame_index` of `part10`.

    Group 0028 at the top level, and for an enhanced multi-frame the Pixel
    Value Transformation and Frame VOI LUT functional groups (PS3.3
    C.7.6.16.2.9, C.7.6.16.2.10), per-frame first, then shared.
    """
    elements = walk_dataset(
        part10.data,
        part10.offset,
        explicit_vr=part10.explicit_vr,
        little_endian=part10.little_endian,
        stop_before=0x7FE00000,
    )
    wanted = [
        element
        for element in elements
        if element[0] >> 16 == _WANTED_GROUP or element[0] in (_PER_FRAME_GROUPS, _SHARED_GROUPS)
    ]
    dataset = elements_to_json(part10.data, wanted, little_endian=part10.little_endian)
    sources = [dataset]
    for key, index in ((f"{_PER_FRAME_GROUPS:08X}", frame_index), (f"{_SHARED_GROUPS:08X}", 0)):
        items = dataset.get(key, {}).get("Value", [])
        if 0 <= index < len(items) and isinstance(items[index], dict):
            item = items[index]
            for macro in (_PIXEL_VALUE_TRANSFORMATION, _FRAME_VOI_LUT):
                nested = item.get(macro, {}).get("Value", [])
                if nested and isinstance(nested[0], dict):
                    # per-frame, then shared, then the top level
                    sources.insert(len(sources) - 1, nested[0])

    def first(tag: str) -> Any:
        for source in sources:
            values = source.get(tag, {}).get("Value")
            if values:
                return values[0]
        return None

    slope, intercept = first(_RESCALE_SLOPE), first(_RESCALE_INTERCEPT)
    window: Window | None = None
    center, width = first(_WINDOW_CENTER), first(_WINDOW_WIDTH)
    function = str(first(_VOI_LUT_FUNCTION) or "LINEAR").strip().lower().replace("_", "-")
    if function not in WINDOW_FUNCTIONS:
        function = "linear"
    if (
        isinstance(center, int | float)
        and isinstance(width, int | float)
        and (width >= 1 if function == "linear" else width > 0)
    ):
        window = (float(center), float(width), function)
    palette = tuple(
        _lut(dataset.get(d), dataset.get(v))
        or _lut(dataset.get(d), dataset.get(segmented), segmented=True)
        for d, v, segmented in _PALETTE
    )
    return DisplayAttributes(
        photometric=decoded_photometric(info),
        bits_stored=info.bits_stored,
        pixel_representation=info.pixel_representation,
        rescale_slope=float(slope) if isinstance(slope, int | float) else 1.0,
        rescale_intercept=float(intercept) if isinstance(intercept, int | float) else 0.0,
        modality_lut=_lut_item(dataset.get(_MODALITY_LUT_SEQUENCE)),
        window=window,
        voi_lut=_lut_item(dataset.get(_VOI_LUT_SEQUENCE)),
        palette=(palette[0], palette[1], palette[2]) if all(palette) else None,  # type: ignore[arg-type]
    )


def _lut_item(sequence: dict[str, Any] | None) -> Lut | None:
    """The LUT of the first item of a Modality or VOI LUT Sequence."""
    items = (sequence or {}).get("Value") or []
    if not items or not isinstance(items[0], dict):
        return None
    return _lut(items[0].get(_LUT_DESCRIPTOR), items[0].get(_LUT_DATA))


def _lut(
    descriptor: dict[str, Any] | None, data: dict[str, Any] | None, *, segmented: bool = False
) -> Lut | None:
    """A LUT from its descriptor (entries, first mapped, bits; 0 entries is
    65536, PS3.3 C.11.1.1.1) and its data: US values, or OW bytes holding 8
    or 16 bit entries (PS3.3 C.7.6.3.1.6), or Segmented Palette Color LUT
    Data (PS3.3 C.7.9.2) when `segmented`."""
    values = (descriptor or {}).get("Value") or []
    if len(values) != 3 or data is None or not all(isinstance(v, int) for v in values):
        return None
    entries, first_mapped, bits = values
    entries = entries or 65536
    if not 1 <= bits <= 16:
        return None
    if "Value" in data:
        table = np.asarray([v or 0 for v in data["Value"]], dtype=np.uint16)
    elif "InlineBinary" in data:
        raw = base64.b64decode(data["InlineBinary"])
        if segmented:
            words = np.frombuffer(raw, dtype=np.uint8 if bits <= 8 else "<u2")
            expanded = _expand_segments([int(w) for w in words], 1 << 20)
            table = np.asarray(expanded, dtype=np.uint16)
        elif len(raw) == entries and bits <= 8:
            table = np.frombuffer(raw, dtype=np.uint8)
        else:
            table = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2")
    else:
        return None
    if not table.size:
        return None
    return Lut(first_mapped=first_mapped, bits=bits, data=table[:entries])


def _expand_segments(words: list[int], limit: int, count: int | None = None) -> list[int]:
    """Expand Segmented Palette Color LUT Data (PS3.3 C.7.9.2): discrete
    (opcode 0), linear (1, from the previous entry) and indirect (2, copies
    `n` segments found at a 32-bit word offset) segments. `limit` bounds the
    output so that malformed indirect segments cannot loop forever."""
    out: list[int] = []
    offset = segments = 0
    while offset + 1 < len(words) and (count is None or segments < count):
        opcode, length = words[offset], words[offset + 1]
        offset += 2
        segments += 1
        if opcode == 0:
            out.extend(words[offset : offset + length])
            offset += length
        elif opcode == 1 and out and length and offset < len(words):
            y0, y1 = out[-1], words[offset]
            offset += 1
            step = (y1 - y0) / length
            out.extend(int(v) for v in np.rint(np.linspace(y0 + step, y1, length)))
        elif opcode == 2 and offset + 1 < len(words) and limit > len(out):
            start = words[offset] | words[offset + 1] << 16
            offset += 2
            if start >= offset - 4:  # only backwards references can terminate
                raise RenderError("indirect segment does not point backwards")
            out.extend(_expand_segments(words[start:], limit - len(out), length))
        else:
            raise RenderError(f"bad segment opcode {opcode} in Segmented Palette Color LUT")
        if len(out) > limit:
            raise RenderError("Segmented Palette Color LUT expands too far")
    return out
