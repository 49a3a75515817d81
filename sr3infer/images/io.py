"""Images in (PIL, numpy, torch, file paths) to tensors in [-1, 1], and results back in kind."""

from __future__ import annotations

import io
import os
import stat
import struct
import tempfile
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar, Union

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

from .metadata import ImageMetadata, metadata_of, png_chunk, png_chunks, save_options
from .resample import bicubic, spatial_size

__all__ = ["ImageLike", "Prepared", "ImageHeader", "ImageMetadata", "load_image", "read_image",
           "read_image_and_metadata", "metadata_of", "read_header", "peek_sizes", "prepare", "restore", "save_image",
           "output_format", "check_output_size", "image_size", "write_atomically"]

_PNG_16_BIT_COLOUR = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}  # rawmode -> low bytes

ImageLike = Union[Image.Image, np.ndarray, Tensor, str, os.PathLike]
ValueRange = Union[str, tuple[float, float]]  # of float inputs: (0, 1), (-1, 1) or "auto"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}  # read from folders
OUTPUT_HINT = "use .png, .jpg, .webp, .tif or .bmp"
MAX_OUTPUT_SIDE = {"ICO": 256, "WEBP": 16383, "JPEG": 65535, "GIF": 65535}
"""The largest image each of these formats holds (Pillow shrinks an ICO to fit, fails on others)."""
MAX_PNG_CHUNK = 64 * 2**20
"""Largest decompressed PNG ICC profile or text chunk read (real profiles pass Pillow's 1 MB)."""
_PNG_CHUNK_LIMIT = threading.Lock()


@dataclass
class Prepared:
    """One input image as the model sees it, plus what is needed to hand the result back in kind."""

    rgb: Tensor                    # (1, 3, h, w) float32 in [-1, 1]
    alpha: Tensor | None           # (1, 1, h, w) float32 in [0, 1], or None
    kind: str                      # "pil", "np" or "pt"
    gray: bool                     # the input had one colour channel
    bits: int                      # 8 or 16 for integer inputs, 32 for float inputs
    layout: str = ""               # numpy: "HW"/"HWC"; torch: "CHW"/"NCHW"
    source_dtype: Any = None       # numpy/torch dtype of the input


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (truncation found now), upright (EXIF orientation), clear errors."""
    return _open(path)[0]


def read_image(path: str | os.PathLike) -> Image.Image | np.ndarray:
    """`load_image`, except that a 16-bit RGB, RGBA or gray+alpha PNG comes back as a uint16 array
    (Pillow keeps only the high bytes; a second decode reads the low ones)."""
    return read_image_and_metadata(path)[0]


def read_image_and_metadata(path: str | os.PathLike) -> tuple[Image.Image | np.ndarray, ImageMetadata]:
    """`read_image`, and the file's ICC profile, EXIF, DPI and PNG text for `save_image`."""
    image, stored_as, orientation = _open(path)
    metadata = metadata_of(image)
    if stored_as == "LA;16B":
        return _png16_gray_alpha(path, orientation), metadata
    low_bytes = _PNG_16_BIT_COLOUR.get(stored_as or "")
    if low_bytes is None:
        return image, metadata
    high = np.asarray(image, dtype=np.uint16)
    low = np.asarray(_open(path, rawmode=low_bytes)[0], dtype=np.uint16)
    return (high << 8) | low, metadata


def _png16_gray_alpha(path: str | os.PathLike, orientation: int) -> np.ndarray:
    """All 16 bits of a 16-bit gray+alpha PNG, decoded as the 8-bit RGBA PNG of the same bytes."""
    data = Path(path).read_bytes()
    chunks = [png_chunk(kind, body[:8] + bytes([8, 6]) + body[10:] if kind == b"IHDR" else body)
              for kind, body in _png_chunk_list(data) if kind in (b"IHDR", b"IDAT", b"IEND")]
    with Image.open(io.BytesIO(data[:8] + b"".join(chunks))) as image:
        raw = np.asarray(image.convert("RGBA"), dtype=np.uint16)
    array = np.stack([(raw[..., 0] << 8) | raw[..., 1], (raw[..., 2] << 8) | raw[..., 3]], axis=-1)
    return _ORIENT.get(orientation, _ORIENT[1])(array)


