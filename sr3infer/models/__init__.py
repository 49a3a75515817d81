"""Models: the U-Net, its registry, model configs, weight files and checkpoint import."""
