"""Calibration and verification inputs of an export.

From a corpus in the MTG-Jamendo layout (`load_mel_split`, `load_audio_split`: the real input
pipeline of `tfmood.data.pipeline` at batch size 1), by default a synthetic corpus
(`tfmood.data.synth`) generated once into a cache directory (`default_corpus`).

Or from a folder of unlabelled music (`music_windows`): each track is decoded
(`tfmood.data.audio`), turned into log-mel (`tfmood.data.features`) and cut into windows of the
model's frames (every `hop_frames`); the tracks, sorted by name, alternate between calibration
(even places) and verification (odd places, `split_music`), so no track is in both.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmood.deploy.audio_model import HOP_LENGTH, SAMPLE_RATE, audio_samples_for

# Default verification corpus (tfmood.data.synth): big enough for a stable macro ROC-AUC.
DEFAULT_CORPUS = {"n_tracks": 300, "seconds": 30.0, "seed": 0}


AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg")


# Window step in mel frames for music folders: 1/8 of a 1400-frame window (3.7 s), so a
# 35-second excerpt gives 2 windows and a 65-second one 10.
DEFAULT_HOP_FRAMES = 175


@dataclasses.dataclass
class SplitData:
    """Examples of one split: model inputs (N, ...) float32 and labels (N, tags) 0/1."""

    inputs: np.ndarray
    labels: np.ndarray
    tsv: str


SPLIT_NAME = "autotagging_moodtheme-{split}.tsv"


def default_corpus(cache_dir: Optional[str] = None) -> str:
    """The synthetic verification corpus, generated once (deterministic) into a cache directory.

    Args:
        cache_dir: where corpora are kept (default: $TFMOOD_CACHE or ~/.cache/tfmood).

    Returns:
        The corpus directory (split TSVs and `audio/`).
    """
    from tfmood.data.synth import generate_corpus

    cache_dir = cache_dir or os.environ.get(
        "TFMOOD_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tfmood")
    )
    spec = DEFAULT_CORPUS
    name = f"export-corpus-{spec['n_tracks']}x{spec['seconds']:g}s-seed{spec['seed']}"
    path = os.path.join(cache_dir, name)
    if os.path.isfile(os.path.join(path, "synth.json")):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    # Generated beside its final place and renamed, so a half-written corpus is never used.
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir)
    generate_corpus(staging, spec["n_tracks"], spec["seconds"], spec["seed"])
    try:
        os.rename(staging, path)
    except OSError:  # another process finished first; its corpus is the same
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return path


def resolve_splits(calibration: Optional[str], test: Optional[str] = None) -> Dict[str, str]:
    """The calibration and test split files for a `--calibration` DIR or TSV.

    Args:
        calibration: a corpus directory (its validation split calibrates, its test split
            verifies), a split TSV (calibrates; the test split beside it, named as MTG-Jamendo
            names it, verifies), or None for the default synthetic corpus.
        test: an explicit test split TSV (overrides the one found).

    Returns:
        {"calibration": tsv, "test": tsv}.
    """
    if calibration is None:
        calibration = default_corpus()
    if os.path.isdir(calibration):
        splits = {
            "calibration": os.path.join(calibration, SPLIT_NAME.format(split="validation")),
            "test": os.path.join(calibration, SPLIT_NAME.format(split="test")),
        }
    elif os.path.isfile(calibration):
        folder, name = os.path.split(calibration)
        sibling = name.replace("-validation", "-test").replace("-train", "-test")
        splits = {"calibration": calibration, "test": os.path.join(folder, sibling)}
    else:
        raise FileNotFoundError(f"{calibration}: no such calibration directory or split file")
    if test is not None:
        splits["test"] = test
    for role, path in splits.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: {role} split file not found")
    return splits


def default_root(tsv: str) -> str:
    """The audio root of a split file in the synthetic-corpus layout: `<its folder>/audio`."""
    return os.path.join(os.path.dirname(os.path.abspath(tsv)), "audio")


def load_mel_split(
    tsv: str, root: str, n_frames: int, source: str = "audio", limit: Optional[int] = None
) -> SplitData:
    """Log-mel inputs and labels of a split, through `tfmood.data.pipeline.make_dataset` (batch size 1).

    Args:
        tsv: the split file.
        root: its audio root (source "audio") or melspec root (source "npy").
        n_frames: frames per example (the first ones; shorter tracks tiled).
        source: "audio" or "npy".
        limit: keep at most this many examples (the first ones, in TSV order).
    """
    from tfmood.data.pipeline import make_dataset

    dataset = make_dataset(
        tsv, root, source, training=False, n_frames=n_frames, batch_size=1, progress=False
    )
    if limit is not None:
        dataset = dataset.take(limit)
    mels, labels = [], []
    for mel, label in dataset.as_numpy_iterator():
        mels.append(mel)
        labels.append(label)
    return SplitData(np.concatenate(mels), np.concatenate(labels), tsv)


def load_audio_split(
    tsv: str, root: str, n_samples: int, limit: Optional[int] = None
) -> SplitData:
    """12 kHz waveforms (first `n_samples`, a shorter track tiled) and labels of a split.

    Args:
        tsv: the split file.
        root: its audio root.
        n_samples: samples per example.
        limit: keep at most this many examples (the first ones, in TSV order).
    """
    from tfmood.data.metadata import label_matrix, read_split
    from tfmood.data.validation import checked_waveform

    tracks = read_split(tsv)[:limit]
    waveforms = []
    for track in tracks:
        waveform = checked_waveform(os.path.join(root, track.path))
        repeats = -(-n_samples // waveform.size)
        waveforms.append(np.tile(waveform, repeats)[:n_samples])
    return SplitData(np.stack(waveforms), label_matrix(tracks).astype(np.float32), tsv)


def load_split(tsv: str, root: Optional[str], frames: int, audio_in: bool, limit) -> SplitData:
    root = root or default_root(tsv)
    if audio_in:
        return load_audio_split(tsv, root, audio_samples_for(frames), limit)
    return load_mel_split(tsv, root, frames, limit=limit)


def is_music_folder(path: Optional[str]) -> bool:
    """A folder of audio files to calibrate or verify on (rather than a labelled corpus)."""
    if path is None or not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, SPLIT_NAME.format(split="validation"))):
        return False
    return bool(music_files(path))


def music_files(folder: str) -> List[str]:
    """The audio files directly in `folder` (WAV, MP3, FLAC, OGG), sorted by name."""
    names = sorted(name for name in os.listdir(folder)
                   if name.lower().endswith(AUDIO_SUFFIXES))  # fmt: skip
    return [os.path.join(folder, name) for name in names
            if os.path.isfile(os.path.join(folder, name))]  # fmt: skip


@dataclasses.dataclass
class MusicWindows:
    """Windows of real music: model inputs (N, ...) float32 and where each came from."""

    inputs: np.ndarray
    tracks: List[str]  # the file names, one per track used
    track_index: np.ndarray  # (N,) index into `tracks`
    start_frames: np.ndarray  # (N,) first mel frame of each window
    skipped: List[Tuple[str, str]]  # (file name, reason) of files that could not be decoded

    def subset(self, keep: Sequence[int]) -> "MusicWindows":
        """The windows of the tracks at the positions `keep` (in `tracks`)."""
        keep = sorted(keep)
        mask = np.isin(self.track_index, keep)
        remap = np.full(len(self.tracks), -1)
        remap[keep] = np.arange(len(keep))
        return MusicWindows(self.inputs[mask], [self.tracks[i] for i in keep],
                            remap[self.track_index[mask]], self.start_frames[mask],
                            self.skipped)  # fmt: skip

    def describe(self, folder: str) -> dict:
        return {
            "folder": folder,
            "tracks": [os.path.basename(track) for track in self.tracks],
            "windows": int(len(self.inputs)),
            "skipped": [f"{os.path.basename(name)}: {reason}" for name, reason in self.skipped],
        }


def track_windows(waveform: np.ndarray, n_frames: int, hop_frames: int, audio_in: bool,
                  n_mels: int = 96) -> Tuple[np.ndarray, np.ndarray]:
    """Consecutive windows of one track, every `hop_frames` mel frames (the last ones that fit).

    A track shorter than one window is tiled to one window.

    Args:
        waveform: the 12 kHz mono waveform.
        n_frames: frames per window.
        hop_frames: frames between window starts.
        audio_in: give waveform windows of `audio_samples_for(n_frames)` samples (window w starts
            at sample w * hop_frames * 256) instead of log-mel windows (n_mels, n_frames).
        n_mels: mel bands.

    Returns:
        (windows, start frames).
    """
    from tfmood.data.features import waveform_to_mel

    n_samples = audio_samples_for(n_frames)
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.size < n_samples:
        waveform = np.tile(waveform, -(-n_samples // waveform.size))
    total_frames = -(-waveform.size // HOP_LENGTH) + 1
    starts = np.arange(0, total_frames - n_frames + 1, hop_frames)
    if audio_in:
        windows = [waveform[s * HOP_LENGTH: s * HOP_LENGTH + n_samples] for s in starts]
        windows = [w for w in windows if w.size == n_samples]
        starts = starts[: len(windows)]
    else:
        mel = waveform_to_mel(waveform, SAMPLE_RATE, n_mels)
        windows = [mel[:, s: s + n_frames] for s in starts]
    return np.stack(windows).astype(np.float32), starts


def music_windows(folder: str, n_frames: int, hop_frames: Optional[int] = None,
                  audio_in: bool = False, n_mels: int = 96,
                  max_seconds: Optional[float] = None) -> MusicWindows:
    """Decode every audio file of a folder and cut it into windows (`track_windows`).

    Files that cannot be decoded are skipped and listed.

    Args:
        folder: a folder of audio files (`music_files`).
        n_frames: frames per window.
        hop_frames: frames between window starts (default DEFAULT_HOP_FRAMES scaled to
            n_frames: n_frames // 8).
        audio_in: waveform windows instead of log-mel ones.
        n_mels: mel bands.
        max_seconds: decode at most the first seconds of each file.
    """
    from tfmood.data.audio import load_audio

    hop = int(hop_frames or max(1, n_frames * DEFAULT_HOP_FRAMES // 1400))
    if hop < 1:
        raise ValueError(f"hop_frames must be positive, got {hop_frames}")
    inputs, tracks, index, starts, skipped = [], [], [], [], []
    for path in music_files(folder):
        try:
            waveform = load_audio(path, SAMPLE_RATE, max_seconds=max_seconds)
        except (ValueError, RuntimeError, OSError) as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            skipped.append((path, reason.replace(path, os.path.basename(path))))
            continue
        windows, first = track_windows(waveform, n_frames, hop, audio_in, n_mels)
        index.append(np.full(len(windows), len(tracks)))
        tracks.append(path)
        inputs.append(windows)
        starts.append(first)
    if not tracks:
        raise ValueError(f"{folder}: no decodable audio file ({', '.join(AUDIO_SUFFIXES)})")
    return MusicWindows(np.concatenate(inputs), tracks, np.concatenate(index),
                        np.concatenate(starts), skipped)  # fmt: skip


def split_music(windows: MusicWindows) -> Dict[str, MusicWindows]:
    """Calibration and verification parts by track: sorted tracks alternate, first calibrates.

    A folder with one track gives it to both (say so in the report: the windows are shared).
    """
    n = len(windows.tracks)
    if n == 1:
        return {"calibration": windows, "test": windows}
    return {
        "calibration": windows.subset(range(0, n, 2)),
        "test": windows.subset(range(1, n, 2)),
    }


def evenly_spaced(windows: MusicWindows, limit: Optional[int]) -> MusicWindows:
    """At most `limit` windows, evenly spaced over all of them (every track keeps a share)."""
    if limit is None or len(windows.inputs) <= limit:
        return windows
    keep = np.unique(np.round(np.linspace(0, len(windows.inputs) - 1, limit)).astype(int))
    return dataclasses.replace(windows, inputs=windows.inputs[keep],
                               track_index=windows.track_index[keep],
                               start_frames=windows.start_frames[keep])  # fmt: skip


def music_data(folder, test, frames, audio_in, limit, hop_frames, n_mels):
    """Calibration and verification windows of a music folder (and an optional test folder)."""
    parts = split_music(music_windows(folder, frames, hop_frames, audio_in, n_mels))
    if test is not None:
        if not is_music_folder(test):
            raise ValueError(f"{test}: with a music-folder calibration, --test is a music folder")
        parts["test"] = music_windows(test, frames, hop_frames, audio_in, n_mels)
    sources = {"calibration": folder, "test": test if test is not None else folder}
    parts = {role: evenly_spaced(part, limit) for role, part in parts.items()}
    hop = int(hop_frames or max(1, frames * DEFAULT_HOP_FRAMES // 1400))
    described = {role: {**part.describe(sources[role]), "hop_frames": hop}
                 for role, part in parts.items()}  # fmt: skip
    return parts, described
