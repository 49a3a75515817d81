"""Quality: metrics and the per-image fidelity report."""
