"""tagger: an offline photo-tagging daemon."""

import sys

__version__ = "0.1.0"

# Nothing leaves the machine. `import openvino` otherwise forks a process that sends a
# usage event to Google Analytics and writes a client id under ~/intel (on unless the user
# opted out), and NNCF reports each quantisation the same way. Both fall back to a
# no-op when openvino_telemetry cannot be imported, and this makes it so in every tagger
# process, before either is imported.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
