"""tf.data input pipelines: MTG-Jamendo melspecs, audio files or TFRecord shards -> (mel, labels).

One design with one function per source, all sharing the same post-processing chain:

    source (npy | audio | tfrecord) -> (mel (96, T), labels (56,), track id)
      -> [skip leading silence] -> first `n_frames` frames, a shorter track tiled from its start
      -> cache -> (training) shuffle, random crop, time/frequency masks -> batch -> (training) mixup
      -> prefetch

Every file is checked in a pre-pass before the dataset is built (exists, loads without pickle,
2-D with 96 mel rows, finite values, non-empty audio), so an epoch never stops on a bad file: by
default the first bad file is a ValueError naming it and the reason; with `skip_bad=True` bad files
are left out, counted, and listed (path and reason) in a file. Paths go through tf.io.gfile, so
local directories and gs:// buckets both work.

Shards (`write_shards`) hold one record per track: the mel as little-endian float32 bytes with its
shape, the 56 labels, the track id and its path; each shard is written under a temporary name and
renamed when complete, with a small JSON sidecar, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfmood import atomic
from tfmood.data.metadata import Track, label_matrix, read_split
from tfmood.data.tags import N_TAGS

logger = logging.getLogger(__name__)

SOURCES = ("npy", "audio", "tfrecord")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")
# .npy dtypes the graph decoder understands; any other dtype is reported as a bad file.
NPY_DTYPES = ("<f4", ">f4", "<f8", ">f8", "<f2", ">f2")
INDEX_NAME = "index.json"
SKIPPED_NAME = "skipped.tsv"
SHARD_FORMAT = "tfmood-mel-shards-v1"


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DataConfig:
    """What the input pipeline does, for every source.

    Args:
        n_frames: frames per example (the first ones; a shorter track is tiled from its start).
        n_mels: mel bands every melspec must have.
        batch_size: examples per batch.
        skip_silence: drop the leading frames whose loudest band is more than `silence_db` below
            the loudest frame of the track, before cropping.
        silence_db: the threshold of `skip_silence`, in dB below the track maximum.
        random_crop: when training, take `n_frames` at a random start instead of the first ones.
        time_masks: when training, how many SpecAugment time masks per example.
        time_mask_width: the widest time mask, in frames (widths are uniform in [0, this]).
        freq_masks: when training, how many frequency masks per example.
        freq_mask_width: the widest frequency mask, in mel bands.
        mixup_alpha: when training and > 0, mix each batch with a permutation of itself with
            weights drawn from Beta(alpha, alpha) (the larger weight kept on the example itself).
        shuffle_buffer: shuffle buffer size (examples) when training.
        seed: seed of shuffling and of every random augmentation.
        cache: cache the deterministic work (loading, silence skip, fixed crop) before the random
            augmentation: True in memory, a string for a cache file prefix, False not at all.
            With `random_crop` the whole melspecs are cached, so memory grows with track length.
        drop_remainder: drop the last incomplete batch.
        with_ids: yield (mel, labels, track_id) instead of (mel, labels).
        skip_bad: leave bad files out (and list them) instead of failing on the first one.
        skipped_log: where the list of skipped files goes (TSV: path, reason); by default beside
            the shards, or `tfmood-skipped-<split>-<source>.tsv` in the working directory.
        io_threads: threads of the validation pre-pass and of shard writing.
        progress: show tqdm progress bars for the pre-pass and shard writing.
    """

    n_frames: int = 1400
    n_mels: int = 96
    batch_size: int = 16
    skip_silence: bool = False
    silence_db: float = 60.0
    random_crop: bool = False
    time_masks: int = 0
    time_mask_width: int = 100
    freq_masks: int = 0
    freq_mask_width: int = 12
    mixup_alpha: float = 0.0
    shuffle_buffer: int = 1024
    seed: int = 0
    cache: bool | str = True
    drop_remainder: bool = False
    with_ids: bool = False
    skip_bad: bool = False
    skipped_log: str | None = None
    io_threads: int = 8
    progress: bool = True

    def __post_init__(self):
        positive = ("n_frames", "n_mels", "batch_size", "shuffle_buffer", "io_threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"DataConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.freq_masks and self.freq_mask_width > self.n_mels:
            raise ValueError(f"DataConfig.freq_mask_width {self.freq_mask_width} > n_mels")
        if self.time_masks and self.time_mask_width > self.n_frames:
            raise ValueError(f"DataConfig.time_mask_width {self.time_mask_width} > n_frames")
        if self.mixup_alpha < 0:
            raise ValueError(f"DataConfig.mixup_alpha must be >= 0, got {self.mixup_alpha}")
        if self.silence_db <= 0:
            raise ValueError(f"DataConfig.silence_db must be > 0, got {self.silence_db}")


def _config_with(config: DataConfig | None, options: dict) -> DataConfig:
    """`config` (or the defaults) with `options` replacing fields; unknown names are a ValueError."""
    fields = {field.name for field in dataclasses.fields(DataConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown data options {unknown}; valid: {', '.join(sorted(fields))}")
    return dataclasses.replace(config or DataConfig(), **options)


# --------------------------------------------------------------------------------------------
# Paths and atomic writes (tf.io.gfile, so gs:// works as well as local paths)


def _join(root: str, relative: str) -> str:
    return tf.io.gfile.join(os.fspath(root), relative)


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


# --------------------------------------------------------------------------------------------
# Validation of files (the pre-pass)


@dataclass(frozen=True)
class BadFile:
    """A file left out (or refused): its path, track id and the reason."""

    path: str
    track_id: str
    reason: str


@dataclass(frozen=True)
class NpyLayout:
    """Where the data of a validated .npy file lies, for the graph decoder."""

    offset: int
    dtype: str
    rows: int
    cols: int
    fortran_order: bool


def _npy_header(data: bytes) -> tuple[NpyLayout, np.dtype]:
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
    except ValueError:
        raise ValueError("not a .npy file (bad magic string)") from None
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    try:
        shape, fortran_order, dtype = readers[version](buffer)
    except ValueError as error:
        raise ValueError(f"corrupt .npy header ({error})") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects (refused: loading them would need pickle)")
    if len(shape) != 2:
        raise ValueError(f"{len(shape)}-D array of shape {shape}, expected 2-D (mel bands, frames)")
    layout = NpyLayout(buffer.tell(), dtype.str, int(shape[0]), int(shape[1]), bool(fortran_order))
    return layout, dtype


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


def inspect_npy(path: str, n_mels: int = 96) -> tuple[np.ndarray, NpyLayout]:
    """Load a melspec .npy (no pickle) and check it; ValueError/FileNotFoundError give the reason.

    Args:
        path: the .npy file (any tf.io.gfile path).
        n_mels: the number of mel bands required.

    Returns:
        The array as float32 (n_mels, frames) and where its data lies in the file.
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError("missing file")
    data = _read_bytes(path)
    layout, dtype = _npy_header(data)
    if layout.dtype not in NPY_DTYPES:
        raise ValueError(f"dtype {dtype} is not a float16/32/64 dtype")
    count = layout.rows * layout.cols
    if len(data) - layout.offset < count * dtype.itemsize:
        raise ValueError(
            f"truncated: {len(data) - layout.offset} data bytes for shape "
            f"({layout.rows}, {layout.cols}) of {dtype}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=layout.offset)
    mel = flat.reshape((layout.rows, layout.cols), order="F" if layout.fortran_order else "C")
    check_mel(mel, n_mels)
    return mel.astype(np.float32), layout


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


def _file_path(track: Track, root: str, source: str) -> str:
    return _join(root, track.npy_path if source == "npy" else track.path)


def _run_checks(
    items: Sequence, check: Callable, threads: int, progress: bool, description: str
) -> list:
    """`check(item)` for every item in a thread pool, in order, with a progress bar."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(check, items)
        return list(tqdm(results, total=len(items), desc=description, disable=not progress))


def _outcome(function: Callable, *args):
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


def _raise_first_bad(bad: Sequence[BadFile]) -> None:
    first = bad[0]
    more = f" ({len(bad) - 1} more bad files; skip_bad / --skip-bad leaves them out)"
    raise ValueError(f"{first.path}: {first.reason}{more if len(bad) > 1 else ''}")


def validate_files(
    tracks: Sequence[Track], root: str, source: str, config: DataConfig = DataConfig()
) -> Validation:
    """Check every file of `tracks` under `root` before a dataset is built.

    Args:
        tracks: rows of a split file.
        root: the melspec root (source "npy") or the audio root (source "audio").
        source: "npy" or "audio".
        config: `n_mels`, `skip_bad`, `io_threads` and `progress` are used.

    Returns:
        The usable tracks, their .npy layouts (None for audio) and the bad files.

    Raises:
        ValueError: a bad file when `config.skip_bad` is False (message: path and reason).
    """
    if source not in ("npy", "audio"):
        raise ValueError(f"validate_files: source must be 'npy' or 'audio', got {source!r}")

    def check(track: Track):
        path = _file_path(track, root, source)
        if source == "npy":
            layout, reason = _outcome(lambda p: inspect_npy(p, config.n_mels)[1], path)
        else:
            layout, reason = _outcome(checked_waveform, path)
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
        _raise_first_bad(valid.bad)
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


def _report_skipped(bad: Sequence[BadFile], path: str, total: int) -> None:
    write_skipped(bad, path)
    if bad:
        logger.warning("skipped %d of %d files as bad; list in %s", len(bad), total, path)


# --------------------------------------------------------------------------------------------
# Graph-side processing shared by every source


def tile_or_crop(mel: tf.Tensor, n_frames: int, start=0) -> tf.Tensor:
    """Frames `start .. start + n_frames` of `mel` (bands, T), tiling a short track from its start.

    Args:
        mel: (bands, T) with T >= 1.
        n_frames: frames wanted.
        start: first frame; used only when T > n_frames (must be <= T - n_frames).
    """
    length = tf.shape(mel)[1]
    repeats = (n_frames + length - 1) // length
    start = tf.where(length > n_frames, tf.cast(start, tf.int32), 0)
    return tf.tile(mel, [1, repeats])[:, start : start + n_frames]


def skip_leading_silence(mel: tf.Tensor, silence_db: float) -> tf.Tensor:
    """Drop the leading frames whose loudest band is more than `silence_db` below the track max.

    Args:
        mel: (bands, T) in dB.
        silence_db: the threshold, in dB below the loudest frame.
    """
    frame_level = tf.reduce_max(mel, axis=0)
    loud = frame_level >= tf.reduce_max(frame_level) - silence_db
    first_loud = tf.argmax(tf.cast(loud, tf.int32), output_type=tf.int32)
    return mel[:, first_loud:]


def _deterministic_stage(config: DataConfig, training: bool) -> Callable:
    """Silence skip and, unless cropping at random later, the fixed first-frames crop."""
    crop_later = training and config.random_crop

    def process(mel, labels, track_id):
        if config.skip_silence:
            mel = skip_leading_silence(mel, config.silence_db)
        if not crop_later:
            mel = tile_or_crop(mel, config.n_frames)
            mel = tf.ensure_shape(mel, (config.n_mels, config.n_frames))
        return mel, labels, track_id

    return process


def _band_mask(size: int, count: int, max_width: int, seed) -> tf.Tensor:
    """(size,) bool: the union of `count` random intervals of width uniform in [0, max_width]."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    widths = tf.random.stateless_uniform([count], seeds[0], 0, max_width + 1, dtype=tf.int32)
    unit = tf.random.stateless_uniform([count], seeds[1])
    starts = tf.cast(unit * tf.cast(size - widths + 1, tf.float32), tf.int32)
    positions = tf.range(size)[None, :]
    inside = (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])
    return tf.reduce_any(inside, axis=0)


