"""Reading images (every bad file gets a clear error), PIL modes, round trips, and atomic writing."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from sr3infer.images import io as imageio
from sr3infer.images.io import load_image, prepare, restore, save_image

from conftest import image_in_mode

RNG = np.random.default_rng(0)


def _rgb(h: int = 8, w: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(_rgb(16, 16)).save(path)
    return path


@pytest.fixture
def jpeg(tmp_path):
    path = tmp_path / "image.jpg"
    Image.fromarray(_rgb(16, 16)).save(path, quality=95)
    return path


# Bad files.


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="'.*nope.png' does not exist"):
        load_image(tmp_path / "nope.png")


def test_directory_instead_of_a_file(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(IsADirectoryError, match="Expected an image file, got the directory"):
        load_image(tmp_path / "folder.png")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty \\(0-byte\\) file"):
        load_image(tmp_path / "empty.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, not pixels\n")
    with pytest.raises(ValueError, match="is not an image PIL can read"):
        load_image(tmp_path / "notes.png")


@pytest.mark.parametrize("fixture", ["png", "jpeg"])
def test_truncated_files(fixture, request, tmp_path):
    data = request.getfixturevalue(fixture).read_bytes()
    truncated = tmp_path / f"truncated{request.getfixturevalue(fixture).suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be decoded; is it truncated or corrupt"):
        load_image(truncated)


@pytest.mark.parametrize("limit", [100, 200])  # over 2x the limit PIL raises, over 1x it warns: both refused
def test_decompression_bomb(png, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ValueError, match="too large to decode safely.*MAX_IMAGE_PIXELS"):
        load_image(png)


def test_a_good_file_loads_fully(png, jpeg):
    image = load_image(png)
    assert image.size == (16, 16) and image.mode == "RGB"
    assert np.asarray(image).shape == (16, 16, 3)  # decoded now, not lazily
    assert load_image(str(jpeg)).size == (16, 16)


# Modes: converted, never a crash.


@pytest.mark.parametrize("mode, gray, alpha, bits", [
    ("RGB", False, False, 8), ("RGBA", False, True, 8), ("L", True, False, 8), ("LA", True, True, 8),
    ("P", False, False, 8), ("PA", False, True, 8), ("CMYK", False, False, 8), ("YCbCr", False, False, 8),
    ("1", True, False, 8), ("I;16", True, False, 16), ("I", True, False, 8), ("F", True, False, 32),
    ("RGBa", False, True, 8), ("La", True, True, 8), ("HSV", False, False, 8), ("LAB", False, False, 8),
])
def test_every_pil_mode_is_converted(mode, gray, alpha, bits):
    (prep,) = prepare(image_in_mode(mode, RNG))
    assert prep.rgb.shape == (1, 3, 8, 8) and prep.rgb.dtype == torch.float32
    assert -1 <= prep.rgb.min() and prep.rgb.max() <= 1
    assert (prep.gray, prep.alpha is not None, prep.bits) == (gray, alpha, bits)


def test_palette_with_transparency_keeps_it():
    image = Image.fromarray(_rgb()).convert("P")
    image.info["transparency"] = 0
    (prep,) = prepare(image)
    assert prep.alpha is not None


def _text_after_trns(data: bytes) -> bytes:
    """The PNG `data` with its tEXt chunks moved to just before the pixels, after any tRNS."""
    chunks, pos = [], 8
    while pos < len(data):
        chunks.append(data[pos : pos + 12 + int.from_bytes(data[pos : pos + 4], "big")])
        pos += len(chunks[-1])
    text, rest = [c for c in chunks if c[4:8] == b"tEXt"], [c for c in chunks if c[4:8] != b"tEXt"]
    first_idat = next(k for k, c in enumerate(rest) if c[4:8] == b"IDAT")
    return data[:8] + b"".join(rest[:first_idat] + text + rest[first_idat:])


@pytest.mark.parametrize("trns", [None, 3])
def test_a_palette_png_with_a_text_chunk_keyed_transparency_loads_and_upscales(tmp_path, tiny_upscaler, trns):
    """Pillow puts a text chunk into `info` under its key, over its own `info["transparency"]` (the tRNS)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("transparency", "see the caption")
    buffer = io.BytesIO()
    Image.fromarray(_rgb()).convert("P").save(buffer, format="PNG", pnginfo=info,
                                              **({} if trns is None else {"transparency": trns}))
    path = tmp_path / "palette.png"
    path.write_bytes(_text_after_trns(buffer.getvalue()))
    with Image.open(path) as raw:
        assert raw.info["transparency"] == "see the caption"  # the collision, as Pillow reads it
    image, metadata = imageio.read_image_and_metadata(path)
    assert image.info.get("transparency") == trns and metadata.text == {"transparency": "see the caption"}
    out = tiny_upscaler.upscale(path, num_steps=1, progress=False)
    assert out.size == (16, 16) and out.mode == ("RGB" if trns is None else "RGBA")
    assert tiny_upscaler.upscale(Image.open(path), num_steps=1, progress=False).size == (16, 16)
    save_image(out, tmp_path / "out.png", metadata=metadata)
    assert imageio.read_image_and_metadata(tmp_path / "out.png")[1].text == {"transparency": "see the caption"}


