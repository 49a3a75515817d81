"""Bridges to engines that run sr3infer at scale (`ray`: `Upscale`, for `Dataset.map_batches`)."""
