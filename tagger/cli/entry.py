"""The `tagger` command's entry point: stoppable from its first moment in a container.

There tagger is PID 1, which the kernel never kills with a signal it has no handler for:
until `tagger watch` installs its own handlers, a `docker stop` during start-up would be
ignored and end in SIGKILL after the grace time (exit 137). So a handler goes in before
the heavy imports. A daemon stopped while starting has nothing to drain: exit 0. Any
other command was cut short: 143, as a shell reports a SIGTERM.

The imports leave some 200,000 objects that live as long as the process: collecting them
while importing, and again at every full collection after, is a quarter of a short
command's time (`tagger query`). So the collector waits for the imports and then leaves
what they made alone (`gc.freeze`).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType


def _exit_with(code: int) -> Callable[[int, FrameType | None], None]:
    def stopped(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(code)

    return stopped


def main() -> None:
    if os.getpid() == 1:
        daemon = "watch" in sys.argv[1:]
        signal.signal(signal.SIGTERM, _exit_with(0 if daemon else 128 + signal.SIGTERM))
    gc.disable()
    from tagger.cli.main import main as run

    gc.freeze()
    gc.enable()
    run()
