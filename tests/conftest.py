import os
from pathlib import Path

# Quiet TensorFlow's start-up logging in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"


@pytest.fixture
def reference_dir():
    """../shared/reference, or a skip that says why (a user's clone has no shared folder)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference files not found at {REFERENCE} (only present beside the main repo)")
    return REFERENCE
