"""Checks of data files before a dataset is built, and the list of the files left out.

Every file of a split is checked in a pre-pass (threads; tf.io.gfile paths, so gs:// works too):

- melspec .npy: exists, parses without pickle, 2-D with `n_mels` rows and at least one frame, a
  float16/32/64 dtype, and as many data bytes as its header promises (a truncated file); then the
  frames that will be used (the first `n_frames`, or all of them when a random crop or the silence
  skip needs the whole track) are read (`tfmood.data.npy_files.read_frames`, only those bytes)
  and must be finite;
- audio: decodes (`tfmood.data.audio.load_audio`), non-empty, finite samples.

A bad file is a `BadFile` (path, track id, reason): by default the first one is a ValueError
naming the file and the reason; with `skip_bad` they are left out, counted in a warning and listed
(path, track id, reason) in a TSV written atomically.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfmood import atomic
from tfmood.data.config import DataConfig
from tfmood.data.metadata import Track
from tfmood.data.npy_files import NPY_DTYPES, NpyLayout, file_size, read_frames, read_layout

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")


@dataclass(frozen=True)
class BadFile:
    """A file left out (or refused): its path, track id and the reason."""

    path: str
    track_id: str
    reason: str


def check_mel(mel: np.ndarray, n_mels: int = 96) -> None:
    """Raise ValueError (the reason) unless `mel` is a finite float (n_mels, frames>0) array.

    Args:
        mel: the array to check.
        n_mels: the number of mel bands (rows) required.
    """
    if mel.ndim != 2:
        raise ValueError(
            f"{mel.ndim}-D array of shape {mel.shape}, expected 2-D (mel bands, frames)"
        )
    if mel.shape[0] != n_mels:
        raise ValueError(f"{mel.shape[0]} mel bands (rows), expected {n_mels}")
    if mel.shape[1] == 0:
        raise ValueError("no frames")
    if not np.issubdtype(mel.dtype, np.floating):
        raise ValueError(f"dtype {mel.dtype} is not floating point")
    if not np.all(np.isfinite(mel)):
        raise ValueError(f"{int(np.size(mel) - np.isfinite(mel).sum())} NaN or inf values")


def inspect_npy(
    path: str, n_mels: int = 96, n_frames: int | None = None
) -> tuple[np.ndarray, NpyLayout]:
    """Check a melspec .npy (no pickle) and load the frames that will be used.

    The header and the file's size are checked for the whole array (a truncated file is bad even
    when its first frames are there); the values (finite, float) only for the first `n_frames`
    frames, the only ones read.

    Args:
        path: the .npy file (any tf.io.gfile path).
        n_mels: the number of mel bands required.
        n_frames: how many leading frames are used; None for all of them.

    Returns:
        Those frames as float32 (n_mels, min(n_frames, frames)) and the file's layout.

    Raises:
        FileNotFoundError, ValueError: the reason (missing, not .npy, truncated, shape, values).
    """
    size = file_size(path)
    layout = read_layout(path)
    if layout.dtype not in NPY_DTYPES:
        raise ValueError(f"dtype {np.dtype(layout.dtype)} is not a float16/32/64 dtype")
    if size - layout.offset < layout.data_bytes:
        raise ValueError(
            f"truncated: {size - layout.offset} data bytes for shape "
            f"({layout.rows}, {layout.cols}) of {np.dtype(layout.dtype)}"
        )
    if layout.rows != n_mels:
        raise ValueError(f"{layout.rows} mel bands (rows), expected {n_mels}")
    if layout.cols == 0:
        raise ValueError("no frames")
    mel = read_frames(path, layout, n_frames)
    check_mel(mel, n_mels)
    return mel, layout


def _reason(error: Exception, path: str) -> str:
    """The reason of a loading error, without the path the message may start with."""
    message = str(error.args[0] if error.args else error).strip()
    return message[len(path) + 2 :] if message.startswith(f"{path}: ") else message


def checked_waveform(path: str) -> np.ndarray:
    """Decode an audio file as the pipeline does (`tfmood.data.audio.load_audio`) and check it.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.

    Returns:
        The 12 kHz mono float32 waveform.

    Raises:
        FileNotFoundError, ValueError: the reason (missing, not audio, corrupt, empty, not finite).
    """
    from tfmood.data.audio import load_audio

    if not path.lower().endswith(AUDIO_EXTENSIONS):
        raise ValueError(f"not one of the audio formats {', '.join(AUDIO_EXTENSIONS)}")
    try:
        waveform = load_audio(path)
    except FileNotFoundError:
        raise FileNotFoundError("missing file") from None
    except (ValueError, RuntimeError, OSError) as error:
        raise ValueError(_reason(error, path)) from None
    if waveform.size == 0:
        raise ValueError("zero-length audio")
    if not np.all(np.isfinite(waveform)):
        raise ValueError("NaN or inf samples")
    return waveform


@functools.cache
def _log_mel_layer(n_mels: int):
    from tfmood.layers.log_mel import LogMel

    return LogMel(n_mels=n_mels)


def audio_mel(path: str, n_mels: int = 96) -> np.ndarray:
    """The checked (n_mels, frames) float32 log-mel of an audio file, as the audio source makes it.

    Args:
        path: the audio file.
        n_mels: the number of mel bands.
    """
    waveform = checked_waveform(path)
    mel = np.asarray(_log_mel_layer(n_mels)(waveform[None, :])[0], dtype=np.float32)
    check_mel(mel, n_mels)
    return mel


def file_path(track: Track, root: str, source: str) -> str:
    """The data file of a track: `root/PATH` with `.npy` (source "npy") or `root/PATH` (audio).

    Args:
        track: a row of a split file.
        root: the melspec or audio root (any tf.io.gfile path).
        source: "npy" or "audio".
    """
    relative = track.npy_path if source == "npy" else track.path
    return tf.io.gfile.join(os.fspath(root), relative)


def _run_checks(
    items: Sequence, check: Callable, threads: int, progress: bool, description: str
) -> list:
    """`check(item)` for every item in a thread pool, in order, with a progress bar."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(check, items)
        return list(tqdm(results, total=len(items), desc=description, disable=not progress))


