"""Where the benchmarks find the datasets, and one line instead of a traceback when they are not there.

The datasets are ../shared/datasets beside the repository, else .data/datasets, which
`python scripts/prepare_datasets.py` builds with the same files (the training configs look in the same places).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = (REPO.parent / "shared" / "datasets", REPO / ".data" / "datasets")
DATASETS = next((root for root in ROOTS if root.is_dir()), ROOTS[0])


def require(*folders: str | Path) -> None:
    """Exit with one line naming the first of `folders` that is not a folder, and how to get the datasets."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise SystemExit(
                f"{Path(sys.argv[0]).name}: the dataset folder {folder} does not exist. The benchmarks read "
                f"{ROOTS[0]}, else {ROOTS[1]}; `python scripts/prepare_datasets.py` builds the latter "
                "(about 360 MB of downloads, sha256-checked).")
