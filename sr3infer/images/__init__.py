"""Images: reading, preparing, resampling, metadata and writing image files."""
