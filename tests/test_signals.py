"""Ctrl-C and SIGTERM as one event, in this process: held during imports, never lost in a finaliser, and the
process's own handlers back after each command."""

import gc
import importlib
import os
import signal
import sys
import time

import pytest

from occnet.runtime import signals


def wait_for_interrupt() -> None:
    """Sleep in short steps until a KeyboardInterrupt arrives (fails after 60 s without one)."""
    for _ in range(600):
        time.sleep(0.1)
    pytest.fail("no KeyboardInterrupt within 60 s")


def test_a_block_restores_the_handlers_hook_and_record_it_found():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    hook = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt), signals.handled():
        with signals.handled():
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_interrupt()
        assert signals.received() == signal.SIGTERM        # an inner block shares the outer one's record
    assert signals.received() is None
    assert {s: signal.getsignal(s) for s in before} == before and sys.unraisablehook is hook


def test_a_signal_during_an_import_is_raised_when_the_import_is_over(tmp_path, monkeypatch):
    (tmp_path / "slow_module.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\n"
                                              "time.sleep(0.3)\nFINISHED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt), signals.handled():
        importlib.import_module("slow_module")
        assert sys.modules["slow_module"].FINISHED           # the import ran to its end
        wait_for_interrupt()
    assert signals.received() is None
    del sys.modules["slow_module"]


def test_a_signal_swallowed_in_a_finaliser_is_raised_again():
    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)                                  # the handler raises here, where Python must ignore it

    with pytest.raises(KeyboardInterrupt), signals.handled():
        Finalised()
        gc.collect()
        wait_for_interrupt()


def test_an_uninterrupted_block_runs_to_its_end_and_raises_after(tmp_path):
    """scipy's KD-tree query joins threads of its own: interrupted in the join, occ-eval freed arrays they
    still read and died by SIGSEGV."""
    before = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt), signals.uninterrupted():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)                                  # a signal raised here would skip the next line
        finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt), signals.handled():  # inside a command, its record says which came
        try:
            with signals.uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)
                finished.append(2)
        finally:
            assert signals.received() == signal.SIGTERM
    assert finished == [True, 2]


def test_a_signal_the_process_was_started_with_ignored_stays_ignored():
    """``cmd &`` in a script starts it with SIGINT ignored: a command obeyed that until its handlers were in
    place and not after (occ-mesh exited 0 or 130 by when a Ctrl-C came)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), signals.handled():
            with signals.handled():
                assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)                                   # an interrupt raised here fails the test
            assert signals.received() is None
            os.kill(os.getpid(), signal.SIGTERM)                  # SIGTERM was not ignored: still one event
            wait_for_interrupt()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
