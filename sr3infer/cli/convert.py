"""`sr3infer convert`: a community SR3 checkpoint (*_gen.pth or .safetensors) -> a model folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError
from .options import EXIT_OK, Parser


def cmd_convert(argv: list[str]) -> int:
    parser = Parser(prog="sr3infer convert",
                    description="Turn a community SR3 checkpoint (*_gen.pth or .safetensors) into a model folder.")
    parser.add_argument("checkpoint", help="the *_gen.pth (opened with torch.load(weights_only=True)) or .safetensors")
    parser.add_argument("-o", "--output", required=True, help="model folder to write (config.json, model.safetensors, README.md)")
    parser.add_argument("--norm-groups", type=int,
                        help="GroupNorm groups, not stored in checkpoints: 32 for the released 16->128 model (default), 16 for 64->512")
    parser.add_argument("--scale", type=int, default=8, help="output side / input side (default 8, as both released models)")
    parser.add_argument("--image-size", type=int, help="training output size (default: the file's metadata, else 128)")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="tensor type written (default fp32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace those three files where the output folder has them (else nothing is written)")
    args = parser.parse_args(argv)
    for flag, value in (("--norm-groups", args.norm_groups), ("--scale", args.scale), ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o must be a folder; {str(output)!r} is a file")
    import torch

    from ..hub.manifest import sha256_file
    from ..models.checkpoints import conversion_card, load_community_checkpoint
    from ..models.weights import build_model, existing_model_files, save_model_folder

    taken = [] if args.overwrite else existing_model_files(output)
    if taken:
        raise UsageError(f"-o {str(output)!r} already holds {', '.join(taken)}; pass --overwrite to replace them, "
                         "or name a new folder")
    config, state = load_community_checkpoint(args.checkpoint, scale=args.scale, norm_groups=args.norm_groups,
                                              image_size=args.image_size)
    build_model(config, state)  # every tensor must fit the inferred architecture before anything is written
    card = conversion_card(config, args.checkpoint, sha256_file(args.checkpoint))
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    save_model_folder(output, config, state, dtype=dtype, card=card, overwrite=args.overwrite)
    u = config.network
    print(f"wrote {output}: x{config.scale} {config.lowres_size}->{config.out_size}, inner_channel {u.inner_channel}, "
          f"channel_mults {list(u.channel_mults)}, norm_groups {u.norm_groups}, {len(state)} tensors ({args.dtype})",
          file=sys.stderr)
    return EXIT_OK
