"""`sr3infer train`: training from a JSON config (sr3infer.train.loop)."""

from __future__ import annotations


def cmd_train(argv: list[str]) -> int:
    from ..train.loop import main

    return main(argv)