def _random_stage(config: DataConfig) -> Callable:
    """Random crop and SpecAugment masks (masked cells take the example's mean value)."""

    def augment(example, seed):
        mel, labels, track_id = example
        crop_seed, time_seed, freq_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=3)
        )
        if config.random_crop:
            spare = tf.maximum(tf.shape(mel)[1] - config.n_frames, 0)
            start = tf.random.stateless_uniform([], crop_seed, 0, spare + 1, dtype=tf.int32)
            mel = tile_or_crop(mel, config.n_frames, start)
        mel = tf.ensure_shape(mel, (config.n_mels, config.n_frames))
        masked = tf.zeros_like(mel, dtype=tf.bool)
        if config.time_masks:
            mask = _band_mask(config.n_frames, config.time_masks, config.time_mask_width, time_seed)
            masked |= mask[None, :]
        if config.freq_masks:
            mask = _band_mask(config.n_mels, config.freq_masks, config.freq_mask_width, freq_seed)
            masked |= mask[:, None]
        mel = tf.where(masked, tf.reduce_mean(mel), mel)
        return mel, labels, track_id

    return augment


def mixup_weights(batch: int, alpha: float, seed) -> tf.Tensor:
    """(batch,) weights from Beta(alpha, alpha), folded to [0.5, 1] (the example keeps the most).

    Args:
        batch: how many weights.
        alpha: the Beta parameter.
        seed: a stateless seed (2 integers).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    first = tf.random.stateless_gamma([batch], seeds[0], alpha=alpha)
    second = tf.random.stateless_gamma([batch], seeds[1], alpha=alpha)
    total = first + second
    # Both gammas can underflow to 0 for a small alpha: such an example is left unmixed.
    weight = tf.where(total > 0, tf.math.divide_no_nan(first, total), 1.0)
    return tf.maximum(weight, 1.0 - weight)


def _mixup_stage(config: DataConfig) -> Callable:
    def mix(batch, seed):
        mel, labels, track_id = batch
        size = tf.shape(mel)[0]
        weight_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        weight = mixup_weights(size, config.mixup_alpha, weight_seed)
        partner = tf.argsort(tf.random.stateless_uniform([size], order_seed))
        mel = weight[:, None, None] * mel + (1.0 - weight[:, None, None]) * tf.gather(mel, partner)
        labels = weight[:, None] * labels + (1.0 - weight[:, None]) * tf.gather(labels, partner)
        return mel, labels, track_id

    return mix


def _seeds(seed: int, salt: int) -> tf.data.Dataset:
    """An endless dataset of stateless seeds (pairs), new ones every epoch."""
    return tf.data.Dataset.random(seed=seed + salt, rerandomize_each_iteration=True).batch(2)


def finish_dataset(
    examples: tf.data.Dataset, config: DataConfig, training: bool
) -> tf.data.Dataset:
    """The chain shared by every source: crop/tile, cache, augment, batch, mixup, prefetch.

    Args:
        examples: unbatched (mel (n_mels, T) float32, labels (56,) float32, track_id string).
        config: the pipeline options.
        training: shuffle and augment (random crop, masks, mixup) when True; otherwise keep the
            order of `examples` and apply only the deterministic steps.
    """
    autotune = tf.data.AUTOTUNE
    data = examples.map(_deterministic_stage(config, training), num_parallel_calls=autotune)
    if config.cache:
        data = data.cache(config.cache if isinstance(config.cache, str) else "")
    if training:
        data = data.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
        data = tf.data.Dataset.zip((data, _seeds(config.seed, 1)))
        data = data.map(_random_stage(config), num_parallel_calls=autotune)
    data = data.batch(
        config.batch_size, drop_remainder=config.drop_remainder, num_parallel_calls=autotune
    )
    if training and config.mixup_alpha > 0:
        data = tf.data.Dataset.zip((data, _seeds(config.seed, 2)))
        data = data.map(_mixup_stage(config), num_parallel_calls=autotune)
    if not config.with_ids:
        data = data.map(lambda mel, labels, track_id: (mel, labels))
    return data.prefetch(autotune)


# --------------------------------------------------------------------------------------------
# Sources: each yields unbatched (mel, labels, track_id) in TSV order


def _decode_npy(contents, layout, n_mels: int) -> tf.Tensor:
    """The float32 (n_mels, T) array of a validated .npy read as bytes (`layout` as tensors)."""
    offset, dtype_code, rows, cols, fortran = layout
    body = tf.strings.substr(contents, tf.cast(offset, tf.int32), tf.int32.max)

    def decoder(dtype_str: str) -> Callable:
        dtype = {"f2": tf.float16, "f4": tf.float32, "f8": tf.float64}[dtype_str[1:]]
        little = dtype_str[0] == "<"
        return lambda: tf.cast(tf.io.decode_raw(body, dtype, little_endian=little), tf.float32)

    flat = tf.switch_case(dtype_code, [decoder(name) for name in NPY_DTYPES])
    flat = flat[: rows * cols]
    mel = tf.cond(
        fortran,
        lambda: tf.transpose(tf.reshape(flat, [cols, rows])),
        lambda: tf.reshape(flat, [rows, cols]),
    )
    return tf.ensure_shape(mel, (n_mels, None))


def npy_examples(
    tracks: Sequence[Track], root: str, layouts: Sequence[NpyLayout], config: DataConfig
) -> tf.data.Dataset:
    """Unbatched examples from precomputed melspecs `root/PATH.npy` (files already validated).

    Args:
        tracks: the usable rows.
        root: the melspec root.
        layouts: where each file's data lies (from `validate_files`).
        config: `n_mels` is used.
    """
    paths = [_file_path(track, root, "npy") for track in tracks]
    columns = (
        np.array([layout.offset for layout in layouts], dtype=np.int64),
        np.array([NPY_DTYPES.index(layout.dtype) for layout in layouts], dtype=np.int32),
        np.array([layout.rows for layout in layouts], dtype=np.int32),
        np.array([layout.cols for layout in layouts], dtype=np.int32),
        np.array([layout.fortran_order for layout in layouts], dtype=bool),
    )
    labels = label_matrix(tracks).astype(np.float32)
    ids = [track.track_id for track in tracks]

    def load(path, layout, label, track_id):
        mel = _decode_npy(tf.io.read_file(path), layout, config.n_mels)
        return mel, label, track_id

    table = tf.data.Dataset.from_tensor_slices((paths, columns, labels, ids))
    return table.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def audio_examples(tracks: Sequence[Track], root: str, config: DataConfig) -> tf.data.Dataset:
    """Unbatched examples from audio files `root/PATH`, decoded and turned into log-mels.

    Args:
        tracks: the usable rows (files already validated).
        root: the audio root.
        config: `n_mels` is used.
    """
    from tfmood.data.audio import load_audio_tensor
    from tfmood.layers.log_mel import LogMel

    log_mel = LogMel(n_mels=config.n_mels)
    paths = [_file_path(track, root, "audio") for track in tracks]
    labels = label_matrix(tracks).astype(np.float32)
    ids = [track.track_id for track in tracks]

    def decode(path, label, track_id):
        return load_audio_tensor(path), label, track_id

    def to_mel(waveform, label, track_id):
        mel = tf.ensure_shape(log_mel(waveform[None, :])[0], (config.n_mels, None))
        return mel, label, track_id

    table = tf.data.Dataset.from_tensor_slices((paths, labels, ids))
    # soundfile releases the GIL while libsndfile decodes: files decode in parallel too.
    waveforms = table.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return waveforms.map(to_mel, num_parallel_calls=tf.data.AUTOTUNE)


def read_index(shard_dir: str) -> dict:
    """The `index.json` of a shard directory (FileNotFoundError/ValueError if absent or wrong).

    Args:
        shard_dir: the directory `write_shards` wrote.
    """
    path = _join(shard_dir, INDEX_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no shard index (write the shards with `tfmood shard`)")
    index = json.loads(_read_bytes(path).decode("utf-8"))
    if index.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r} is not {SHARD_FORMAT!r}")
    for shard in index["shards"]:
        shard_path = _join(shard_dir, shard["file"])
        if shard["count"] and not tf.io.gfile.exists(shard_path):
            raise FileNotFoundError(f"{shard_path}: shard listed in {path} is missing")
    return index


def _parse_record(config: DataConfig) -> Callable:
    features = {
        "mel": tf.io.FixedLenFeature([], tf.string),
        "n_mels": tf.io.FixedLenFeature([], tf.int64),
        "n_frames": tf.io.FixedLenFeature([], tf.int64),
        "labels": tf.io.FixedLenFeature([N_TAGS], tf.float32),
        "track_id": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        flat = tf.io.decode_raw(example["mel"], tf.float32, little_endian=True)
        mel = tf.reshape(flat, tf.stack([example["n_mels"], example["n_frames"]]))
        mel = tf.ensure_shape(mel, (config.n_mels, None))
        return mel, example["labels"], example["track_id"]

    return parse


def _check_index_matches_split(index: dict, tracks: Sequence[Track], shard_dir: str) -> None:
    """The shards must hold the split's tracks, in order, less the files skipped when writing."""
    skipped = {entry["track_id"] for entry in index.get("skipped", [])}
    expected = [track.track_id for track in tracks if track.track_id not in skipped]
    stored = [track_id for shard in index["shards"] for track_id in shard["track_ids"]]
    if stored != expected:
        raise ValueError(
            f"{_join(shard_dir, INDEX_NAME)}: the shards hold {len(stored)} tracks that do not "
            f"match the {len(expected)} tracks of the split file, in order; rewrite the shards"
        )


