"""A Ctrl-C that arrives while the tool is still starting must not be lost.

apply and resume install their orderly-stop handler (apply/runner.py StopOnSignal) only once the plan is checked and
the locks are held. Before that, two things could lose a SIGINT: a process started with SIGINT ignored (a background
job of a non-interactive shell inherits SIG_IGN, and Python keeps it), and a KeyboardInterrupt raised where Python
swallows it (inside a `__del__` or a garbage-collection callback during the imports), after which the run went on to
the end. The entry points install `_early` before anything heavy is imported: it raises KeyboardInterrupt as Python's
own handler does, so a command that has not started stops there, and it also sets `EARLY`, so that if the exception
was swallowed, StopOnSignal starts stopped (an orderly interruption, journaled) instead of running the plan.
"""

from __future__ import annotations

import signal
import threading

EARLY = threading.Event()


def _early(signum, frame) -> None:
    EARLY.set()
    raise KeyboardInterrupt


def install_early() -> None:
    """Called first by `python -m remediation` and the `remediation` console script (remediation/__main__.py)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _early)
