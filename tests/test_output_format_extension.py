"""Adding an output file format is one file plus one registry line: the format is registered in Pillow's
registry here, in the test alone, and the library writes it through `save_image` and the batch runner."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from sr3infer import imageio
from sr3infer.batch import upscale_files

MAGIC = b"TOY1"


def _save_toy(image: Image.Image, handle, filename) -> None:
    """A toy format: magic, width, height (little-endian uint32), then the RGB bytes."""
    rgb = image.convert("RGB")
    handle.write(MAGIC + struct.pack("<II", *rgb.size) + rgb.tobytes())


def _read_toy(path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:4] == MAGIC
    width, height = struct.unpack("<II", data[4:12])
    return np.frombuffer(data[12:], np.uint8).reshape(height, width, 3)


@pytest.fixture
def toy_format():
    Image.register_save("TOYFMT", _save_toy)  # the one registry line (with its extension)
    Image.register_extension("TOYFMT", ".toy")
    yield "TOYFMT"
    Image.SAVE.pop("TOYFMT", None)
    Image.EXTENSION.pop(".toy", None)


def test_an_unregistered_suffix_is_refused_before_any_work(tmp_path, tiny_upscaler):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="Unknown output format '.toy'"):
        upscale_files(tiny_upscaler, tmp_path / "a.png", tmp_path / "out.toy", num_steps=1, progress=False)
    assert not (tmp_path / "out.toy").exists()


def test_a_registered_format_is_written_by_save_image_and_the_batch_runner(tmp_path, tiny_upscaler, toy_format):
    assert imageio.output_format(tmp_path / "x.toy") == toy_format
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    summary = upscale_files(tiny_upscaler, tmp_path / "a.png", tmp_path / "out.toy", num_steps=1, seed=0,
                            progress=False)
    assert summary.failed == 0
    written = _read_toy(tmp_path / "out.toy")
    expected = tiny_upscaler.upscale(Image.open(tmp_path / "a.png"), num_steps=1, seed=0, progress=False)
    np.testing.assert_array_equal(written, np.asarray(expected))
