"""Ctrl-C that cannot be lost during a command's setup.

Python ignores an exception raised inside a garbage-collection callback or a `__del__` (it
prints "Exception ignored in ..." and goes on), so a KeyboardInterrupt from the default SIGINT
handler that lands there is dropped and the command goes on as if never interrupted (seen in
CI: a Ctrl-C while data was generated hit jax's `_xla_gc_callback`). The handler `catch_ctrl_c`
installs sees where the signal landed: inside such a finaliser it raises nothing there and
raises the KeyboardInterrupt again 50 ms later, outside it (a SIGALRM timer). It also records
the interrupt, and `raise_pending` raises it once more at the points that ask (the training loop
asks before it writes the workdir and before its first step), should it still have been lost.
"""

from __future__ import annotations

import gc
import signal

RETRY_S = 0.05
_pending = False


def _in_a_finaliser(frame) -> bool:
    """Is `frame` (or a caller) a `__del__` or a gc callback, whose exceptions Python ignores?"""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False


def _interrupt(signum, frame):
    global _pending
    _pending = True
    if _in_a_finaliser(frame) and hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)  # _retry raises it once the finaliser has returned
        return
    raise KeyboardInterrupt


def _retry(signum, frame):
    if _pending:
        _interrupt(signal.SIGINT, frame)


def catch_ctrl_c() -> None:
    """Install the handler (main thread only, as signal.signal requires)."""
    global _pending
    _pending = False
    signal.signal(signal.SIGINT, _interrupt)
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _retry)


def raise_pending() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived and has not reached its handler."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def clear() -> None:
    """Forget a Ctrl-C already handled (its KeyboardInterrupt reached a handler)."""
    global _pending
    _pending = False
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
