"""tagger: an offline photo-tagging daemon."""

import os
import sys

__version__ = "0.1.0"

# Nothing leaves the machine, but two runtimes report usage unless told not to, and this
# tells them in every tagger process (and its children) before either is imported:
# - ONNX Runtime (1DS telemetry, on Linux too) records an event with the OS, CPU and a
#   device id in ~/.cache/Microsoft/DeveloperTools/ at import, for upload to Microsoft;
#   ORT_DISABLE_TELEMETRY=1 stops it. A user's own setting wins.
# - `import openvino` forks a process that sends a Google Analytics event and writes a
#   client id to ~/intel/; NNCF reports each quantisation the same way. Both fall back
#   to a no-op when openvino_telemetry cannot be imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
