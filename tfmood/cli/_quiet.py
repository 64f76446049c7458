"""TensorFlow's native start-up and converter logs kept off the terminal.

TensorFlow 2.21 writes its C++ log lines (oneDNN notices, "Could not find cuda drivers", CPU
feature guards) to file descriptor 2 through absl, before
and regardless of `TF_CPP_MIN_LOG_LEVEL`. `filter_native_logs()` points descriptor 2 at a pipe
and forwards everything to the real stderr except those lines: Python tracebacks, warnings,
progress bars and tfmood's own messages pass through unchanged.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl/glog lines ("I0000 00:00:17.. 123 file.cc:45] ..." and the older "2026-12-03 04:27:49.46:
# E tensorflow/...cc:248] ..."), absl's pre-init notice, the CPU feature guard's second line.
NATIVE_LOG = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWEF] [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)


def is_native_log(line: bytes) -> bool:
    """Whether a line of stderr is one of TensorFlow's native log lines."""
    return bool(NATIVE_LOG.match(line))


def filter_native_logs() -> None:
    """Drop TensorFlow's native log lines from this process's stderr from now on."""
    real = os.dup(2)
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, real), daemon=True)
    thread.start()

    def close() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the forwarder sees EOF
        thread.join(timeout=5)

    atexit.register(close)


def _forward(read_end: int, real: int) -> None:
    pending = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line + b"\n" for line in lines if not is_native_log(line)]
        # A partial line (a progress bar's carriage-return update) goes out at once, unless it
        # may be the start of a native line still being written.
        if pending and not pending[:1] in b"IWEFT2":
            kept.append(pending)
            pending = b""
        if kept:
            os.write(real, b"".join(kept))
    if pending and not is_native_log(pending):
        os.write(real, pending)
    os.close(read_end)
