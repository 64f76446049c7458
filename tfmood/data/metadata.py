"""MTG-Jamendo split files: parse the TSVs and build the (tracks x 56) mood/theme label matrix.

A split file has the header `TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS` and one row per track,
tab-separated, with one column per tag after DURATION (`category---name`). The label matrix is built
as the official ground truth is (MTG-Jamendo `generate_matrix.py`): a boolean array with one row per
track in file order and one column per mood/theme tag in the order of `tfmood.data.tags`. Tags of the
other categories (genre, instrument) are ignored; anything the official script would trip over, or
silently merge, is a ValueError naming the file and the line.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tfmood import atomic
from tfmood.data.tags import N_TAGS, PREFIX, TAG_INDEX

HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
N_FIXED_COLUMNS = 5
MOODTHEME = PREFIX[: -len("---")]
CATEGORIES = ("genre", "instrument", MOODTHEME)


@dataclass(frozen=True)
class Track:
    """One row of a split file.

    Args:
        track_id: e.g. `track_0000948`.
        artist_id: e.g. `artist_000087`.
        album_id: e.g. `album_000149`.
        path: the audio path relative to the audio root, e.g. `48/948.mp3`.
        duration: seconds, as written in the file.
        tags: the mood/theme tag names of the track (without prefix), in file order, no repeats.
    """

    track_id: str
    artist_id: str
    album_id: str
    path: str
    duration: float
    tags: tuple[str, ...]

    @property
    def npy_path(self) -> str:
        """The precomputed melspec path: PATH with its extension replaced by `.npy`."""
        return os.path.splitext(self.path)[0] + ".npy"


def _open_text(path: str):
    """Open a local path with `open`, anything with a scheme (gs://, ...) with tf.io.gfile."""
    if "://" in path:
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: no such split file")
        with tf.io.gfile.GFile(path, "rb") as handle:
            return io.StringIO(handle.read().decode("utf-8"), newline="")
    return open(path, "r", encoding="utf-8", newline="")


def _fail(path: str, line: int, reason: str) -> ValueError:
    return ValueError(f"{path}: line {line}: {reason}")


def _mood_tags(cells: Sequence[str], path: str, line: int) -> tuple[str, ...]:
    """The mood/theme names among the tag cells; other known categories are dropped."""
    names: list[str] = []
    for cell in cells:
        category, sep, name = cell.partition("---")
        if not sep or not category or not name or "---" in name:
            raise _fail(path, line, f"malformed tag {cell!r} (expected 'category---name')")
        if category not in CATEGORIES:
            raise _fail(path, line, f"unknown tag category {category!r} in {cell!r}")
        if category != MOODTHEME:
            continue
        if name not in TAG_INDEX:
            raise _fail(path, line, f"unknown mood/theme tag {cell!r}")
        if name not in names:
            names.append(name)
    if not names:
        raise _fail(path, line, "no mood/theme tag")
    return tuple(names)


def _parse_row(cells: list[str], path: str, line: int) -> Track:
    if len(cells) <= N_FIXED_COLUMNS:
        raise _fail(
            path,
            line,
            f"{len(cells)} columns, expected at least {N_FIXED_COLUMNS + 1} "
            "(TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION and one column per tag)",
        )
    track_id, artist_id, album_id, audio_path, duration = cells[:N_FIXED_COLUMNS]
    for name, value in zip(HEADER, (track_id, artist_id, album_id, audio_path)):
        if not value.strip():
            raise _fail(path, line, f"empty {name}")
    try:
        seconds = float(duration)
    except ValueError:
        raise _fail(path, line, f"DURATION {duration!r} is not a number") from None
    return Track(
        track_id=track_id,
        artist_id=artist_id,
        album_id=album_id,
        path=audio_path,
        duration=seconds,
        tags=_mood_tags(cells[N_FIXED_COLUMNS:], path, line),
    )


def parse_split(lines: Iterable[str], path: str = "<tsv>") -> list[Track]:
    """Parse the lines of a split file (header included).

    Args:
        lines: the text lines, with or without line endings (LF or CRLF).
        path: the name used in error messages.

    Returns:
        The tracks in file order. Blank lines are ignored.

    Raises:
        ValueError: a bad header, a wrong column count, an empty field, a malformed or unknown tag,
            a row without mood/theme tag, or a repeated TRACK_ID; the message names the file and
            the line (the header is line 1).
    """
    tracks: list[Track] = []
    first_line_of: dict = {}
    header_seen = False
    for line_number, text in enumerate(lines, start=1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        cells = text.split("\t")
        if not header_seen:
            if tuple(cells) != HEADER:
                raise _fail(path, line_number, f"header {cells} is not {list(HEADER)}")
            header_seen = True
            continue
        track = _parse_row(cells, path, line_number)
        if track.track_id in first_line_of:
            raise _fail(
                path,
                line_number,
                f"duplicate TRACK_ID {track.track_id} (first on line "
                f"{first_line_of[track.track_id]})",
            )
        first_line_of[track.track_id] = line_number
        tracks.append(track)
    if not header_seen:
        raise ValueError(f"{path}: empty file (no header)")
    return tracks


def read_split(path: str) -> list[Track]:
    """Read a split TSV (a local path or any tf.io.gfile path); see `parse_split`.

    Args:
        path: the TSV file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the content is malformed (the message names the file and line).
    """
    path = os.fspath(path)
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such split file")
    with _open_text(path) as handle:
        return parse_split(handle, path=path)


def label_matrix(tracks: Sequence[Track]) -> np.ndarray:
    """The boolean (len(tracks), 56) ground-truth matrix; columns in the order of tfmood.data.tags.

    Args:
        tracks: parsed rows, e.g. from `read_split`.
    """
    labels = np.zeros((len(tracks), N_TAGS), dtype=bool)
    for row, track in enumerate(tracks):
        for name in track.tags:
            labels[row, TAG_INDEX[name]] = True
    return labels


def read_labels(path: str) -> tuple[list[str], np.ndarray]:
    """The track ids (file order) and the boolean label matrix of a split TSV.

    Args:
        path: the TSV file.
    """
    tracks = read_split(path)
    return [track.track_id for track in tracks], label_matrix(tracks)


def ids_path_for(labels_path: str) -> str:
    """Where `write_labels` puts the track ids: `Y.npy` -> `Y.track_ids.txt`."""
    return os.path.splitext(labels_path)[0] + ".track_ids.txt"


def write_labels(tsv_path: str, labels_path: str) -> tuple[str, str]:
    """Write the label matrix of a split file as .npy and its track ids (one a line) beside it.

    Args:
        tsv_path: the split TSV.
        labels_path: the output `.npy` (boolean, tracks x 56); written atomically.

    Returns:
        (labels_path, ids_path).
    """
    track_ids, labels = read_labels(tsv_path)
    ids_path = ids_path_for(labels_path)
    atomic.save_npy(labels_path, labels)
    atomic.write_bytes(ids_path, "".join(f"{tid}\n" for tid in track_ids).encode("utf-8"))
    return labels_path, ids_path
