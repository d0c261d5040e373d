"""A signal's exception, kept until the work it interrupts has ended.

The CLI's handlers raise ``KeyboardInterrupt`` (Ctrl-C) or ``Terminated`` (SIGTERM) wherever the main thread is.
A library's bare ``except:`` can swallow it there (Keras' ``pythonify_logs``, run at every epoch's end, has one):
training would go on, and since the SIGTERM handler acts only once, every later SIGTERM would be ignored too, until
``docker stop`` or Slurm kills the process. So the handlers record the exception here, and ``check()``, called at
every epoch's end and as every training starts, raises it again while it is pending. ``clear()`` forgets it: the CLI
calls it when it starts and when it returns (tests run it in-process, one command after another).

``Interrupts`` holds such a signal back while a search library (Optuna, keras-tuner) writes its books, and lets it
act while a model trains.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class Interrupts:
    """Ctrl-C and SIGTERM held back while a search library keeps its books, and let through while a model trains.

    A signal's exception raised inside Optuna's ``study.tell`` or keras-tuner's state writes would leave a trial
    running in the store, or the state cut short. ``held()`` (around the search) records such a signal instead of
    acting on it, and calls ``on_hold(signum)`` (the search can make its slow requests fail fast from then on);
    ``passed()`` (around one training) first acts on a recorded one, as the handler in place before would have (a
    ``KeyboardInterrupt``, the CLI's SIGTERM), then lets signals act at once until the training ends; when ``held()``
    ends it acts on one still recorded. Handlers can only be set in the main thread: elsewhere signals act as they
    would without this.
    """

    signums: tuple = (signal.SIGINT, signal.SIGTERM)
    on_hold: Callable[[int], None] | None = None
    before: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)

    @contextlib.contextmanager
    def held(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def record(signum, frame):
            self.pending.append((signum, frame))
            if self.on_hold is not None:
                self.on_hold(signum)

        self.before = {n: signal.signal(n, record) or signal.SIG_DFL for n in self.signums}
        try:
            yield self
        finally:
            for n, h in self.before.items():
                signal.signal(n, h)
            self.before = {}
            self._deliver()

    @contextlib.contextmanager
    def passed(self):
        if not self.before:
            yield
            return
        holding = {n: signal.signal(n, h) for n, h in self.before.items()}
        try:
            self._deliver()
            yield
        finally:  # back to holding: ``before`` is only emptied when ``held`` ends, after every training
            for n, h in holding.items():
                signal.signal(n, h)

    def _deliver(self) -> None:
        """Act on the first recorded signal as the handler in place before ``held`` (in place again now) would."""
        if not self.pending:
            return
        signum, frame = self.pending[0]
        self.pending.clear()
        handler = signal.getsignal(signum)
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            signal.raise_signal(signum)