def _png_chunk_list(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of each chunk of the PNG file `data`."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        yield kind, data[pos + 8 : pos + 8 + length]
        pos += 12 + length


# EXIF orientation -> how to turn the stored (H, W, C) array upright (as ImageOps.exif_transpose).
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def check_input_file(path: Path, what: str = "image", empty_hint: str = "") -> None:
    """Refuse, before opening it, a path that is not a non-empty regular file (FIFOs block)."""
    article = "an" if what[0] in "aeiou" else "a"
    if not path.exists():
        raise FileNotFoundError(f"Input {what} {str(path)!r} does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"Expected {article} {what} file, got the directory {str(path)!r}.")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"Input {what} {str(path)!r} is not a regular file (a FIFO, device or socket); "
                         f"expected {article} {what} file.")
    if info.st_size == 0:
        raise ValueError(f"Input {what} {str(path)!r} is an empty (0-byte) file.{empty_hint}")



@contextmanager
def _pil_errors(path: Path, failure: str, *also: type[Exception]) -> Iterator[None]:
    """PIL's errors about `path` as one-line ValueErrors; `failure` words a decoding error."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(
            f"{str(path)!r} is too large to decode safely ({err}). If you trust it, raise "
            "PIL.Image.MAX_IMAGE_PIXELS before calling sr3infer."
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"{str(path)!r} is not an image PIL can read (PNG, JPEG, WebP, TIFF, BMP, ...).") from None
    except (OSError, SyntaxError, ValueError) as err:
        if _CHUNK_TOO_LARGE in str(err):
            raise ValueError(
                f"{str(path)!r} holds a PNG ICC profile or text chunk that decompresses to over "
                f"{max(MAX_PNG_CHUNK, PngImagePlugin.MAX_TEXT_CHUNK):,} bytes, more than sr3infer reads. If you trust "
                "it, raise PIL.PngImagePlugin.MAX_TEXT_CHUNK before calling sr3infer, or remove the chunk."
            ) from None
        if isinstance(err, ValueError) and ValueError not in also:
            raise
        raise ValueError(f"{str(path)!r} {failure}; is it truncated or corrupt? ({err})") from None


_CHUNK_TOO_LARGE = "Decompressed data too large"  # a PNG chunk over MAX_TEXT_CHUNK
_T = TypeVar("_T")


def _large_png_chunks(read: Callable[[], _T]) -> _T:
    """`read()`, retried with `MAX_PNG_CHUNK` where Pillow refused a PNG chunk over 1 MB."""
    try:
        return read()
    except ValueError as err:
        if _CHUNK_TOO_LARGE not in str(err):
            raise
    with _PNG_CHUNK_LIMIT:  # a module setting of Pillow's: one raise at a time, always put back
        default = PngImagePlugin.MAX_TEXT_CHUNK
        PngImagePlugin.MAX_TEXT_CHUNK = max(default, MAX_PNG_CHUNK)
        try:
            return read()
        finally:
            PngImagePlugin.MAX_TEXT_CHUNK = default


_PIL_PNG_KEYS = ("transparency", "dpi", "gamma", "aspect", "icc_profile", "exif", "xmp", "srgb", "chromaticity")
"""`Image.info` keys Pillow fills from a PNG's chunks, which a text chunk of that key replaces."""


def _undo_text_clashes(image: Image.Image, path: Path) -> None:
    """Restore `info` keys (e.g. "transparency") that a PNG text chunk of that key replaced."""
    clashes = {key for key in _PIL_PNG_KEYS if isinstance(image.info.get(key), str)}
    if not clashes:
        return
    data = path.read_bytes()
    kept = [png_chunk(kind, body) for kind, body in _png_chunk_list(data)
            if kind not in (b"tEXt", b"zTXt", b"iTXt") or body.split(b"\0", 1)[0].decode("latin-1") not in clashes]
    with Image.open(io.BytesIO(data[:8] + b"".join(kept))) as own:
        for key in clashes:
            if key in own.info:
                image.info[key] = own.info[key]
            else:
                del image.info[key]


def _open(path: str | os.PathLike, rawmode: str | None = None) -> tuple[Image.Image, str | None, int]:
    """The decoded upright image (frame 0, warned), its PNG raw mode and EXIF orientation."""
    path = Path(path)
    check_input_file(path)

    def decode() -> tuple[Image.Image, Any]:
        image = Image.open(path)
        stored_as = image.tile[0][3] if image.format == "PNG" and len(image.tile) == 1 else None
        if rawmode is not None:
            # Pillow's stubs want its private _Tile; it reads any 4-tuple (as Pillow 10's tiles)
            image.tile = [(*image.tile[0][:3], rawmode)]  # type: ignore[list-item]
        image.load()
        if image.format == "PNG":
            _undo_text_clashes(image, path)
        return image, stored_as

    with _pil_errors(path, "could not be decoded"), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image, stored_as = _large_png_chunks(decode)
    frames = getattr(image, "n_frames", 1)
    if isinstance(frames, int) and frames > 1:
        if rawmode is None:
            warnings.warn(f"{str(path)!r} holds {frames} frames ({image.format}); only the first is used. "
                          "Split it into single images to upscale every frame.", stacklevel=3)
        first = image.copy()  # frame 0 alone, so the file is closed now
        image.close()
        image = first
    orientation = 1
    try:
        orientation = int(image.getexif().get(0x0112, 1))
        ImageOps.exif_transpose(image, in_place=True)  # a sideways phone photo
    except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the pixels as stored
        orientation = 1
    return image, stored_as if isinstance(stored_as, str) else None, orientation


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding any pixel (see `read_header`)."""

    width: int          # upright (EXIF orientation applied), as `read_image` returns it
    height: int
    mode: str           # Pillow's mode, e.g. "RGB"; a 16-bit gray+alpha PNG says "LA"
    bits: int           # per sample: 8, 16 or 32
    channels: int
    frames: int         # > 1 for animated GIF/APNG and multi-page TIFF; only frame 0 is read
    format: str         # e.g. "PNG"

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded pixels (frame 0), before any conversion to float."""
        return self.pixels * self.channels * max(1, self.bits // 8)


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Size, mode, bit depth and frame count from an image file's header, without decoding: a folder
    run checks every file so first, so an over-size file costs no memory."""
    path = Path(path)
    check_input_file(path)
    with _pil_errors(path, "has an unreadable header", ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _large_png_chunks(lambda: Image.open(path)) as image:
            width, height, mode, fmt = image.width, image.height, image.mode, image.format or ""
            rawmode = image.tile[0][3] if fmt == "PNG" and len(image.tile) == 1 else ""
            frames = getattr(image, "n_frames", 1)
            try:  # PNG getexif() decodes the pixels to look past them: read the eXIf before them
                exif = image.getexif() if fmt != "PNG" else Image.Exif()
                if fmt == "PNG" and "exif" in image.info:
                    exif.load(image.info["exif"])
                orientation = int(exif.get(0x0112, 1))
            except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored when decoding too
                orientation = 1
    rawmode = rawmode if isinstance(rawmode, str) else ""
    if rawmode.startswith("LA;16"):
        mode = "LA"
    bits = 16 if ";16" in rawmode or mode.startswith("I;16") else 32 if mode in ("I", "F") else 8
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageHeader(width=width, height=height, mode=mode, bits=bits, channels=Image.getmodebands(mode),
                       frames=frames if isinstance(frames, int) else 1, format=fmt)


def peek_sizes(image: Any) -> list[tuple[int, int]]:
    """(height, width) of each image in `image`, read without decoding; [] when not understood."""
    if isinstance(image, (str, os.PathLike)):
        try:
            header = read_header(image)
        except Exception:  # noqa: BLE001 - load_image reports bad files properly
            return []
        return [(header.height, header.width)]
    if isinstance(image, Image.Image):
        return [(image.height, image.width)]
    if isinstance(image, (np.ndarray, Tensor)):
        shape = tuple(image.shape)
        if isinstance(image, np.ndarray) and len(shape) in (2, 3):
            return [shape[:2]]
        if isinstance(image, Tensor) and len(shape) == 3:
            return [shape[-2:]]
        if len(shape) == 4:
            return [shape[1:3] if isinstance(image, np.ndarray) else shape[-2:]] * shape[0]
    return []


def _check_size(h: int, w: int, what: str) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be at least 1x1 pixels, got {w}x{h} (width x height).")


def _from_pil(image: Image.Image) -> Prepared:
    _check_size(image.height, image.width, "The image")
    mode = image.mode
    if mode == "P":
        if isinstance(image.info.get("transparency"), str):  # a text chunk, not a tRNS
            image = image.copy()
            del image.info["transparency"]
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    elif mode in ("1",):
        image = image.convert("L")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image.convert("I"), dtype=np.float32) / 65535.0
        prep = _from_float_hwc(array[..., None], gray=True)
        prep.bits = 16
    elif mode == "I":
        array = np.asarray(image, dtype=np.float64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            # 32-bit integer data (e.g. a 32-bit TIFF): clipping at 65535 would silently whiten it.
            raise ValueError(
                f"The 32-bit integer (mode 'I') image holds values in [{array.min():.0f}, {array.max():.0f}]; "
                "expected 0..65535. Scale it to 16 bits first, e.g. Image.fromarray((a >> 16).astype('uint16'))."
            )
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        prep = _from_float_hwc((np.clip(array, 0, top) / top).astype(np.float32)[..., None], gray=True)
        prep.bits = 16 if top > 255 else 8
    elif mode == "F":
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("The mode-F image contains NaN or Inf values; expected finite values in [0, 1].")
        if array.size and (array.min() < -1e-3 or array.max() > 1 + 1e-3):
            # Clipping would silently whiten e.g. image.convert('F') of 8-bit data (0..255).
            raise ValueError(
                f"Mode-F images must hold values in [0, 1], got [{array.min():.3g}, {array.max():.3g}]. "
                "Scale it first, or pass 8-bit data as mode 'L'."
            )
        prep = _from_float_hwc(np.clip(array, 0, 1)[..., None], gray=True)
        prep.bits = 32
    elif mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[..., None]
        prep = _from_float_hwc(array, gray=mode in ("L", "LA"))
        prep.bits = 8
    else:
        raise ValueError(f"Unsupported image mode {mode!r}; convert it first, e.g. image.convert('RGB').")
    prep.kind = "pil"
    return prep


def _from_float_hwc(array: np.ndarray, *, gray: bool) -> Prepared:
    """(H, W, C) float in [0, 1] with C in 1..4 -> Prepared (kind filled by the caller)."""
    h, w, c = array.shape
    _check_size(h, w, "The image")
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
    return _from_unit_tensor(t, gray=gray)


def _from_unit_tensor(t: Tensor, *, gray: bool) -> Prepared:
    """(1, C, H, W) float in [0, 1], C in {1, 2, 3, 4} (2 = gray + alpha) -> Prepared."""
    c = t.shape[1]
    alpha = None
    if c in (2, 4):
        t, alpha = t[:, :-1], t[:, -1:].clone()
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    rgb = t.float().clamp(0, 1) * 2 - 1
    return Prepared(rgb=rgb.contiguous(), alpha=alpha, kind="", gray=gray or c in (1, 2), bits=32)


def _float_range(data_min: float, value_range: ValueRange) -> tuple[float, float]:
    """(low, high) of float input; "auto": [-1, 1] if any value is below 0, else [0, 1]."""
    if isinstance(value_range, str):
        if value_range != "auto":
            raise ValueError(f"Unknown value_range {value_range!r}; expected 'auto', (0, 1) or (-1, 1).")
        return (-1.0, 1.0) if data_min < 0 else (0.0, 1.0)
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"Unknown value_range {value_range!r}; expected 'auto', (0, 1) or (-1, 1).") from None
    if (low, high) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"Unsupported value_range {value_range!r}; expected 'auto', (0, 1) or (-1, 1).")
    return low, high


def _float_to_unit(data: Any, value_range: ValueRange, what: str) -> Any:
    """Finite float data (numpy or torch) in `value_range` -> [0, 1], refusing values outside it."""
    empty = (data.size if isinstance(data, np.ndarray) else data.numel()) == 0
    lowest, highest = (0.0, 0.0) if empty else (float(data.min()), float(data.max()))
    if not np.isfinite([lowest, highest]).all():
        raise ValueError(f"The {what} contains NaN or Inf values; expected finite values.")
    low, high = _float_range(lowest, value_range)
    if lowest < low - 1e-3 or highest > high + 1e-3:
        hint = ("Pass value_range=(-1, 1) for [-1, 1] data; divide uint8 data by 255 (or pass it as uint8)."
                if low == 0 else "Pass value_range=(0, 1) for [0, 1] data.")
        raise ValueError(f"Expected float images in [{low:g}, {high:g}], got values in [{lowest:.3g}, {highest:.3g}]. "
                         + hint)
    return (data - low) / (high - low) if low != 0 else data


def _from_numpy(array: np.ndarray, value_range: ValueRange = (0, 1)) -> list[Prepared]:
    if not array.dtype.isnative:  # big-endian ('>u2'): native order
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 4:
        if len(array) == 0:
            raise ValueError(f"Got an empty batch of shape {array.shape}; expected at least one image (N >= 1).")
        if isinstance(value_range, str) and np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all():
            value_range = _float_range(float(array.min()), value_range)  # "auto": once per batch
        return [_from_numpy(a, value_range)[0] for a in array]
    if array.ndim not in (2, 3):
        raise ValueError(
            f"Expected a numpy image of shape (H, W), (H, W, C) or a batch (N, H, W, C), got shape {array.shape}."
        )
    layout = "HW" if array.ndim == 2 else "HWC"
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels last, got shape {array.shape}. "
            "Channels-first arrays must be transposed to (H, W, C)."
        )
    dtype = array.dtype
    if dtype == np.uint8:
        unit, bits = array.astype(np.float32) / 255.0, 8
    elif dtype == np.uint16:
        unit, bits = array.astype(np.float32) / 65535.0, 16
    elif np.issubdtype(dtype, np.floating):
        unit, bits = _float_to_unit(array.astype(np.float32), value_range, "numpy image"), 32
    else:
        raise ValueError(f"Unsupported numpy dtype {dtype}; expected uint8, uint16 or float in [0, 1].")
    prep = _from_float_hwc(unit, gray=array.shape[-1] in (1, 2))
    prep.kind, prep.bits, prep.layout, prep.source_dtype = "np", bits, layout, dtype
    return [prep]


def _from_torch(t: Tensor, value_range: ValueRange = (0, 1)) -> list[Prepared]:
    if t.dim() == 4:
        if len(t) == 0:
            raise ValueError(f"Got an empty batch of shape {tuple(t.shape)}; expected at least one image (N >= 1).")
        if isinstance(value_range, str) and t.is_floating_point() and torch.isfinite(t).all():
            value_range = _float_range(float(t.min()), value_range)  # "auto": once per batch
        return [_from_torch_chw(x, "NCHW", t.dtype, value_range) for x in t]
    if t.dim() == 3:
        return [_from_torch_chw(t, "CHW", t.dtype, value_range)]
    raise ValueError(f"Expected a tensor of shape (C, H, W) or (N, C, H, W) in [0, 1], got shape {tuple(t.shape)}.")


def _from_torch_chw(t: Tensor, layout: str, dtype: torch.dtype, value_range: ValueRange = (0, 1)) -> Prepared:
    if t.shape[0] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected 1, 2, 3 or 4 channels first (C, H, W), got shape {tuple(t.shape)}. "
            "Channels-last tensors must be permuted to (C, H, W)."
        )
    if not t.is_floating_point():
        if t.dtype == torch.uint8:
            t = t.float() / 255
        else:
            raise ValueError(f"Unsupported tensor dtype {t.dtype}; expected a float tensor in [0, 1] or uint8.")
        t = t.detach().cpu()
    else:
        t = _float_to_unit(t.detach().float().cpu(), value_range, "input tensor")
    _check_size(t.shape[-2], t.shape[-1], "The image")
    prep = _from_unit_tensor(t[None], gray=t.shape[0] in (1, 2))
    prep.kind, prep.layout, prep.source_dtype = "pt", layout, dtype
    if dtype == torch.uint8:
        prep.bits = 8  # as output_type="np" it comes back uint8, as a uint8 array would
    return prep


def prepare(image: ImageLike, value_range: ValueRange = (0, 1)) -> list[Prepared]:
    """Turn one input (a batch counts as several) into `Prepared` images; float data is in
    `value_range` ("auto": [-1, 1] when below 0), integers are 0..255 or 0..65535."""
    if isinstance(image, (str, os.PathLike)):
        loaded = read_image(image)
        if isinstance(loaded, np.ndarray):  # 16-bit colour: numpy keeps all bits
            (prep,) = _from_numpy(loaded)
            prep.kind = "pil"
            return [prep]
        return [_from_pil(loaded)]
    if isinstance(image, Image.Image):
        return [_from_pil(image)]
    if isinstance(image, np.ndarray):
        return _from_numpy(image, value_range)
    if isinstance(image, Tensor):
        return _from_torch(image, value_range)
    raise TypeError(
        f"Expected a PIL image, a numpy array, a torch tensor or a file path, got {type(image).__name__}."
    )


def restore(result: Tensor, prep: Prepared, output_type: str | None = None) -> Any:
    """A model output (1, 3, H, W) in [-1, 1] back in the kind, mode and bit depth of `prep`."""
    kind = output_type or prep.kind
    unit = ((result.detach().float().cpu().clamp(-1, 1) + 1) / 2)[0]  # (3, H, W) in [0, 1]
    if prep.gray:
        unit = unit.mean(0, keepdim=True)
    if prep.alpha is not None:
        alpha = bicubic(prep.alpha, spatial_size(unit))[0].clamp(0, 1)
        unit = torch.cat([unit, alpha], dim=0)
    if kind == "pt":
        if prep.kind == "pt" and prep.source_dtype == torch.uint8:
            return (unit * 255).round().to(torch.uint8)
        if prep.kind == "pt" and isinstance(prep.source_dtype, torch.dtype) and prep.source_dtype.is_floating_point:
            return unit.to(prep.source_dtype)  # fp16/bf16/fp64 in, the same out
        return unit
    hwc = unit.permute(1, 2, 0).numpy()
    if kind == "np":
        if prep.bits == 16:
            out = np.round(hwc * 65535).astype(np.uint16)
        elif prep.bits == 8:
            out = np.round(hwc * 255).astype(np.uint8)
        else:
            out = hwc.astype(prep.source_dtype if prep.kind == "np" else np.float32)
        return out[..., 0] if prep.layout == "HW" else out
    if kind == "pil":
        return _to_pil(hwc, prep)
    raise ValueError(f"Unknown output_type {kind!r}; expected 'pil', 'np' or 'pt'.")


def _to_pil(hwc: np.ndarray, prep: Prepared) -> Image.Image:
    c = hwc.shape[-1]
    if prep.bits == 16 and prep.gray and c == 1:
        return Image.fromarray(np.round(hwc[..., 0] * 65535).astype(np.uint16))  # mode I;16
    if prep.bits == 32 and prep.gray and c == 1 and prep.kind == "pil":
        return Image.fromarray(hwc[..., 0].astype(np.float32), mode="F")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    array = np.round(hwc * 255).astype(np.uint8)
    return Image.fromarray(array[..., 0] if c == 1 else array, mode=mode)


def _encodable(image: Image.Image, fmt: str) -> Image.Image:
    """`image` in a mode `fmt` stores; 16-bit and float drop to 8 bits only where they must."""
    if image.mode == "F" and fmt != "TIFF":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        image = Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8), mode="L")
    elif image.mode.startswith("I;16") and fmt not in ("PNG", "TIFF"):
        image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) / 257).astype(np.uint8), mode="L")
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("L") if image.mode == "LA" else image.convert("RGBA").convert("RGB")
    elif fmt == "BMP" and image.mode == "LA":
        image = image.convert("RGBA")
    return image


def output_format(path: str | os.PathLike) -> str:
    """Pillow's format name for the suffix of `path`, e.g. "PNG"; ValueError if it cannot write."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"Unknown output format {suffix!r}; {OUTPUT_HINT}.")
    return fmt


def check_output_size(path: str | os.PathLike, size: tuple[int, int]) -> None:
    """Refuse a size (width, height) the format of `path` cannot hold, e.g. an ICO over 256x256."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "")
    limit = MAX_OUTPUT_SIDE.get(fmt)
    if limit is not None and max(size) > limit:
        raise ValueError(f"{str(path)!r}: {fmt} holds images of at most {limit}x{limit} pixels, but the output is "
                         f"{size[0]}x{size[1]}; write .png (or .tif) instead, or ask for a smaller output "
                         "(--outscale, --size).")


def image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W[, C]) array."""
    return image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])


