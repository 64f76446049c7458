"""Melspec .npy files read in part: the header, the file size, and only the frames needed.

An MTG-Jamendo melspec is a whole track, (96, ~10,400) float32 (~4 MB), of which a model reads
the first 1400 frames. A C-order (bands, T) array stores each band's frames contiguously, so the
first N frames are `bands` strided runs of N values; a Fortran-order one stores them as one run.
`read_frames` reads just those runs:

- local paths: `os.preadv` on a file descriptor, straight into the result's memory (it releases
  the GIL, so tf.data threads read in parallel). The kernel is told the access is random
  (`POSIX_FADV_RANDOM`), so that its read-ahead does not pull in the frames between the runs, and
  is given every run up front (`POSIX_FADV_WILLNEED`), so that a file out of the page cache is
  fetched in one round of disk requests rather than one run after the other (BENCHMARKS.md,
  "Reading whole-track melspecs");
- any other tf.io.gfile path (gs://, ...): one ranged read (seek + read of a `tf.io.gfile.GFile`)
  from the first run to the end of the last one. An object store answers each request after a
  round trip, so one request beats one per band even though it carries the frames in between.

Nothing here unpickles: headers are parsed with numpy's format readers and object dtypes refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# The dtypes a melspec may have; any other dtype is reported as a bad file.
NPY_DTYPES = ("<f4", ">f4", "<f8", ">f8", "<f2", ">f2")
HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass(frozen=True)
class NpyLayout:
    """Where the data of a .npy file lies.

    Args:
        offset: bytes before the data (magic string and header).
        dtype: the numpy dtype string, e.g. "<f4".
        rows: mel bands.
        cols: frames.
        fortran_order: column-major data (frames are contiguous runs of `rows` values).
    """

    offset: int
    dtype: str
    rows: int
    cols: int
    fortran_order: bool

    @property
    def data_bytes(self) -> int:
        """The bytes the array's data needs after the header."""
        return self.rows * self.cols * np.dtype(self.dtype).itemsize


def is_local(path: str) -> bool:
    """Whether `path` is on the local file system (no URL scheme such as gs://)."""
    return "://" not in os.fspath(path)


def open_binary(path: str):
    """A binary file object: the builtin `open` for local paths, `tf.io.gfile.GFile` otherwise."""
    return open(path, "rb") if is_local(path) else tf.io.gfile.GFile(path, "rb")


def file_size(path: str) -> int:
    """The size of a file in bytes (FileNotFoundError "missing file" when it is not there)."""
    try:
        return os.stat(path).st_size if is_local(path) else tf.io.gfile.stat(path).length
    except (FileNotFoundError, tf.errors.NotFoundError):
        raise FileNotFoundError("missing file") from None


def read_layout(path: str) -> NpyLayout:
    """Parse the header of a .npy file (2-D, no Python objects); ValueError gives the reason.

    Args:
        path: the .npy file (any tf.io.gfile path).

    Returns:
        Where the data lies and how it is laid out (its size is not checked here).
    """
    with open_binary(path) as handle:
        try:
            version = np.lib.format.read_magic(handle)
        except ValueError:
            raise ValueError("not a .npy file (bad magic string)") from None
        if version not in HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version}")
        try:
            shape, fortran_order, dtype = HEADER_READERS[version](handle)
        except ValueError as error:
            raise ValueError(f"corrupt .npy header ({error})") from None
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError("holds Python objects (refused: loading them would need pickle)")
    if len(shape) != 2:
        raise ValueError(f"{len(shape)}-D array of shape {shape}, expected 2-D (mel bands, frames)")
    return NpyLayout(int(offset), dtype.str, int(shape[0]), int(shape[1]), bool(fortran_order))


def frame_runs(layout: NpyLayout, n_frames: int) -> list[tuple[int, int]]:
    """The (offset, length) byte runs holding the first `n_frames` frames (n_frames <= cols).

    Args:
        layout: the file's layout.
        n_frames: how many leading frames.
    """
    itemsize = np.dtype(layout.dtype).itemsize
    if layout.fortran_order or n_frames == layout.cols:
        return [(layout.offset, layout.rows * n_frames * itemsize)]  # one contiguous run
    row_bytes = layout.cols * itemsize
    return [(layout.offset + row * row_bytes, n_frames * itemsize) for row in range(layout.rows)]


def _read_runs_local(path: str, runs: list[tuple[int, int]], buffer: memoryview) -> int:
    """Read the runs one after the other into `buffer` (no intermediate copies); bytes read."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        if len(runs) > 1 and hasattr(os, "posix_fadvise"):
            # No read-ahead of the frames between the runs, and all the runs requested at once,
            # so that a file not in the page cache costs one round of disk reads, not one per run.
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_RANDOM)
            for offset, length in runs:
                os.posix_fadvise(descriptor, offset, length, os.POSIX_FADV_WILLNEED)
        done = 0
        for offset, length in runs:
            got = os.preadv(descriptor, [buffer[done : done + length]], offset)
            done += got
            if got < length:
                break
        return done
    finally:
        os.close(descriptor)


def _read_runs_gfile(path: str, runs: list[tuple[int, int]], buffer: memoryview) -> int:
    """Read the span covering every run in one request, then keep the runs; bytes kept."""
    first = runs[0][0]
    with tf.io.gfile.GFile(path, "rb") as handle:
        handle.seek(first)
        span = handle.read(runs[-1][0] + runs[-1][1] - first)
    done = 0
    for offset, length in runs:
        chunk = span[offset - first : offset - first + length]
        buffer[done : done + len(chunk)] = chunk
        done += len(chunk)
        if len(chunk) < length:
            break
    return done


def read_frames(path: str, layout: NpyLayout, n_frames: int | None = None) -> np.ndarray:
    """The first `n_frames` frames of a .npy melspec as float32 (rows, min(n_frames, cols)).

    Only the bytes of those frames are read (see the module docstring).

    Args:
        path: the .npy file (any tf.io.gfile path).
        layout: its layout (`read_layout`).
        n_frames: how many leading frames; None for all of them.

    Raises:
        ValueError: the file ends before the frames (it was truncated after its header was read).
    """
    count = layout.cols if n_frames is None else min(int(n_frames), layout.cols)
    runs = frame_runs(layout, count)
    expected = sum(length for _, length in runs)
    data = np.empty(expected, dtype=np.uint8)
    # os.preadv is POSIX only; elsewhere local files take the tf.io.gfile path too.
    read = _read_runs_local if is_local(path) and hasattr(os, "preadv") else _read_runs_gfile
    got = read(path, runs, memoryview(data))
    if got != expected:
        raise ValueError(f"{path}: truncated: read {got} of {expected} bytes of its frames")
    flat = data.view(np.dtype(layout.dtype))
    if layout.fortran_order:
        mel = flat.reshape((count, layout.rows)).T
    else:
        mel = flat.reshape((layout.rows, count))
    # A no-op for C-order little-endian float32, the official files' layout.
    return np.ascontiguousarray(mel, dtype=np.float32)