def test_mode_f_must_hold_unit_values():
    (prep,) = prepare(Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32), mode="F"))
    assert torch.allclose(prep.rgb, torch.full((1, 3, 4, 4), -0.5))
    with pytest.raises(ValueError, match=r"Mode-F images must hold values in \[0, 1\], got \[\d+, \d+\]"):
        prepare(Image.fromarray(_rgb()[..., 0]).convert("F"))  # 8-bit data as float: refused, not clipped white
    with pytest.raises(ValueError, match="NaN or Inf"):
        prepare(Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32), mode="F"))


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGB", (0, 5)), lambda: Image.new("L", (5, 0)),
    lambda: np.zeros((0, 4, 3), dtype=np.uint8), lambda: np.zeros((4, 0), dtype=np.float32),
    lambda: torch.zeros(3, 0, 4), lambda: torch.zeros(1, 3, 4, 0),
])
def test_images_smaller_than_one_pixel(make):
    with pytest.raises(ValueError, match="at least 1x1 pixels"):
        prepare(make())


def test_one_pixel_is_fine():
    (prep,) = prepare(np.zeros((1, 1, 3), dtype=np.uint8))
    assert prep.rgb.shape == (1, 3, 1, 1)


@pytest.mark.parametrize("bad", [
    np.full((4, 4, 3), np.nan, dtype=np.float32), np.full((4, 4), np.inf),
    np.full((4, 4, 3), -np.inf, dtype=np.float16),
    torch.full((3, 4, 4), float("nan")), torch.full((2, 3, 4, 4), float("inf")),
])
def test_nan_and_inf_are_refused(bad):
    with pytest.raises(ValueError, match="NaN or Inf"):
        prepare(bad)


# Round trips: what comes in goes back out unchanged at the same size.


@pytest.mark.parametrize("image", [
    _rgb(), _rgb()[..., 0], RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8),
    RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16), RNG.integers(0, 65536, (8, 8), dtype=np.uint16),
])
def test_integer_arrays_round_trip_exactly(image):
    (prep,) = prepare(image)
    back = restore(prep.rgb, prep)
    assert back.dtype == image.dtype and back.shape == image.shape
    assert np.array_equal(back, image)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "I;16"])
def test_pil_images_round_trip_exactly(mode):
    image = image_in_mode(mode, RNG)
    (prep,) = prepare(image)
    back = restore(prep.rgb, prep)
    assert back.mode == image.mode
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_tensors_round_trip():
    t = torch.rand(2, 3, 5, 7)
    preps = prepare(t)
    assert len(preps) == 2
    back = torch.stack([restore(p.rgb, p) for p in preps])
    assert back.shape == t.shape and torch.allclose(back, t, atol=1e-6)
    u8 = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)
    (prep,) = prepare(u8)
    assert torch.equal(restore(prep.rgb, prep), u8)


# Writing.


def _eight_bit(image: Image.Image) -> np.ndarray:
    """The first channel on the 0..255 scale, whatever the mode (I;16 holds 0..65535, F 0..1)."""
    array = np.asarray(image, dtype=np.float64)
    array = array / 257 if image.mode.startswith("I;16") else array * 255 if image.mode == "F" else array
    return array if array.ndim == 2 else array[..., 0]


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "I;16", "F"])
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tif"])
def test_every_output_mode_can_be_written_in_every_format(tmp_path, mode, suffix):
    image = image_in_mode(mode, RNG)
    back = load_image(save_image(image, tmp_path / f"out{suffix}"))
    assert back.size == image.size
    if suffix in (".jpg", ".webp"):  # lossy and chroma-subsampled, on noise: only the level must survive
        assert abs(_eight_bit(back).mean() - _eight_bit(image).mean()) < 8
    else:
        assert np.abs(_eight_bit(back) - _eight_bit(image)).max() <= 0.5 + 1e-9


