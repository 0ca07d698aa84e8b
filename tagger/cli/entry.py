"""The `tagger` command's entry point: stoppable from its first moment in a container.

There tagger is PID 1, which the kernel never kills with a signal it has no handler for:
until `tagger watch` installs its own handlers, a `docker stop` during start-up would be
ignored and end in SIGKILL after the grace time (exit 137). So a handler goes in before
the heavy imports, and a SIGTERM then ends the start-up with exit 0: nothing to drain yet.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


def _stopped_while_starting(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    if os.getpid() == 1:
        signal.signal(signal.SIGTERM, _stopped_while_starting)
    from tagger.cli.main import main as run

    run()
