"""sr3infer: SR3 image super-resolution (Saharia et al. 2021) with pretrained weights."""

from importlib import metadata as _metadata

from .batch import upscale_files
from .cascade import Cascade
from .errors import Cancelled
from .models.config import ModelConfig, Recipe
from .models.unet import UNet, UNetConfig
from .outputs import UpscaleOutput
from .plan import CallPlan, PassPlan
from .sampling.samplers import SAMPLERS
from .sampling.schedule import NoiseSchedule
from .upscaler import Upscaler

__all__ = ["Upscaler", "UpscaleOutput", "Cascade", "upscale_files", "Cancelled", "UNet", "UNetConfig", "ModelConfig",
           "Recipe", "NoiseSchedule", "SAMPLERS", "CallPlan", "PassPlan"]
try:
    __version__ = _metadata.version("sr3infer")  # the installed package's version (pyproject.toml)
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
