"""Folders a process cannot read, made real for root as well.

The tests run as root here, and root reads a mode-000 folder all the same. A command run
through `unprivileged` has lost the two capabilities that let root ignore permissions
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so the kernel refuses it such a folder as it
refuses any other user; it still owns, and so may use, everything root made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

_DROP = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@cache
def _can_drop() -> bool:
    if shutil.which("setpriv") is None:
        return False
    return subprocess.run([*_DROP, "true"], capture_output=True, check=False).returncode == 0


def unprivileged(command: list[str]) -> list[str]:
    """`command` as a process that folder permissions apply to (root without its override)."""
    if os.geteuid() != 0:
        return command
    if not _can_drop():
        pytest.skip("needs setpriv (util-linux) allowed to drop root's capabilities")
    return [*_DROP, *command]


@contextmanager
def locked(folder: Path) -> Iterator[Path]:
    """`folder` at mode 000 (as `lost+found` is to everyone but root), given back after."""
    folder.chmod(0)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
