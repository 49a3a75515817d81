"""sr3infer: SR3 image super-resolution (Saharia et al. 2021) with pretrained weights."""

from .cascade import Cascade
from .config import ModelConfig, Recipe
from .outputs import UpscaleOutput
from .samplers import SAMPLERS
from .schedule import NoiseSchedule
from .unet import UNet, UNetConfig
from .upscaler import Upscaler

__all__ = ["Upscaler", "UpscaleOutput", "Cascade", "UNet", "UNetConfig", "ModelConfig", "Recipe", "NoiseSchedule", "SAMPLERS"]
__version__ = "0.1.0"
