"""The `sr3infer` console command: `sr3infer INPUT -o OUTPUT` upscales; subcommands manage models.

One module per subcommand (`upscale` for the default command); `options` and `recipe_flags` hold what they share.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from typing import Any, Callable

from ..errors import UsageError
from .cascade import cmd_cascade
from .convert import cmd_convert
from .demo import cmd_demo
from .download import cmd_download
from .eval import cmd_eval
from .models import cmd_models
from .options import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .publish import cmd_publish
from .train import cmd_train
from .upscale import build_parser, cmd_upscale

__all__ = ["main", "SUBCOMMANDS", "Terminated", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "models": cmd_models,
    "download": cmd_download,
    "convert": cmd_convert,
    "publish": cmd_publish,
    "train": cmd_train,
    "eval": cmd_eval,
    "cascade": cmd_cascade,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 runtime failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(message)s")
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    with warnings.catch_warnings(), _terminate_like_interrupt():
        warnings.showwarning = _show_warning
        return _run(command, argv, debug)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the run is, so that it unwinds like Ctrl-C (temporary files removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _terminate_like_interrupt:
    """While a command runs, SIGTERM and SIGHUP raise `Terminated` (main thread only; handlers restored after)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __enter__(self) -> None:
        self.previous = {}
        try:
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._raise)
        except ValueError:  # not the main thread: leave signals alone
            pass

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """Library warnings (trained size, long runs, bit depth) as one `sr3infer: warning: ...` line each."""
    print(f"sr3infer: warning: {message}", file=sys.stderr)


def _run(command: Callable[[list[str]], int] | None, argv: list[str], debug: bool) -> int:
    try:
        if command is not None:
            return command(argv[1:])
        if not argv:
            build_parser(sorted(SUBCOMMANDS)).print_help(sys.stderr)
            return EXIT_USAGE
        return cmd_upscale(argv, sorted(SUBCOMMANDS))
    except UsageError as err:
        print(f"sr3infer: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    except Terminated as err:  # the shell's convention: 128 + the signal (SIGTERM 143, SIGHUP 129)
        print(f"sr3infer: terminated by {signal.Signals(err.signum).name}; complete outputs kept, no temporary files",
              file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("sr3infer: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into a message
        if debug:
            raise
        from ..batch import error_line

        print(f"sr3infer: error: {error_line(err)}", file=sys.stderr)
        return EXIT_FAILURE
