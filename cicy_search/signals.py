"""A signal's exception, kept until the work it interrupts has ended.

The CLI's handlers raise ``KeyboardInterrupt`` (Ctrl-C) or ``Terminated`` (SIGTERM) wherever the main thread is.
A library's bare ``except:`` can swallow it there (Keras' ``pythonify_logs``, run at every epoch's end, has one):
training would go on, and since the SIGTERM handler acts only once, every later SIGTERM would be ignored too, until
``docker stop`` or Slurm kills the process. So the handlers record the exception here, and ``check()``, called at
every epoch's end and as every training starts, raises it again while it is pending. ``clear()`` forgets it: the CLI
calls it when it starts and when it returns (tests run it in-process, one command after another).
"""

from __future__ import annotations

_pending: list[BaseException] = []


def pending(exc: BaseException) -> BaseException:
    """Record ``exc`` (the first one only: the signal that started the exit) and return it, for the handler to raise."""
    if not _pending:
        _pending.append(exc)
    return _pending[0]


def is_pending() -> bool:
    """Whether a signal came and its exit is under way."""
    return bool(_pending)


def check() -> None:
    """Raise the recorded signal's exception again, if a signal came: work that went on after it was swallowed."""
    if _pending:
        raise _pending[0]


def clear() -> None:
    _pending.clear()
