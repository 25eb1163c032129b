"""Ctrl-C that cannot be lost during a command's setup.

Python ignores an exception raised inside a garbage-collection callback or a `__del__` (it
prints "Exception ignored in ..." and goes on), so a KeyboardInterrupt from the default SIGINT
handler that lands there is dropped: the command would go on as if never interrupted (seen in
CI: a Ctrl-C while data was generated hit jax's `_xla_gc_callback`, and the run trained to the
end). `catch_ctrl_c` installs a handler that also records the interrupt; `raise_pending` raises
it again at the next point that asks (the training loop asks before its first step).
"""

from __future__ import annotations

import signal

_pending = False


def _interrupt(signum, frame):
    global _pending
    _pending = True
    raise KeyboardInterrupt


def catch_ctrl_c() -> None:
    """Install the recording SIGINT handler (main thread only, as signal.signal requires)."""
    global _pending
    _pending = False
    signal.signal(signal.SIGINT, _interrupt)


def raise_pending() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived and was swallowed where it was raised."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def clear() -> None:
    """Forget a Ctrl-C already handled (its KeyboardInterrupt reached a handler)."""
    global _pending
    _pending = False
