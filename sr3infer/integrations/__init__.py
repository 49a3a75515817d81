"""Bridges to engines that run sr3infer at scale; each module imports its engine only where it is used.

`sr3infer.integrations.ray`: `Upscale`, a callable class for `ray.data.Dataset.map_batches` (extra `sr3infer[ray]`).
"""
