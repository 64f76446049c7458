"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Every output tfmood writes (models, checkpoints, predictions, reports, audio, shards) goes through
a temporary file beside its destination, renamed over it once complete, so an interrupted job
leaves no truncated file behind and a resumed job can trust what it finds. The temporary name is
hidden, unique to the process and the call, and keeps the destination's extension, for writers
that pick a format from it (Keras `.keras`, soundfile `.wav`).

Paths with a URL scheme (`gs://...`) go through `tf.io.gfile`, whose rename is atomic on local
file systems and a copy-then-delete on object stores (which have no partial objects).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
from typing import BinaryIO, Iterator

# Extensions of more than one part that writers check for (Keras weights files).
COMPOUND_EXTENSIONS = (".weights.h5",)


def _is_url(path: str) -> bool:
    return "://" in path


def _split_extension(name: str) -> tuple[str, str]:
    for extension in COMPOUND_EXTENSIONS:
        if name.endswith(extension):
            return name[: -len(extension)], extension
    return os.path.splitext(name)


@contextlib.contextmanager
def temporary_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside `path`, renamed over `path` when the block ends without error.

    The folder of `path` is created when missing; on an error the temporary file is removed and
    `path` is left as it was.

    Example:
    >>> with temporary_path(os.path.join(folder, "model.keras")) as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, extension = _split_extension(name)
    temp = os.path.join(folder, f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{extension}")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


@contextlib.contextmanager
def open_binary(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A new binary file whose contents replace `path` when the block ends without error.

    Example:
    >>> with open_binary(os.path.join(folder, "scores.npy")) as handle:  # doctest: +SKIP
    ...     np.save(handle, scores, allow_pickle=False)
    """
    with temporary_path(path) as temp, open(temp, "xb") as handle:
        yield handle


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files of `path` left by killed processes; returns their paths.

    Only for a path no other live process writes: a writer's temporary file would go too.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    stem, extension = _split_extension(name)
    pattern = os.path.join(folder, f".{glob.escape(stem)}.*.*.tmp{glob.escape(extension)}")
    stale = glob.glob(pattern)
    for temp in stale:
        os.remove(temp)
    return stale


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (local path or `tf.io.gfile` URL)."""
    path = os.fspath(path)
    if _is_url(path):
        import tensorflow as tf

        temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with tf.io.gfile.GFile(temp, "wb") as handle:
            handle.write(data)
        tf.io.gfile.rename(temp, path, overwrite=True)
        return
    with open_binary(path) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value, indent: int = 2) -> None:
    """Write `value` as JSON (with a final newline) to `path` atomically."""
    write_text(path, json.dumps(value, indent=indent) + "\n")


def save_npy(path: str | os.PathLike, array) -> None:
    """Write `array` as a `.npy` file (no pickled objects) to `path` atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def save_model(model, path: str | os.PathLike) -> None:
    """Save a Keras model (`.keras`, or `.weights.h5` weights) to `path` atomically."""
    path = os.fspath(path)
    with temporary_path(path) as temp:
        if path.endswith(".weights.h5"):
            model.save_weights(temp)
        else:
            model.save(temp)
