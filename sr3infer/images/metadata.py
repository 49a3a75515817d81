"""What an image file carries besides pixels (ICC, EXIF, DPI, XMP, PNG text), carried to the output:
EXIF orientation 1 and the output's sizes, DPI times the scale, ICC and XMP unchanged. What a format
cannot hold is left out, with one warning per file."""

from __future__ import annotations

import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, PngImagePlugin

__all__ = ["ImageMetadata", "metadata_of"]

_ORIENTATION, _IMAGE_WIDTH, _IMAGE_LENGTH, _X_RESOLUTION, _Y_RESOLUTION = 0x0112, 0x0100, 0x0101, 0x011A, 0x011B
_EXIF_IFD, _PIXEL_X, _PIXEL_Y, _XMP = 0x8769, 0xA002, 0xA003, 700
_PNG_XMP_KEY = "XML:com.adobe.xmp"
_FORMAT_PARTS = {  # what each output format can hold
    "PNG": {"icc", "exif", "dpi", "text", "xmp"}, "JPEG": {"icc", "exif", "dpi", "xmp"},
    "WEBP": {"icc", "exif", "xmp"}, "TIFF": {"icc", "exif", "dpi", "xmp"}, "BMP": {"dpi"},
}
# The DPI each format's field holds: PNG's pHYs and BMP's header store whole pixels per metre below 2**31, JPEG's
# JFIF density whole dots per inch in 16 bits, TIFF (and EXIF's XResolution / YResolution) a rational of 32-bit
# unsigned integers.
_RATIONAL_RANGE = (1 / (2**32 - 1), 2**32 - 1)
_DPI_RANGE = {"PNG": (0.0254, (2**31 - 1) * 0.0254), "BMP": (0.0254, (2**31 - 1) * 0.0254), "JPEG": (1, 2**16 - 1),
              "TIFF": _RATIONAL_RANGE}
_JPEG_SEGMENT = 65533  # the payload of one JPEG marker segment: EXIF (APP1) must fit in one
_JPEG_LIMITS = {"exif": _JPEG_SEGMENT, "xmp": _JPEG_SEGMENT - 29,  # after "http://ns.adobe.com/xap/1.0/\0"
                "icc": 255 * (_JPEG_SEGMENT - 14)}  # at most 255 APP2 segments, each after a 14-byte header


@dataclass(frozen=True)
class ImageMetadata:
    """The ICC profile, EXIF, DPI, XMP and PNG text of an upright image read at `size` (w, h)."""

    size: tuple[int, int]
    icc_profile: bytes | None = None
    exif: bytes | None = None                 # with the orientation tag removed: the pixels were turned upright
    dpi: tuple[float, float] | None = None
    text: dict[str, str] = field(default_factory=dict)   # PNG tEXt / zTXt / iTXt chunks
    xmp: bytes | None = None                  # the XMP packet (JPEG APP1, PNG iTXt, WebP chunk, TIFF tag 700)

    def __bool__(self) -> bool:
        return bool(self.icc_profile or self.exif or self.dpi or self.text or self.xmp)


def metadata_of(image: Image.Image) -> ImageMetadata:
    """The metadata of an opened (for PNG text after the pixels, loaded) PIL image."""
    info = image.info
    dpi = info.get("dpi")
    if not (isinstance(dpi, tuple) and len(dpi) == 2 and all(_positive(d) for d in dpi)):
        dpi = None
    text: dict[str, str] = {}
    if image.format == "PNG":  # a chunk keyed like one of Pillow's own info keys ("transparency") is in .text only
        chunks = getattr(image, "text", None)
        merged = {**(chunks if isinstance(chunks, dict) else {}), **{k: v for k, v in info.items() if isinstance(v, str)}}
        text = {k: str(v) for k, v in merged.items() if isinstance(v, str)}
    return ImageMetadata(size=image.size, icc_profile=_bytes(info.get("icc_profile")), exif=_bytes(info.get("exif")),
                         dpi=(float(dpi[0]), float(dpi[1])) if dpi else None, text=text, xmp=_bytes(info.get("xmp")))