def tfrecord_examples(
    shard_dir: str, config: DataConfig, training: bool, tracks: Sequence[Track] | None = None
) -> tf.data.Dataset:
    """Unbatched examples from the TFRecord shards of `write_shards`.

    Args:
        shard_dir: the shard directory (with index.json); any tf.io.gfile path.
        config: `n_mels` and `seed` are used.
        training: read the shards in a seeded random order, interleaved; otherwise in index
            order, one after the other, so element i is the i-th track written.
        tracks: when given, the rows the shards must hold (checked against the index).
    """
    index = read_index(shard_dir)
    if tracks is not None:
        _check_index_matches_split(index, tracks, shard_dir)
    files = [_join(shard_dir, shard["file"]) for shard in index["shards"] if shard["count"]]
    if training and len(files) > 1:
        order = tf.data.Dataset.from_tensor_slices(files).shuffle(
            len(files), seed=config.seed, reshuffle_each_iteration=True
        )
        records = order.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), 8),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        records = tf.data.TFRecordDataset(files, buffer_size=8 << 20)
    records = records.apply(tf.data.experimental.assert_cardinality(index["total"]))
    return records.map(_parse_record(config), num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------
# The entry point


def _default_skipped_log(tsv: str | None, source: str) -> str:
    split = os.path.splitext(os.path.basename(os.fspath(tsv)))[0] if tsv else "split"
    return os.path.abspath(f"tfmood-skipped-{split}-{source}.tsv")


def make_dataset(
    tsv: str | None,
    root: str,
    source: str = "npy",
    training: bool = False,
    config: DataConfig | None = None,
    **options,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of (mel (batch, 96, n_frames), labels (batch, 56)) float32.

    Args:
        tsv: the split file (labels, order, paths). For source "tfrecord" it may be None; when
            given, the shards are checked to hold its tracks in order.
        root: the melspec root ("npy", files at PATH with `.npy`), the audio root ("audio",
            files at PATH: wav, mp3, flac or ogg) or the shard directory ("tfrecord").
        source: "npy", "audio" or "tfrecord".
        training: shuffle and apply the random augmentations of `config`; when False, element i
            of the unbatched stream is the i-th usable row of the TSV.
        config: the pipeline options (defaults: `DataConfig()`).
        **options: `DataConfig` fields overriding `config`, e.g. `batch_size=32`.

    Returns:
        The dataset; with `with_ids=True` each element also carries the track ids.

    Raises:
        ValueError: an unknown source or option, a bad split file, or a bad data file (unless
            `skip_bad`); FileNotFoundError for a missing split file or shard index.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    config = _config_with(config, options)
    tracks = read_split(tsv) if tsv is not None else None
    if source == "tfrecord":
        examples = tfrecord_examples(root, config, training, tracks)
        return finish_dataset(examples, config, training)
    if tracks is None:
        raise ValueError(f"source {source!r} needs the split file (tsv)")
    valid = validate_files(tracks, root, source, config)
    if config.skip_bad:
        log = config.skipped_log or _default_skipped_log(tsv, source)
        _report_skipped(valid.bad, log, len(tracks))
    if not valid.tracks:
        raise ValueError(f"{tsv}: no usable {source} file under {root}")
    if source == "npy":
        examples = npy_examples(valid.tracks, root, valid.layouts, config)
    else:
        examples = audio_examples(valid.tracks, root, config)
    return finish_dataset(examples, config, training)


# --------------------------------------------------------------------------------------------
# TFRecord shards


def _float_feature(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def mel_record(mel: np.ndarray, labels: np.ndarray, track_id: str, path: str) -> bytes:
    """One serialized tf.train.Example: the mel as little-endian float32 bytes plus its shape.

    Args:
        mel: (n_mels, T) array.
        labels: (56,) 0/1 values.
        track_id: the TSV TRACK_ID.
        path: the source file, kept for tracing.
    """
    mel = np.ascontiguousarray(mel, dtype="<f4")
    feature = {
        "mel": _bytes_feature(mel.tobytes()),
        "n_mels": _int_feature(mel.shape[0]),
        "n_frames": _int_feature(mel.shape[1]),
        "labels": _float_feature(np.asarray(labels, dtype=np.float32).tolist()),
        "track_id": _bytes_feature(track_id.encode("utf-8")),
        "path": _bytes_feature(path.encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _load_for_shard(source: str, n_mels: int, max_frames: int | None) -> Callable:
    def load(path: str):
        if source == "npy":
            mel, reason = _outcome(lambda p: inspect_npy(p, n_mels)[0], path)
        else:
            mel, reason = _outcome(audio_mel, path, n_mels)
        if mel is not None and max_frames:
            mel = mel[:, :max_frames]
        return mel, reason

    return load


def _shard_names(stem: str, count: int) -> list[str]:
    return [f"{stem}-{k:05d}-of-{count:05d}.tfrecord" for k in range(count)]


def _plan_digest(track_ids: Sequence[str], source: str, max_frames: int | None) -> str:
    text = "\n".join([source, str(max_frames), *track_ids])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _completed_shard(sidecar_path: str, shard_path: str, digest: str) -> dict | None:
    """The sidecar of a shard finished by an earlier run with the same plan, else None."""
    if not (tf.io.gfile.exists(sidecar_path) and tf.io.gfile.exists(shard_path)):
        return None
    sidecar = json.loads(_read_bytes(sidecar_path).decode("utf-8"))
    return sidecar if sidecar.get("plan") == digest else None


def _write_one_shard(
    shard_path: str,
    tracks: Sequence[Track],
    root: str,
    source: str,
    config: DataConfig,
    bar,
    max_frames: int | None,
) -> tuple[list[str], list[BadFile]]:
    """Load, check and write one shard atomically; returns (written ids, bad files)."""
    paths = [_file_path(track, root, source) for track in tracks]
    labels = label_matrix(tracks)
    load = _load_for_shard(source, config.n_mels, max_frames)
    written: list[str] = []
    bad: list[BadFile] = []
    for stale in tf.io.gfile.glob(f"{shard_path}.tmp-*"):
        tf.io.gfile.remove(stale)  # left by an interrupted run
    temp_path = f"{shard_path}.tmp-{os.getpid()}"
    threads = ThreadPoolExecutor(max_workers=config.io_threads)
    with threads as pool, tf.io.TFRecordWriter(temp_path) as writer:
        for row, (mel, reason) in enumerate(pool.map(load, paths)):
            bar.update(1)
            track = tracks[row]
            if reason is not None:
                bad.append(BadFile(paths[row], track.track_id, reason))
                if not config.skip_bad:
                    break
                continue
            writer.write(mel_record(mel, labels[row], track.track_id, track.path))
            written.append(track.track_id)
    if bad and not config.skip_bad:
        tf.io.gfile.remove(temp_path)
        _raise_first_bad(bad)
    tf.io.gfile.rename(temp_path, shard_path, overwrite=True)
    return written, bad


def _sidecar_path(shard_path: str) -> str:
    return shard_path[: -len(".tfrecord")] + ".json"


def write_shards(
    tsv: str,
    root: str,
    out_dir: str,
    source: str = "npy",
    shard_size: int = 256,
    max_frames: int | None = None,
    config: DataConfig | None = None,
    **options,
) -> dict:
    """Write the melspecs of a split as TFRecord shards with an index; resumes an interrupted run.

    Shards are `<split>-KKKKK-of-NNNNN.tfrecord` with `shard_size` rows of the TSV each (fewer when
    files are skipped), in TSV order. Each is written under a temporary name and renamed when
    complete, then described by a JSON sidecar; a later run with the same split and options
    skips the shards whose sidecar is there. `index.json` (shard files, counts, track ids,
    skipped files) is written last; with `skip_bad`, `skipped.tsv` lists the files left out.

    Args:
        tsv: the split file.
        root: the melspec root (source "npy") or the audio root (source "audio").
        out_dir: the shard directory (created; any tf.io.gfile path).
        source: "npy" or "audio".
        shard_size: TSV rows per shard.
        max_frames: keep only the first `max_frames` frames of each track (None: all of them).
        config: `n_mels`, `skip_bad`, `skipped_log`, `io_threads` and `progress` are used.
        **options: `DataConfig` fields overriding `config`.

    Returns:
        The index (as written to `index.json`).
    """
    if source not in ("npy", "audio"):
        raise ValueError(f"shards are written from 'npy' or 'audio', got {source!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    config = _config_with(config, options)
    tracks = read_split(tsv)
    tf.io.gfile.makedirs(out_dir)
    stem = os.path.splitext(os.path.basename(os.fspath(tsv)))[0]
    chunks = [tracks[i : i + shard_size] for i in range(0, len(tracks), shard_size)]
    names = _shard_names(stem, len(chunks))
    shards: list[dict] = []
    skipped: list[BadFile] = []
    bar = tqdm(total=len(tracks), desc=f"sharding {stem}", disable=not config.progress)
    for name, chunk in zip(names, chunks):
        shard_path = _join(out_dir, name)
        digest = _plan_digest([track.track_id for track in chunk], source, max_frames)
        sidecar = _completed_shard(_sidecar_path(shard_path), shard_path, digest)
        if sidecar is None:
            written, bad = _write_one_shard(
                shard_path, chunk, root, source, config, bar, max_frames
            )
            sidecar = {
                "file": name,
                "plan": digest,
                "count": len(written),
                "track_ids": written,
                "skipped": [dataclasses.asdict(b) for b in bad],
            }
            atomic.write_json(_sidecar_path(shard_path), sidecar, indent=1)
        else:
            bar.update(len(chunk))
        shards.append({k: sidecar[k] for k in ("file", "count", "track_ids")})
        skipped.extend(BadFile(**entry) for entry in sidecar["skipped"])
    bar.close()
    index = {
        "format": SHARD_FORMAT,
        "tsv": os.path.basename(os.fspath(tsv)),
        "source": source,
        "n_mels": config.n_mels,
        "max_frames": max_frames,
        "total": sum(shard["count"] for shard in shards),
        "shards": shards,
        "skipped": [dataclasses.asdict(b) for b in skipped],
    }
    if config.skip_bad:
        _report_skipped(skipped, config.skipped_log or _join(out_dir, SKIPPED_NAME), len(tracks))
    atomic.write_json(_join(out_dir, INDEX_NAME), index, indent=1)
    return index
