"""Decode one frame to a numpy array, and encode an array to one frame.

Why: WADO-RS must hand a frame to a client in a transfer syntax it asked for
(PS3.18 8.7.3.5), and rendering needs pixel values. Frames arrive as
`frames.frame_bytes` cuts them; everything here works on a single frame so
that a worker pool can spread the frames of a multi-frame instance.

Libraries (all permissively licensed; the GPL pylibjpeg-libjpeg is never
used). imagecodecs 2026.3.6 bundles libjpeg-turbo 3.1 (8/12-bit DCT and 2-16
bit lossless), CharLS 2.4, OpenJPEG 2.5 and OpenJPH 0.26; its availability
flags (`imagecodecs.JPEG8.available`, `.JPEGLS`, `.JPEG2K`, `.HTJ2K`,
`.LJPEG`, `.JPEGSOF3`) are all true in this build and are checked at import
time (`DECODERS`, `ENCODERS` list what is usable):

=========================  =====================================  ==========================
Transfer syntax            Decode                                 Encode
=========================  =====================================  ==========================
native, .1.2.1.98          numpy                                  numpy (Explicit VR LE)
JPEG .50 / .51             imagecodecs jpeg8 (libjpeg-turbo)      .50 only, 8-bit unsigned
JPEG lossless .57 / .70    jpeg8, else ljpeg, else jpegsof3       no
JPEG-LS .80 / .81          imagecodecs jpegls (CharLS)            .80 (lossless)
JPEG 2000 .90 / .91        imagecodecs jpeg2k (OpenJPEG)          .90 (reversible 5-3)
HTJ2K .201 / .202 / .203   imagecodecs htj2k (OpenJPH), else      .201 (reversible)
                           jpeg2k (OpenJPEG reads HT code-blocks)
RLE .5                     pylibjpeg-rle                          pylibjpeg-rle
=========================  =====================================  ==========================

Values (PS3.5 8.1.1, 8.2): arrays are (rows, columns) or (rows, columns,
samples), colour always sample-interleaved, with the dtype of the stored
pixels (`pixel_dtype`: Bits Allocated wide, signed if Pixel Representation is
1). A codestream of unsigned samples carrying signed pixels (JPEG, JPEG-LS,
RLE, and J2K written by some encoders) is read as two's complement in Bits
Stored bits. Colour comes out as `decoded_photometric` says: lossy JPEG
YBR_FULL(_422) and JPEG 2000 YBR_RCT/YBR_ICT as RGB (the codec undoes its
colour transform), native YBR_FULL_422 upsampled to YBR_FULL; everything else
as stored.

Encoding first reduces values to Bits Stored (PS3.5 8.1.1: the other bits are
not pixel data). No multi-component transform is applied (Photometric
Interpretation stays RGB, PS3.5 8.2.4); JPEG Baseline writes YCbCr 4:2:2, so
the frame becomes YBR_FULL_422 (PS3.5 8.2.1). The JPEG-LS and HTJ2K encoders
exposed by imagecodecs take the precision from the array's width (8 or 16),
not from Bits Stored; the decoded values are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeAlias

import imagecodecs
import numpy as np
import rle.utils
from numpy.typing import NDArray

from gateway.dicom.frames import ENCAPSULATED_UNCOMPRESSED, NATIVE_TRANSFER_SYNTAXES, PixelInfo

__all__ = [
    "DECODERS",
    "ENCODERS",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "HTJ2K_LOSSLESS",
    "J2K_LOSSLESS",
    "JPEG_BASELINE",
    "JPEG_LS_LOSSLESS",
    "JPEG_QUALITY",
    "LOSSY_TRANSFER_SYNTAXES",
    "RLE_LOSSLESS",
    "CodecError",
    "can_encode",
    "decode_frame",
    "decoded_photometric",
    "encode_frame",
    "encoded_photometric",
    "pixel_dtype",
]

Pixels: TypeAlias = NDArray[Any]
Encoded: TypeAlias = bytes | bytearray


class CodecError(ValueError):
    """A frame cannot be decoded or encoded (unsupported transfer syntax or
    pixel layout, or the codec failed on the data)."""


EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED: Final = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS: Final = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1: Final = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
J2K: Final = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
HTJ2K: Final = "1.2.840.10008.1.2.4.203"

#: Transfer syntaxes that may have lost information (PS3.5 A.4, Table A-1 of
#: PS3.6 names them "lossy"; J2K .91 and HTJ2K .203 may also be reversible,
#: but nothing in the dataset promises it).
LOSSY_TRANSFER_SYNTAXES: Final = frozenset(
    {
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LS_NEAR_LOSSLESS,
        J2K,
        HTJ2K,
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
    }
)

#: Quality of JPEG Baseline encoding (libjpeg scale 1-100).
JPEG_QUALITY: Final = 90

_JPEG_LOSSY: Final = frozenset({JPEG_BASELINE, JPEG_EXTENDED})
_JPEG_LOSSLESS: Final = frozenset({JPEG_LOSSLESS, JPEG_LOSSLESS_SV1})
_J2K_FAMILY: Final = frozenset({J2K_LOSSLESS, J2K})
_HTJ2K_FAMILY: Final = frozenset({HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K})
_JLS_FAMILY: Final = frozenset({JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS})
_FLOAT_PIXEL_TAGS: Final = {0x7FE00008: np.float32, 0x7FE00009: np.float64}


def _available(name: str) -> bool:
    codec = getattr(imagecodecs, name, None)
    return bool(getattr(codec, "available", False))


_HAS_JPEG8: Final = _available("JPEG8")
_HAS_LJPEG: Final = _available("LJPEG")
_HAS_JPEGSOF3: Final = _available("JPEGSOF3")
_HAS_JPEGLS: Final = _available("JPEGLS")
_HAS_JPEG2K: Final = _available("JPEG2K")
_HAS_HTJ2K: Final = _available("HTJ2K")


def pixel_dtype(info: PixelInfo) -> np.dtype[Any]:
    """The little endian dtype of one stored sample (PS3.5 8.1.1): Bits
    Allocated wide (1 -> uint8 of 0/1), signed when Pixel Representation is 1;
    float32/float64 for Float and Double Float Pixel Data."""
    floating = _FLOAT_PIXEL_TAGS.get(info.pixel_data_tag)
    if floating is not None:
        return np.dtype(floating).newbyteorder("<")
    size = max(1, (info.bits_allocated + 7) // 8)
    if size not in (1, 2, 4, 8):
        raise CodecError(f"Bits Allocated {info.bits_allocated} has no numpy type")
    kind = "i" if info.pixel_representation == 1 and info.bits_allocated > 1 else "u"
    return np.dtype(f"<{kind}{size}")


def decoded_photometric(info: PixelInfo) -> str:
    """The Photometric Interpretation of what `decode_frame` returns for
    `info` (see the module docstring)."""
    photometric = info.photometric_interpretation
    ts = info.transfer_syntax_uid
    if info.samples_per_pixel != 3:
        return photometric
    if ts in _JPEG_LOSSY and photometric in ("YBR_FULL", "YBR_FULL_422"):
        return "RGB"  # PS3.5 8.2.1: libjpeg undoes the YCbCr transform
    if (ts in _J2K_FAMILY or ts in _HTJ2K_FAMILY) and photometric in ("YBR_RCT", "YBR_ICT"):
        return "RGB"  # PS3.5 8.2.4: the inverse MCT is part of decoding
    if _is_native(info) and photometric == "YBR_FULL_422":
        return "YBR_FULL"  # chroma upsampled (PS3.3 C.7.6.3.1.2)
    return photometric


def decode_frame(frame: bytes | memoryview, info: PixelInfo, *, threads: int = 1) -> Pixels:
    """Decode one frame (as `frames.frame_bytes` returns it) to an array.

    `threads` is passed to OpenJPEG (J2K); the default of one leaves
    parallelism to the worker pool. The result may be a read-only view of
    `frame` for native data. Raises `CodecError`.
    """
    if _is_native(info):
        return _decode_native(frame, info)
    decoder = _DECODER_FUNCTIONS.get(info.transfer_syntax_uid)
    if decoder is None:
        raise CodecError(f"cannot decode transfer syntax {info.transfer_syntax_uid}")
    try:
        decoded = decoder(bytes(frame), info, threads)
    except CodecError:
        raise
    except Exception as exc:  # the codecs raise their own RuntimeError/ValueError types
        raise CodecError(f"decoding {info.transfer_syntax_uid} failed: {exc}") from exc
    return _conform(decoded, info)


def can_encode(
    transfer_syntax: str,
    *,
    bits_allocated: int,
    bits_stored: int,
    signed: bool,
    samples_per_pixel: int,
    photometric: str,
    floating: bool = False,
) -> bool:
    """Whether `encode_frame` can write such pixels in `transfer_syntax`
    (the pixels as `decode_frame` returns them, described by the decoded
    photometric)."""
    if transfer_syntax not in ENCODERS:
        return False
    if transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN:
        return bits_allocated != 1  # bit-packing is left to native-to-native copies
    if floating or samples_per_pixel not in (1, 3) or bits_allocated not in (8, 16, 32):
        return False
    if transfer_syntax == RLE_LOSSLESS:
        return samples_per_pixel * bits_allocated // 8 <= 15  # PS3.5 G.2: 15 segments
    if transfer_syntax == JPEG_BASELINE:
        # PS3.5 8.2.1 / ISO 10918-1 process 1: 8-bit unsigned samples only; a
        # lossy palette index or YBR_FULL_422 re-subsampling makes no sense.
        return (
            bits_allocated == 8
            and bits_stored <= 8
            and not signed
            and photometric in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL")
        )
    # J2K, HTJ2K and JPEG-LS: up to 16 bits per sample in these encoders.
    return bits_stored <= 16 and bits_allocated <= 16


def encode_frame(
    pixels: Pixels,
    transfer_syntax: str,
    *,
    bits_stored: int,
    photometric: str,
    threads: int = 1,
) -> bytes:
    """Encode one frame (rows, columns[, samples]) in `transfer_syntax`.

    The dtype says Bits Allocated and signedness; `photometric` is that of
    `pixels` (`encoded_photometric` gives the one to record). For Explicit VR
    Little Endian the result is the native little endian frame, interleaved.
    Raises `CodecError` if `can_encode` would say no, or the codec fails.
    """
    if pixels.ndim not in (2, 3) or pixels.dtype.kind not in "ui":
        raise CodecError(f"cannot encode a {pixels.dtype} array of shape {pixels.shape}")
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    ok = can_encode(
        transfer_syntax,
        bits_allocated=pixels.dtype.itemsize * 8,
        bits_stored=bits_stored,
        signed=pixels.dtype.kind == "i",
        samples_per_pixel=samples,
        photometric=photometric,
    )
    if not ok:
        raise CodecError(
            f"cannot encode {pixels.dtype} {photometric} pixels with {bits_stored} bits "
            f"stored in {transfer_syntax}"
        )
    if transfer_syntax != EXPLICIT_VR_LITTLE_ENDIAN:
        pixels = _stored_bits(pixels, bits_stored)
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    try:
        return bytes(_ENCODER_FUNCTIONS[transfer_syntax](pixels, bits_stored, photometric, threads))
    except Exception as exc:
        raise CodecError(f"encoding {transfer_syntax} failed: {exc}") from exc


def encoded_photometric(transfer_syntax: str, photometric: str) -> str:
    """The Photometric Interpretation of a frame `encode_frame` wrote from
    pixels in `photometric`: JPEG Baseline colour is YCbCr 4:2:2 (PS3.5
    8.2.1); every other target keeps the pixels' own."""
    if transfer_syntax == JPEG_BASELINE and photometric in ("RGB", "YBR_FULL"):
        return "YBR_FULL_422"
    return photometric


