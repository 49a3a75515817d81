"""Model names and paths -> files on disk (local folder or safetensors file; names via the manifest)."""

from __future__ import annotations

from pathlib import Path

from .weights import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["resolve_model_files"]


def resolve_model_files(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
) -> tuple[Path | None, Path]:
    """Return `(config.json or None, model.safetensors)` for a local folder, a `.safetensors` file or a model name."""
    path = Path(name_or_path)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"Model folder {str(path)!r} has no {WEIGHTS_NAME}; expected {CONFIG_NAME} + {WEIGHTS_NAME}.")
        config = path / CONFIG_NAME
        return (config if config.is_file() else None), weights
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {str(path)!r} does not exist.")
        return None, path
    raise ValueError(f"Unknown model {str(name_or_path)!r}: not a model folder or .safetensors file.")


def list_models() -> list[str]:
    """One line per known model (filled in from the manifest)."""
    return []