def test_16_bit_and_float_survive_where_the_format_allows(tmp_path):
    sixteen = image_in_mode("I;16", RNG)
    assert np.array_equal(np.asarray(load_image(save_image(sixteen, tmp_path / "a.png"))), np.asarray(sixteen))
    assert np.array_equal(np.asarray(load_image(save_image(sixteen, tmp_path / "a.tif"))), np.asarray(sixteen))
    floats = image_in_mode("F", RNG)
    assert np.array_equal(np.asarray(load_image(save_image(floats, tmp_path / "f.tif"))), np.asarray(floats))


def test_existing_output_is_refused_without_overwrite(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        save_image(Image.fromarray(_rgb()), path)
    assert path.read_bytes() == b"keep me"
    save_image(Image.fromarray(_rgb()), path, overwrite=True)
    assert load_image(path).size == (8, 8)


def test_unknown_output_format(tmp_path):
    with pytest.raises(ValueError, match="Unknown output format '.xyz'"):
        save_image(Image.fromarray(_rgb()), tmp_path / "out.xyz")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "out.png"
    original = Image.Image.save

    def half_then_fail(self, fp, *args, **kwargs):
        original(self, fp, *args, **kwargs)  # a complete temporary file exists ...
        raise OSError("disk full")  # ... when the encoder fails

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_image(Image.fromarray(_rgb()), path)
    assert os.listdir(path.parent) == []

    path.write_bytes(b"old")  # an existing file survives a failed overwrite
    with pytest.raises(OSError, match="disk full"):
        save_image(Image.fromarray(_rgb()), path, overwrite=True)
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["out.png"]


def test_imageio_exports():
    assert {"load_image", "prepare", "restore", "save_image"} <= set(imageio.__all__)


# headers read before decoding (2), big-endian arrays (13), multi-frame files and 16-bit gray+alpha (25).


def _png16_header(path, width: int, height: int, colour_type: int = 6) -> None:
    """A PNG whose header claims `width` x `height` 16-bit pixels; its pixel data is a few bytes (never decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_read_header_gives_size_and_depth_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    _png16_header(path, 9400, 9400)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("read_header decoded pixels"))
    header = imageio.read_header(path)
    assert (header.width, header.height, header.mode, header.bits, header.channels) == (9400, 9400, "RGBA", 16, 4)
    assert header.decoded_bytes == 9400 * 9400 * 4 * 2 and header.frames == 1


def test_read_header_is_upright_and_names_bad_files(tmp_path):
    image = Image.fromarray(_rgb(3, 5))
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways
    image.save(tmp_path / "phone.jpg", exif=exif)
    header = imageio.read_header(tmp_path / "phone.jpg")
    assert (header.width, header.height) == load_image(tmp_path / "phone.jpg").size == (3, 5)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png' is not an image"):
        imageio.read_header(tmp_path / "text.png")
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block for ever
    with pytest.raises(ValueError, match="pipe.png' is not a regular file"):
        imageio.read_header(tmp_path / "pipe.png")
    with pytest.raises(ValueError, match="pipe.png' is not a regular file"):
        load_image(tmp_path / "pipe.png")
    assert imageio.peek_sizes(tmp_path / "pipe.png") == []


@pytest.mark.parametrize("dtype", [">u2", ">f4", ">f8"])
def test_big_endian_arrays_are_read_like_native_ones(dtype):
    native = RNG.integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    if dtype != ">u2":
        native = native.astype(np.float64) / 65535
    (big,) = prepare(native.astype(dtype))
    (same,) = prepare(native.astype(np.dtype(dtype).newbyteorder("=")))
    assert torch.equal(big.rgb, same.rgb) and big.bits == same.bits
    assert restore(big.rgb, big).dtype.isnative


@pytest.mark.parametrize("suffix", [".gif", ".png", ".tif"])
def test_multi_frame_files_warn_that_only_frame_0_is_used(tmp_path, suffix):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / f"anim{suffix}", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match=r"holds 3 frames .*only the first is used"):
        image = load_image(tmp_path / f"anim{suffix}")
    assert np.asarray(image.convert("RGB"))[0, 0, 0] == 10
    assert imageio.read_header(tmp_path / f"anim{suffix}").frames == 3


def test_16_bit_gray_alpha_keeps_16_bits(tmp_path):
    pixels = RNG.integers(0, 65536, (5, 7, 2)).astype(np.uint16)
    path = save_image(pixels, tmp_path / "ga.png")
    assert imageio.read_header(path).bits == 16 and imageio.read_header(path).mode == "LA"
    back = imageio.read_image(path)
    assert back.dtype == np.uint16 and np.array_equal(back, pixels)
    (prep,) = prepare(back)
    assert prep.gray and prep.alpha is not None and prep.bits == 16
    assert np.array_equal(restore(prep.rgb, prep), pixels)  # through the model's tensors and back, all 16 bits
