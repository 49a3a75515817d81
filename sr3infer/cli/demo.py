"""`sr3infer demo`: the web page to try the models (sr3infer.demo)."""

from __future__ import annotations

from ..errors import UsageError
from .options import EXIT_OK, Parser


def cmd_demo(argv: list[str]) -> int:
    parser = Parser(prog="sr3infer demo", description="Serve a web page to try the models (needs the demo extra: "
                                                      'pip install -e ".[demo]"). Ctrl-C stops it.')
    parser.add_argument("--model", help="a model name or path to offer beside the bundled ones, selected at start "
                                        "(default: the bundled model trained on each upload's size)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    args = parser.parse_args(argv)
    from ..demo import MissingExtra, serve

    try:
        serve(model=args.model, host=args.host, port=args.port)
    except MissingExtra as err:
        raise UsageError(str(err)) from None
    return EXIT_OK
