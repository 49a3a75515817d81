"""What an image file carries besides its pixels (ICC profile, EXIF, DPI, PNG text), carried to the upscaled file.

`imageio.read_image_and_metadata` reads it with the pixels; `imageio.save_image(..., metadata=...)` writes it
back, adjusted to the output: EXIF orientation 1 (the pixels were turned upright when read) and its pixel
sizes set to the output's, DPI multiplied by the scale factor (the print size stays the same), the ICC
profile unchanged (the model keeps the input's colour space). Where a format has no place for a part (WebP
has no DPI, only PNG has text chunks) that part is left out.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, PngImagePlugin

__all__ = ["ImageMetadata", "metadata_of"]

_ORIENTATION, _IMAGE_WIDTH, _IMAGE_LENGTH, _X_RESOLUTION, _Y_RESOLUTION = 0x0112, 0x0100, 0x0101, 0x011A, 0x011B
_EXIF_IFD, _PIXEL_X, _PIXEL_Y = 0x8769, 0xA002, 0xA003
_FORMAT_PARTS = {  # what each output format can hold
    "PNG": {"icc", "exif", "dpi", "text"}, "JPEG": {"icc", "exif", "dpi"}, "WEBP": {"icc", "exif"},
    "TIFF": {"icc", "exif", "dpi"}, "BMP": {"dpi"},
}


@dataclass(frozen=True)
class ImageMetadata:
    """The ICC profile, EXIF block, DPI and PNG text of an image read at `size` (width, height), upright."""

    size: tuple[int, int]
    icc_profile: bytes | None = None
    exif: bytes | None = None                 # with the orientation tag removed: the pixels were turned upright
    dpi: tuple[float, float] | None = None
    text: dict[str, str] = field(default_factory=dict)   # PNG tEXt / zTXt / iTXt chunks

    def __bool__(self) -> bool:
        return bool(self.icc_profile or self.exif or self.dpi or self.text)


def metadata_of(image: Image.Image) -> ImageMetadata:
    """The metadata of an opened (and, for PNG text after the pixels, loaded) PIL image, as it is now."""
    info = image.info
    dpi = info.get("dpi")
    if not (isinstance(dpi, tuple) and len(dpi) == 2 and all(_positive(d) for d in dpi)):
        dpi = None
    text = {k: str(v) for k, v in info.items() if isinstance(v, str)} if image.format == "PNG" else {}
    return ImageMetadata(size=image.size, icc_profile=_bytes(info.get("icc_profile")), exif=_bytes(info.get("exif")),
                         dpi=(float(dpi[0]), float(dpi[1])) if dpi else None, text=text)


def save_options(fmt: str, metadata: ImageMetadata | None, size: tuple[int, int], *, gray: bool = False,
                 strip: bool = False, quality: int = 95) -> dict[str, Any]:
    """Keyword arguments of PIL's `Image.save` in `fmt` for an output of `size` (width, height), `gray` or colour.

    An ICC profile for another colour space than the output's (a CMYK JPEG's, read as RGB) is left out.
    With `strip` the ICC profile is written as none, so Pillow does not copy one from the image's own `info`
    either (as it does for PNG and TIFF); JPEG and WebP get `quality`.
    """
    options: dict[str, Any] = {"quality": check_quality(quality)} if fmt in ("JPEG", "WEBP") else {}
    if strip and fmt in ("PNG", "TIFF"):
        options["icc_profile"] = None
    if strip or not metadata:
        return options
    parts = _FORMAT_PARTS.get(fmt, set())
    space = b"GRAY" if gray else b"RGB "
    if "icc" in parts and metadata.icc_profile and metadata.icc_profile[16:20] == space:
        options["icc_profile"] = metadata.icc_profile
    exif = output_exif(metadata, size) if "exif" in parts else None
    if exif is not None:
        options["exif"] = exif
    dpi = output_dpi(metadata, size)
    if "dpi" in parts and dpi is not None:
        options["dpi"] = dpi
    if "text" in parts and metadata.text:
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.text.items():
            (info.add_text if value.isascii() else info.add_itxt)(key, value)
        options["pnginfo"] = info
    return options


def check_quality(quality: Any) -> int:
    """A JPEG/WebP quality: an integer from 1 to 100."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100 (JPEG/WebP), got {quality!r}.")
    return quality


def output_dpi(metadata: ImageMetadata, size: tuple[int, int]) -> tuple[float, float] | None:
    """The input's DPI times the scale factor of each axis, so the printed size stays the same."""
    if metadata.dpi is None:
        return None
    return (metadata.dpi[0] * size[0] / metadata.size[0], metadata.dpi[1] * size[1] / metadata.size[1])


def output_exif(metadata: ImageMetadata, size: tuple[int, int]) -> Image.Exif | None:
    """The EXIF block for the output: orientation 1 (upright), pixel sizes and resolution of the output."""
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
    sub = exif.get_ifd(_EXIF_IFD)
    for tag, value in ((_PIXEL_X, size[0]), (_PIXEL_Y, size[1])):
        if tag in sub:
            sub[tag] = value
    return exif


def png_chunks(options: dict[str, Any]) -> bytes:
    """The iCCP, pHYs, eXIf and text chunks of `save_options("PNG", ...)`, for a PNG written without Pillow."""
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
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def _positive(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError, ZeroDivisionError):
        return False
