"""Runtime: argument checks, devices, fast paths, out-of-memory handling, distributed ranks."""
