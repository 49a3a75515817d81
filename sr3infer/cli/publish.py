"""`sr3infer publish`: a model folder to the Hugging Face Hub, with its manifest entry."""

from __future__ import annotations

import json
import sys

from .options import EXIT_OK, Parser


def cmd_publish(argv: list[str]) -> int:
    parser = Parser(prog="sr3infer publish", description="Upload a model folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="model folder (config.json + model.safetensors [+ README.md])")
    parser.add_argument("--repo-id", required=True, help="Hub repo, owner/name (created if missing)")
    parser.add_argument("--name", help="model name for the manifest entry (default: the repo's name)")
    parser.add_argument("--revision", help="branch to commit to (default main)")
    parser.add_argument("--token", help="Hub token with write access (default $HF_TOKEN or the saved login)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent and the manifest entry; upload nothing")
    args = parser.parse_args(argv)
    from ..hub.fetch import plan_publish, publish_model
    from ..hub.manifest import model_entry_to_dict

    files, entry = plan_publish(args.folder, args.repo_id, name=args.name, revision=args.revision or "main")
    if args.dry_run:
        print(f"would upload {len(files)} files from {args.folder} to {args.repo_id} (revision {entry.revision}):")
        width = max(len(f.name) for f in files)
        for f in files:
            print(f"  {f.name.ljust(width)}  {f.size:>12,} bytes  sha256 {f.sha256}")
        print("manifest entry (publishing replaces revision with the upload's commit):")
    else:
        entry = publish_model(args.folder, args.repo_id, name=args.name, revision=args.revision, token=args.token)
        print(f"published {args.repo_id} at commit {entry.revision}; manifest entry:", file=sys.stderr)
    print(json.dumps({entry.name: model_entry_to_dict(entry)}, indent=2))
    return EXIT_OK