def outcome(function: Callable, *args):
    """(value, None) or (None, reason) for a check that raises on a bad file."""
    try:
        return function(*args), None
    except (ValueError, OSError) as error:
        return None, str(error)
    except tf.errors.OpError as error:  # e.g. permission denied on a gs:// object
        return None, error.message.strip().splitlines()[0]


@dataclass
class Validation:
    """The result of the pre-pass: the usable tracks (TSV order) and the bad files."""

    tracks: list[Track]
    layouts: list[NpyLayout | None]
    bad: list[BadFile]


def raise_first_bad(bad: Sequence[BadFile]) -> None:
    """Raise the ValueError of the first bad file: its path and reason, and how many more.

    Args:
        bad: the bad files found (at least one).
    """
    first = bad[0]
    more = f" ({len(bad) - 1} more bad files; skip_bad / --skip-bad leaves them out)"
    raise ValueError(f"{first.path}: {first.reason}{more if len(bad) > 1 else ''}")


def validate_files(
    tracks: Sequence[Track],
    root: str,
    source: str,
    config: DataConfig | None = None,
    n_frames: int | None = None,
) -> Validation:
    """Check every file of `tracks` under `root` before a dataset is built.

    Args:
        tracks: rows of a split file.
        root: the melspec root (source "npy") or the audio root (source "audio").
        source: "npy" or "audio".
        config: `n_mels`, `skip_bad`, `io_threads` and `progress` are used (default:
            `DataConfig()`).
        n_frames: the leading frames of each melspec that will be used, whose values are checked
            (None: all of them); the header and size of every file are checked in any case.

    Returns:
        The usable tracks, their .npy layouts (None for audio) and the bad files.

    Raises:
        ValueError: a bad file when `config.skip_bad` is False (message: path and reason).
    """
    if source not in ("npy", "audio"):
        raise ValueError(f"validate_files: source must be 'npy' or 'audio', got {source!r}")
    config = config or DataConfig()

    def check(track: Track):
        path = file_path(track, root, source)
        if source == "npy":
            layout, reason = outcome(lambda p: inspect_npy(p, config.n_mels, n_frames)[1], path)
        else:
            layout, reason = outcome(checked_waveform, path)
            layout = None
        return path, layout, reason

    checked = _run_checks(tracks, check, config.io_threads, config.progress, f"checking {source}")
    valid = Validation([], [], [])
    for track, (path, layout, reason) in zip(tracks, checked):
        if reason is None:
            valid.tracks.append(track)
            valid.layouts.append(layout)
        else:
            valid.bad.append(BadFile(path, track.track_id, reason))
    if valid.bad and not config.skip_bad:
        raise_first_bad(valid.bad)
    return valid


def write_skipped(bad: Sequence[BadFile], path: str) -> str:
    """Write the skipped files as TSV (`path`, `track_id`, `reason`), atomically.

    Args:
        bad: the files left out.
        path: the TSV to write.
    """

    def cell(text: str) -> str:
        return " ".join(text.split())  # one line, no tabs

    lines = ["path\ttrack_id\treason"]
    lines += [f"{b.path}\t{b.track_id}\t{cell(b.reason)}" for b in bad]
    atomic.write_text(path, "\n".join(lines) + "\n")
    return path


def report_skipped(bad: Sequence[BadFile], path: str, total: int) -> None:
    """Write the list of skipped files (`write_skipped`) and warn how many there were.

    Args:
        bad: the files left out.
        path: the TSV to write.
        total: the files checked.
    """
    write_skipped(bad, path)
    if bad:
        logger.warning("skipped %d of %d files as bad; list in %s", len(bad), total, path)
