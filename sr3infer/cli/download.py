"""`sr3infer download`: a model's files into the Hugging Face cache, sha256 checked, for offline use."""

from __future__ import annotations

import sys

from .options import EXIT_OK, Parser


def cmd_download(argv: list[str]) -> int:
    parser = Parser(prog="sr3infer download",
                    description="Fetch a model's files into the Hugging Face cache and check their sha256, for offline use.")
    parser.add_argument("name", help="model name (see `sr3infer models`)")
    parser.add_argument("--revision", help="Hub branch, tag or commit (default: the manifest's pinned revision)")
    parser.add_argument("--cache-dir", help="Hub cache folder (default $HF_HUB_CACHE, else $HF_HOME/hub)")
    args = parser.parse_args(argv)
    from ..hub.fetch import download_model
    from ..hub.manifest import REQUIRED_FILES, load_manifest

    manifest = load_manifest()
    entry = manifest.get(args.name)
    folder = manifest.bundled_dir(entry.name)
    if not entry.published and entry.bundled and all((folder / f).is_file() for f in REQUIRED_FILES):
        print(f"{entry.name} is bundled with this install ({folder}); nothing to download "
              f"(its Hub repo {entry.repo_id} is not published yet).", file=sys.stderr)
        return EXIT_OK
    for path in download_model(args.name, revision=args.revision, cache_dir=args.cache_dir).values():
        print(path)
    return EXIT_OK
