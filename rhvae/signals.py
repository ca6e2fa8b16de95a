"""SIGTERM and SIGHUP handled as Ctrl-C is: a ``kill`` (or a closed terminal) stops a training, a notebook runner
or a sweep through the same clean-up as Ctrl-C (no half-written file, no child left running), with its own exit
status, 128 + the signal's number (143 for SIGTERM, 129 for SIGHUP, 130 for SIGINT)."""

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator

#: The signals that stop a run as Ctrl-C does, besides SIGINT itself.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: prctl(2) option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: a ``KeyboardInterrupt``, so that every clean-up written for Ctrl-C runs."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def interrupt(signum: int) -> KeyboardInterrupt:
    """The exception that stands for the signal ``signum``: ``KeyboardInterrupt`` for SIGINT, else ``Terminated``."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def exit_status(interrupt: BaseException) -> int:
    """The exit status a shell reports for the signal behind ``interrupt`` (a ``KeyboardInterrupt``, or an exception
    raised from one): 128 + its number, 130 for Ctrl-C."""
    while interrupt is not None:
        if isinstance(interrupt, Terminated):
            return 128 + interrupt.signum
        interrupt = interrupt.__cause__ or interrupt.__context__
    return 128 + signal.SIGINT


def signal_word(status: int) -> str:
    """How a summary names a run stopped with exit status ``status``: INTERRUPTED (Ctrl-C), TERMINATED (SIGTERM,
    SIGHUP)."""
    return "INTERRUPTED" if status == 128 + signal.SIGINT else "TERMINATED"


@contextlib.contextmanager
def handlers(handler, signums=(signal.SIGINT, *STOP_SIGNALS)) -> Iterator[None]:
    """``handler`` for each of ``signums`` inside the block, the previous handlers restored after it. Only the main
    thread can set one (a Dask worker runs jobs in a thread); elsewhere the block runs unchanged, as signals reach
    the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def stop_signals_as_interrupts():
    """A block in which SIGTERM and SIGHUP raise ``Terminated`` where Ctrl-C raises ``KeyboardInterrupt``."""
    return handlers(_raise_terminated, STOP_SIGNALS)


def stop_with_parent() -> None:
    """SIGTERM to this process when its parent dies (Linux; elsewhere nothing), so that a parent killed by SIGKILL,
    which can clean up nothing, leaves no child of it running."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        pass