def save_options(fmt: str, metadata: ImageMetadata | None, size: tuple[int, int], *, gray: bool = False,
                 strip: bool = False, quality: int = 95, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """PIL `Image.save` keyword arguments in `fmt` for an output of `size` (width, height); an ICC
    profile of another colour space is left out, and `strip` writes none at all."""
    options: dict[str, Any] = {"quality": check_quality(quality)} if fmt in ("JPEG", "WEBP") else {}
    if strip and fmt in ("PNG", "TIFF"):
        options["icc_profile"] = None
    if strip or not metadata:
        return options
    parts = _FORMAT_PARTS.get(fmt, set())
    dropped: list[str] = []
    space = b"GRAY" if gray else b"RGB "
    if "icc" in parts and metadata.icc_profile and metadata.icc_profile[16:20] == space:
        if _fits_jpeg(fmt, "icc", metadata.icc_profile, "the ICC profile", dropped):
            options["icc_profile"] = metadata.icc_profile
    exif = output_exif(metadata, size, dropped) if "exif" in parts else None
    if exif is not None and _fits_jpeg(fmt, "exif", exif, "the EXIF block", dropped):
        options["exif"] = exif
    dpi = output_dpi(metadata, size)
    if "dpi" in parts and dpi is not None:
        low, high = _DPI_RANGE[fmt]
        if all(low <= d <= high for d in dpi):
            options["dpi"] = dpi
        else:
            dropped.append(f"the DPI ({dpi[0]:g} x {dpi[1]:g}; {fmt} holds {low:g} to {high:g} dpi)")
    text = dict(metadata.text) if "text" in parts else {}
    if metadata.xmp and "xmp" not in parts:
        dropped.append(f"the XMP packet ({fmt} has no place for it)")
    elif metadata.xmp and fmt == "PNG":
        text.setdefault(_PNG_XMP_KEY, metadata.xmp.decode("utf-8", "replace"))  # a PNG's own XMP is in its text
    elif metadata.xmp and fmt == "TIFF":
        options.setdefault("exif", Image.Exif())[_XMP] = metadata.xmp  # Pillow writes TIFF tags from the EXIF
    elif metadata.xmp and _fits_jpeg(fmt, "xmp", metadata.xmp, "the XMP packet", dropped):
        options["xmp"] = metadata.xmp
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            (info.add_text if value.isascii() and key != _PNG_XMP_KEY else info.add_itxt)(key, value)
        options["pnginfo"] = info
    if dropped:
        where = f"{str(path)!r} is" if path is not None else "The output is"
        warnings.warn(f"{where} written without {'; '.join(dropped)}.", stacklevel=3)
    return options


def _fits_jpeg(fmt: str, part: str, data: bytes | Image.Exif, name: str, dropped: list[str]) -> bool:
    """Whether `data` fits where a JPEG holds `part`; if not, say why in `dropped`."""
    if fmt != "JPEG":
        return True
    data = data.tobytes() if isinstance(data, Image.Exif) else data
    if len(data) <= _JPEG_LIMITS[part]:
        return True
    dropped.append(f"{name} ({len(data):,} bytes; a JPEG holds at most {_JPEG_LIMITS[part]:,})")
    return False


def check_quality(quality: Any) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100 (JPEG/WebP), got {quality!r}.")
    return quality


def output_dpi(metadata: ImageMetadata, size: tuple[int, int]) -> tuple[float, float] | None:
    """The input's DPI times each axis's scale factor, so the printed size stays the same."""
    if metadata.dpi is None:
        return None
    return (metadata.dpi[0] * size[0] / metadata.size[0], metadata.dpi[1] * size[1] / metadata.size[1])


def output_exif(metadata: ImageMetadata, size: tuple[int, int], dropped: list[str] | None = None) -> Image.Exif | None:
    """The output's EXIF: orientation 1, its pixel sizes and resolution (if it fits)."""
    if not metadata.exif:
        return None
    exif = Image.Exif()
    try:
        exif.load(metadata.exif)
    except Exception:  # noqa: BLE001 - a malformed block is dropped, never an error
        return None
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    for tag, value in ((_IMAGE_WIDTH, size[0]), (_IMAGE_LENGTH, size[1])):
        if tag in exif:
            exif[tag] = value
    scale = (size[0] / metadata.size[0], size[1] / metadata.size[1])
    for tag, factor in ((_X_RESOLUTION, scale[0]), (_Y_RESOLUTION, scale[1])):
        if tag in exif and _positive(exif[tag]):
            exif[tag] = float(exif[tag]) * factor
    resolution = [exif[tag] for tag in (_X_RESOLUTION, _Y_RESOLUTION) if tag in exif and _positive(exif[tag])]
    if any(not _RATIONAL_RANGE[0] <= float(value) <= _RATIONAL_RANGE[1] for value in resolution):
        exif.pop(_X_RESOLUTION, None), exif.pop(_Y_RESOLUTION, None)
        if dropped is not None:
            dropped.append(f"the EXIF resolution ({' x '.join(f'{float(v):g}' for v in resolution)}; EXIF holds "
                           f"{_RATIONAL_RANGE[0]:g} to {_RATIONAL_RANGE[1]:g})")
    sub = exif.get_ifd(_EXIF_IFD)
    for tag, value in ((_PIXEL_X, size[0]), (_PIXEL_Y, size[1])):
        if tag in sub:
            sub[tag] = value
    return exif


def png_chunks(options: dict[str, Any]) -> bytes:
    """The iCCP, pHYs, eXIf and text chunks of `save_options("PNG", ...)`, for our PNG writer."""
    chunks = []
    if options.get("icc_profile"):
        chunks.append(png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(options["icc_profile"])))
    if "dpi" in options:
        x, y = (int(round(d / 0.0254)) for d in options["dpi"])
        chunks.append(png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1)))
    if "exif" in options:
        data = options["exif"].tobytes(8)
        chunks.append(png_chunk(b"eXIf", data[6:] if data.startswith(b"Exif\0\0") else data))
    if "pnginfo" in options:
        chunks.extend(png_chunk(kind, data) for kind, data, *_ in options["pnginfo"].chunks)
    return b"".join(chunks)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def _positive(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError, ZeroDivisionError):
        return False
