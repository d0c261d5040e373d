"""A Ctrl-C or SIGTERM that a library swallows (a bare ``except:``, as Keras' ``pythonify_logs`` has) still ends
the training it interrupted, at the end of that epoch: with the CLI's own handlers, real Keras training."""

import os
import signal
import time

import keras
import pytest

from cicy_search import cli, signals, tracking, training

from .conftest import run_cli, tiny


class Swallows(keras.callbacks.Callback):
    """At the end of epoch ``at``, the signal lands inside a bare ``except:`` and its exception is dropped."""

    def __init__(self, signum: int, at: int):
        super().__init__()
        self.signum, self.at, self.ended = signum, at, []

    def on_epoch_end(self, epoch, logs=None):
        self.ended.append(epoch)
        if epoch == self.at:
            try:
                os.kill(os.getpid(), self.signum)
                time.sleep(2)  # the handler runs here, and raises
            except BaseException:  # noqa: BLE001 - what the library does
                pass


@pytest.fixture
def cli_handlers():
    before = {n: signal.signal(n, h) for n, h in ((signal.SIGTERM, cli._on_sigterm), (signal.SIGINT, cli._on_sigint))}
    try:
        yield
    finally:
        for n, h in before.items():
            signal.signal(n, h)
        cli._terminated.clear()
        signals.clear()
        tracking.interrupted(False)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, cli.Terminated), (signal.SIGINT, KeyboardInterrupt)], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("at", [0, 2])
def test_a_swallowed_signal_ends_the_training_at_that_epochs_end(cli_handlers, signum, raised, at):
    swallows = Swallows(signum, at)
    with pytest.raises(raised):
        training.fit(tiny(epochs=30), callbacks=[swallows])
    assert swallows.ended == list(range(at + 1))  # not one epoch more
    # ... and before any later training, until the command returns and forgets it
    with pytest.raises(raised):
        training.fit(tiny(epochs=1))


def test_a_second_sigterm_after_a_swallowed_one_is_still_no_silent_exit(cli_handlers):
    swallows = Swallows(signal.SIGTERM, 0)
    with pytest.raises(cli.Terminated) as first:
        training.fit(tiny(epochs=30), callbacks=[swallows])
    os.kill(os.getpid(), signal.SIGTERM)  # the handler acts once: this one is ignored, the first is still pending
    with pytest.raises(cli.Terminated) as again:
        signals.check()
    assert again.value is first.value and str(first.value) == "terminated by SIGTERM"


def test_the_cli_forgets_a_signal_when_it_returns(capsys):
    signals.pending(KeyboardInterrupt())
    assert run_cli("--help") == 0
    signals.check()  # nothing pending: a test (or an embedding program) running the CLI again trains normally
    assert "Usage" in capsys.readouterr().out


# A process whose command gets SIGTERM while a thread nobody stops is running (Optuna's heartbeat thread is no
# daemon: a signal raised as Optuna starts or stops it leaves it beating): the command's line, then the exit.
HELD_OPEN = """import os, signal, sys, threading, time
from cicy_search import cli, tracking

tracking.INTERRUPTED_FLUSH_SECONDS, cli.EXIT_GRACE_SECONDS = 0.5, 0.5  # nothing to flush: no need to wait 15 s

threading.Thread(target=threading.Event().wait, name="left-running").start()

def app(**kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

cli.app = app
sys.argv = ["cicy-search", "study", "run", "x.yaml"]
cli.main()
"""


def test_a_signalled_command_exits_even_with_a_thread_left_running():
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", HELD_OPEN], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 128 + signal.SIGTERM
    assert done.stderr.strip().splitlines() == [
        "terminated (SIGTERM): a running trial is marked failed in Optuna and MLflow; run the same command to resume"
    ]


@pytest.mark.parametrize("signum, code, said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")])
@pytest.mark.parametrize("then", [UnboundLocalError, RuntimeError, ValueError])
def test_an_error_raised_while_a_signal_ends_the_command_is_the_signals_line(monkeypatch, capsys, signum, code, said, then):
    """Cleanup code that the signal's exception interrupts can fail on its own: Optuna's ``_run_trial`` reads, in its
    ``finally``, a variable that a signal inside ``study.tell`` left unset. The command ends as the signal says."""

    def app(**kwargs):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs here, and raises
        finally:
            raise then("cannot access local variable 'updated_state' where it is not associated with a value")

    monkeypatch.setattr(cli, "app", app)
    assert run_cli("study", "run", "x.yaml") == code
    err = capsys.readouterr().err
    assert err.strip().splitlines()[0].startswith(said) and "Traceback" not in err and "updated_state" not in err


def test_an_error_without_a_signal_is_still_raised(monkeypatch):
    def app(**kwargs):
        raise UnboundLocalError("a bug of ours")

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(UnboundLocalError, match="a bug of ours"):
        run_cli("study", "run", "x.yaml")


def test_signals_wait_while_a_search_library_keeps_its_books_and_act_as_a_model_trains():
    """A Ctrl-C or SIGTERM that comes while keras-tuner or Optuna writes its state is held until the next training
    starts (or the search ends), then acts as the handler in place before would; during a training it acts at once.
    ``on_hold`` hears of each held signal as it comes."""
    terms = []
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda n, f: terms.append(n))}
    try:
        heard = []
        interrupts = signals.Interrupts(on_hold=heard.append)
        with pytest.raises(KeyboardInterrupt):
            with interrupts.held():
                signal.raise_signal(signal.SIGINT)  # held: keras-tuner's books are being written
                assert heard == [signal.SIGINT]
                with pytest.raises(KeyboardInterrupt):
                    with interrupts.passed():  # the next training starts: the Ctrl-C acts now
                        pytest.fail("the training ran after a Ctrl-C")
                with interrupts.passed():
                    with pytest.raises(KeyboardInterrupt):
                        signal.raise_signal(signal.SIGINT)  # during a training: at once
                signal.raise_signal(signal.SIGTERM)
                assert terms == []
                with interrupts.passed():
                    assert terms == [signal.SIGTERM]  # the CLI's SIGTERM handler, as it was
                signal.raise_signal(signal.SIGINT)
            pytest.fail("a Ctrl-C held at the search's end was lost")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and terms == [signal.SIGTERM]
        assert heard == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]  # not the one during a training
    finally:
        for n, h in previous.items():
            signal.signal(n, h)
