"""Sampling: noise schedules, predictions, samplers, tiling, ensembles and the preset rule."""
