"""The model hub: the weights manifest, downloads, the cache and publishing."""
