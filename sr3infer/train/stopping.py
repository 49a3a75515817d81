"""Stopping a training run cleanly: the first SIGTERM or Ctrl-C sets a flag the loop reads after
each step, leaving `state.pt` and `export/` at that step; a second stops at once."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable, Union

log = logging.getLogger("sr3infer.train")

__all__ = ["StopOnSignal"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# What signal.signal takes and returns: a function, SIG_DFL / SIG_IGN, or None (installed from outside Python).
Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, signal.Handlers, None]


class StopOnSignal:
    """`requested` turns true on the first SIGTERM/SIGINT (main thread only); restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Handler] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second signal: give the previous behaviour back and re-raise it
            self._restore()
            signal.raise_signal(signum)
            return
        self.requested = True
        log.info("%s received: stopping after this step (state and export are saved); send it again to stop now",
                 signal.Signals(signum).name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()
