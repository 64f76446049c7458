"""The command line keeps TensorFlow's native log lines off the terminal unless asked."""

import os
import subprocess
import sys

import pytest

from tfmood.cli._quiet import is_native_log

NATIVE = [
    b"I0000 00:00:1796274597.091130    5076 port.cc:153] oneDNN custom operations are on.",
    b"E0000 00:00:1796272465.766625   12149 cuda_platform.cc:52] failed call to cuInit",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"2026-12-03 04:27:49.462999: E tensorflow/core/common_runtime/base_collective_executor.cc:248]"
    b" BaseCollectiveExecutor::StartAbort",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    b"with the appropriate compiler flags.",
]
KEPT = [
    b"Traceback (most recent call last):",
    b"tfmood train: error: train.tsv: no such file",
    b"\rtraining:  40%|####      | 2/5 [00:01<00:02]",
    b"I think this is fine",
    b"Epoch 1/5",
]


@pytest.mark.parametrize("line", NATIVE)
def test_native_lines_are_recognised(line):
    assert is_native_log(line)


@pytest.mark.parametrize("line", KEPT)
def test_other_lines_are_kept(line):
    assert not is_native_log(line)


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "tfmood", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)  # fmt: skip


def test_commands_are_quiet_and_verbose_shows_the_logs():
    quiet = run_cli("summary", "--preset", "baseline")
    assert quiet.returncode == 0, quiet.stderr
    assert "| conv_1 | Conv2D |" in quiet.stdout
    assert "I0000" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr
    verbose = run_cli("--verbose", "summary", "--preset", "baseline")
    assert verbose.returncode == 0 and "| conv_1 | Conv2D |" in verbose.stdout
    assert "absl::InitializeLog" in verbose.stderr


def test_errors_still_reach_stderr():
    run = run_cli("features", "/no/such/song.mp3", "-o", "/tmp/unused.npy")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "tfmood features: error: /no/such/song.mp3: no such audio file"
    )