# -- decoding ---------------------------------------------------------------


def _is_native(info: PixelInfo) -> bool:
    return not info.encapsulated or info.transfer_syntax_uid == ENCAPSULATED_UNCOMPRESSED


def _decode_native(frame: bytes | memoryview, info: PixelInfo) -> Pixels:
    """Native pixels (PS3.5 8.1.1), already little endian (`frame_bytes`)."""
    rows, columns, samples = info.rows, info.columns, info.samples_per_pixel
    count = rows * columns * samples
    if info.bits_allocated == 1:
        packed = np.frombuffer(frame, dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little", count=count)
        return bits.reshape(_shape(rows, columns, samples))
    dtype = pixel_dtype(info)
    if samples == 3 and info.photometric_interpretation == "YBR_FULL_422":
        return _upsample_422(np.frombuffer(frame, dtype=dtype, count=rows * columns * 2), info)
    if len(frame) < count * dtype.itemsize:
        raise CodecError(f"native frame of {len(frame)} bytes is too short")
    flat = np.frombuffer(frame, dtype=dtype, count=count)
    if samples > 1 and info.planar_configuration == 1:  # PS3.3 C.7.6.3.1.3: colour-by-plane
        pixels = flat.reshape(samples, rows, columns).transpose(1, 2, 0)
    else:
        pixels = flat.reshape(_shape(rows, columns, samples))
    if dtype.kind == "i" and info.bits_stored < dtype.itemsize * 8:
        pixels = _sign_extend(pixels, info.bits_stored)
    return pixels


def _upsample_422(flat: Pixels, info: PixelInfo) -> Pixels:
    """Native YBR_FULL_422 (PS3.3 C.7.6.3.1.2: Y1 Y2 CB CR for each pair of
    pixels) to full-resolution YBR_FULL."""
    rows, columns = info.rows, info.columns
    if columns % 2:
        raise CodecError("YBR_FULL_422 needs an even number of columns")
    quads = flat.reshape(rows, columns // 2, 4)
    out = np.empty((rows, columns, 3), dtype=flat.dtype)
    out[:, :, 0] = quads[:, :, :2].reshape(rows, columns)
    out[:, :, 1] = np.repeat(quads[:, :, 2], 2, axis=1)
    out[:, :, 2] = np.repeat(quads[:, :, 3], 2, axis=1)
    return out


def _decode_jpeg(frame: bytes, info: PixelInfo, threads: int) -> Pixels:
    """JPEG baseline/extended (PS3.5 8.2.1). Colour labelled RGB is decoded
    without a colour transform unless the stream says it is JFIF (which is
    YCbCr by definition); YBR is converted to RGB by libjpeg."""
    rgb = info.samples_per_pixel == 3 and info.photometric_interpretation == "RGB"
    if rgb and not _has_jfif(frame):
        return imagecodecs.jpeg8_decode(frame, colorspace="RGB", outcolorspace="RGB")
    return imagecodecs.jpeg8_decode(frame)


def _decode_jpeg_lossless(frame: bytes, info: PixelInfo, threads: int) -> Pixels:
    """JPEG lossless, process 14 (PS3.5 8.2.1): no colour transform is ever
    applied, so colour comes out as stored. libjpeg-turbo first, then the two
    lossless-only decoders for streams it refuses."""
    errors: list[str] = []
    if _HAS_JPEG8:
        try:
            if info.samples_per_pixel == 3:
                return imagecodecs.jpeg8_decode(frame, colorspace="RGB", outcolorspace="RGB")
            return imagecodecs.jpeg8_decode(frame)
        except Exception as exc:  # try the next decoder
            errors.append(f"jpeg8: {exc}")
    for name, available in (("ljpeg", _HAS_LJPEG), ("jpegsof3", _HAS_JPEGSOF3)):
        if available:
            try:
                decoded: Pixels = getattr(imagecodecs, f"{name}_decode")(frame)
            except Exception as exc:  # try the next decoder
                errors.append(f"{name}: {exc}")
                continue
            if decoded.size:  # ljpeg returns an empty array for non-lossless streams
                return decoded
            errors.append(f"{name}: empty result")
    raise CodecError("; ".join(errors) or "no JPEG lossless decoder")


def _decode_jpegls(frame: bytes, info: PixelInfo, threads: int) -> Pixels:
    return imagecodecs.jpegls_decode(frame)


def _decode_j2k(frame: bytes, info: PixelInfo, threads: int) -> Pixels:
    return imagecodecs.jpeg2k_decode(frame, planar=False, numthreads=threads)


def _decode_htj2k(frame: bytes, info: PixelInfo, threads: int) -> Pixels:
    """HTJ2K with OpenJPH; OpenJPEG when OpenJPH refuses (an HTJ2K transfer
    syntax may carry code-blocks OpenJPH does not read)."""
    if _HAS_HTJ2K:
        try:
            return imagecodecs.htj2k_decode(frame, planar=False)
        except Exception:
            if not _HAS_JPEG2K:
                raise
    return imagecodecs.jpeg2k_decode(frame, planar=False, numthreads=threads)


def _decode_rle(frame: bytes, info: PixelInfo, threads: int) -> Pixels:
    """RLE Lossless (PS3.5 Annex G): segments are most significant byte first
    per sample, samples one after another, so the result is colour-by-plane."""
    rows, columns, samples = info.rows, info.columns, info.samples_per_pixel
    dtype = pixel_dtype(info)
    if info.bits_allocated == 1 or dtype.kind == "f":
        raise CodecError(f"RLE with Bits Allocated {info.bits_allocated} is not supported")
    raw = rle.utils.decode_pixel_data(
        frame, version=2, rows=rows, columns=columns, bits_allocated=info.bits_allocated
    )
    flat = np.frombuffer(raw, dtype=dtype)
    if flat.size != rows * columns * samples:
        raise CodecError(f"RLE frame decoded to {flat.size} samples")
    if samples == 1:
        return flat.reshape(rows, columns)
    return flat.reshape(samples, rows, columns).transpose(1, 2, 0)


def _conform(decoded: Pixels, info: PixelInfo) -> Pixels:
    """Check a codec's output against the Image Pixel attributes and give it
    the stored dtype; unsigned codestreams of signed pixels are two's
    complement in Bits Stored bits (PS3.5 8.2)."""
    expected = _shape(info.rows, info.columns, info.samples_per_pixel)
    if decoded.shape != expected:
        raise CodecError(f"decoded shape {decoded.shape}, the dataset says {expected}")
    dtype = pixel_dtype(info)
    if decoded.dtype == dtype:
        return decoded
    was_unsigned = decoded.dtype.kind == "u"
    pixels = decoded.astype(dtype)  # wraps: two's complement at the full width
    if dtype.kind == "i" and was_unsigned and info.bits_stored < dtype.itemsize * 8:
        pixels = _sign_extend(pixels, info.bits_stored)
    return pixels


def _sign_extend(pixels: Pixels, bits_stored: int) -> Pixels:
    """Two's complement in the low `bits_stored` bits to the full width."""
    shift = pixels.dtype.itemsize * 8 - bits_stored
    return (pixels << shift) >> shift  # arithmetic shift on a signed dtype


def _shape(rows: int, columns: int, samples: int) -> tuple[int, ...]:
    return (rows, columns) if samples == 1 else (rows, columns, samples)


def _has_jfif(frame: bytes) -> bool:
    """Whether the JPEG stream has a JFIF APP0 segment before its frame header."""
    pos, size = 2, len(frame)
    while pos + 4 <= size and frame[pos] == 0xFF:
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xDA:
            return False  # SOFn or SOS: the header is over
        length = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        if marker == 0xE0 and frame[pos + 4 : pos + 9] == b"JFIF\0":
            return True
        pos += 2 + length
    return False


_Decoder: TypeAlias = Callable[[bytes, PixelInfo, int], Pixels]
_DECODER_FUNCTIONS: Final[dict[str, _Decoder]] = {}
if _HAS_JPEG8:
    _DECODER_FUNCTIONS.update(dict.fromkeys(_JPEG_LOSSY, _decode_jpeg))
if _HAS_JPEG8 or _HAS_LJPEG or _HAS_JPEGSOF3:
    _DECODER_FUNCTIONS.update(dict.fromkeys(_JPEG_LOSSLESS, _decode_jpeg_lossless))
if _HAS_JPEGLS:
    _DECODER_FUNCTIONS.update(dict.fromkeys(_JLS_FAMILY, _decode_jpegls))
if _HAS_JPEG2K:
    _DECODER_FUNCTIONS.update(dict.fromkeys(_J2K_FAMILY, _decode_j2k))
if _HAS_HTJ2K or _HAS_JPEG2K:
    _DECODER_FUNCTIONS.update(dict.fromkeys(_HTJ2K_FAMILY, _decode_htj2k))
_DECODER_FUNCTIONS[RLE_LOSSLESS] = _decode_rle

#: Transfer syntaxes `decode_frame` reads (besides native ones).
DECODERS: Final = (
    frozenset(_DECODER_FUNCTIONS) | NATIVE_TRANSFER_SYNTAXES | {ENCAPSULATED_UNCOMPRESSED}
)


# -- encoding ---------------------------------------------------------------


def _stored_bits(pixels: Pixels, bits_stored: int) -> Pixels:
    """Keep only the Bits Stored bits (PS3.5 8.1.1): unsigned values masked,
    signed values sign-extended from bit Bits Stored - 1."""
    width = pixels.dtype.itemsize * 8
    if bits_stored >= width:
        return pixels
    if pixels.dtype.kind == "i":
        return _sign_extend(pixels, bits_stored)
    masked: Pixels = pixels & np.array((1 << bits_stored) - 1, dtype=pixels.dtype)
    return masked


def _unsigned_view(pixels: Pixels, bits_stored: int) -> Pixels:
    """Signed pixels as the unsigned two's complement codes of Bits Stored
    bits, for codecs without signed samples (JPEG-LS, RLE's byte planes)."""
    if pixels.dtype.kind != "i":
        return pixels
    unsigned = pixels.view(pixels.dtype.str.replace("i", "u"))
    return _stored_bits(unsigned, bits_stored)


def _encode_native(pixels: Pixels, bits_stored: int, photometric: str, threads: int) -> Encoded:
    return pixels.tobytes()


def _encode_rle(pixels: Pixels, bits_stored: int, photometric: str, threads: int) -> Encoded:
    rows, columns = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    encoded: Encoded = rle.utils.encode_pixel_data(
        pixels.tobytes(),
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        bits_allocated=pixels.dtype.itemsize * 8,
        byteorder="<",
    )
    return encoded


def _encode_j2k(pixels: Pixels, bits_stored: int, photometric: str, threads: int) -> Encoded:
    # PS3.5 A.4.4: a bare codestream (no JP2 box); reversible 5-3 wavelet.
    encoded: Encoded = imagecodecs.jpeg2k_encode(
        pixels,
        level=0,
        codecformat="J2K",
        reversible=True,
        bitspersample=bits_stored,
        mct=False,
        numthreads=threads,
    )
    return encoded


def _encode_htj2k(pixels: Pixels, bits_stored: int, photometric: str, threads: int) -> Encoded:
    encoded: Encoded = imagecodecs.htj2k_encode(pixels, reversible=True, rgb=False)
    return encoded


def _encode_jpegls(pixels: Pixels, bits_stored: int, photometric: str, threads: int) -> Encoded:
    encoded: Encoded = imagecodecs.jpegls_encode(_unsigned_view(pixels, bits_stored), level=0)
    return encoded


def _encode_jpeg_baseline(
    pixels: Pixels, bits_stored: int, photometric: str, threads: int
) -> Encoded:
    if pixels.ndim == 2:
        encoded: Encoded = imagecodecs.jpeg8_encode(pixels, level=JPEG_QUALITY)
        return encoded
    colorspace = "YCbCr" if photometric == "YBR_FULL" else "RGB"
    encoded = imagecodecs.jpeg8_encode(
        pixels,
        level=JPEG_QUALITY,
        colorspace=colorspace,
        outcolorspace="YCbCr",
        subsampling="422",
    )
    return encoded


_Encoder: TypeAlias = Callable[[Pixels, int, str, int], Encoded]
_ENCODER_FUNCTIONS: Final[dict[str, _Encoder]] = {
    EXPLICIT_VR_LITTLE_ENDIAN: _encode_native,
    RLE_LOSSLESS: _encode_rle,
}
if _HAS_JPEG2K:
    _ENCODER_FUNCTIONS[J2K_LOSSLESS] = _encode_j2k
if _HAS_HTJ2K:
    _ENCODER_FUNCTIONS[HTJ2K_LOSSLESS] = _encode_htj2k
if _HAS_JPEGLS:
    _ENCODER_FUNCTIONS[JPEG_LS_LOSSLESS] = _encode_jpegls
if _HAS_JPEG8:
    _ENCODER_FUNCTIONS[JPEG_BASELINE] = _encode_jpeg_baseline

#: Transfer syntaxes `encode_frame` writes.
ENCODERS: Final = frozenset(_ENCODER_FUNCTIONS)