def save_image(image: Image.Image | np.ndarray, path: str | os.PathLike, *, overwrite: bool = False,
               metadata: ImageMetadata | None = None, strip_metadata: bool = False, quality: int = 95) -> Path:
    """Write `image` (PIL, or a uint16 array from `read_image`) in the format `path` names.

    Atomic, as `write_atomically`; a size the format cannot hold is refused, never shrunk.

    Args:
        metadata: the input's (`read_image_and_metadata`), written where the format holds it and
            adjusted to this image's size.
        strip_metadata: write none of it (not even an ICC profile in a PIL image's own `info`).
        quality: JPEG and WebP quality, 1 to 100.
    """
    fmt = output_format(path)
    check_output_size(path, image_size(image))
    bands = len(image.getbands()) if isinstance(image, Image.Image) else image.shape[-1] if image.ndim == 3 else 1
    options = save_options(fmt, metadata, image_size(image), gray=bands < 3, strip=strip_metadata, quality=quality,
                           path=path)
    return write_atomically(path, lambda handle: _encode(image, fmt, handle, options), overwrite=overwrite)


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], object], *, overwrite: bool = False) -> Path:
    """Call `write(handle)` on a new private file beside `path`, then move it into place: never half
    a file, no symlink followed; without `overwrite` exactly one of two writers wins."""
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{str(path)!r} already exists; pass --overwrite (overwrite=True) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
        else:
            _claim(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _claim(tmp: str, path: Path) -> None:
    """Name the finished file `tmp` `path`, atomically, only if nothing has that name yet."""
    try:
        try:
            os.link(tmp, path)  # fails if the name exists, whatever it is; never follows it
        except FileExistsError:
            raise
        except OSError:  # no hard links here: claim the name with O_EXCL, then fill it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            os.replace(tmp, path)
            return
    except FileExistsError:
        raise FileExistsError(
            f"{str(path)!r} already exists (another run wrote it first); pass --overwrite (overwrite=True) to replace it."
        ) from None
    os.unlink(tmp)


def _encode(image: Image.Image | np.ndarray, fmt: str, handle: IO[bytes], options: dict[str, Any]) -> None:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint16 or image.ndim != 3 or image.shape[-1] not in (2, 3, 4):
            raise TypeError(f"Expected a PIL image or a uint16 (H, W, 2|3|4) array, got {image.dtype} {image.shape}.")
        if fmt == "PNG":
            _write_png16(image, handle, png_chunks(options))
            return
        warnings.warn(f"Pillow writes {fmt} with 8 bits per colour channel; write .png to keep all 16 bits.",
                      stacklevel=3)
        image = Image.fromarray(np.round(image / 257).astype(np.uint8))
    _encodable(image, fmt).save(handle, format=fmt, **options)


def _write_png16(array: np.ndarray, handle: IO[bytes], extra: bytes = b"") -> None:
    """A 16-bit gray+alpha, RGB or RGBA PNG (Pillow cannot write them), `extra` chunks first."""
    height, width, channels = array.shape
    raw = np.ascontiguousarray(array, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    step = channels * 2  # bytes per pixel: "Sub" stores each byte minus the one a pixel to the left
    rows = np.empty((height, 1 + raw.shape[1]), dtype=np.uint8)
    rows[:, 0] = 1
    rows[:, 1 : 1 + step] = raw[:, :step]
    rows[:, 1 + step :] = raw[:, step:] - raw[:, :-step]
    header = struct.pack(">IIBBBBB", width, height, 16, {2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    handle.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra
                 + png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + png_chunk(b"IEND", b""))
