"""tf.data input pipelines: MTG-Jamendo melspecs, audio files or TFRecord shards -> (mel, labels).

One design with one function per source, all sharing the same post-processing chain:

    source (npy | audio | tfrecord) -> (mel (96, T), labels (56,), track id)
      -> [skip leading silence] -> first `n_frames` frames, a shorter track tiled from its start
      -> cache -> (training) shuffle, random crop, time/frequency masks -> batch -> (training) mixup
      -> prefetch

Every file is checked in a pre-pass before the dataset is built (`tfmood.data.validation`), so an
epoch never stops on a bad file: by default the first bad file is a ValueError naming it and the
reason; with `skip_bad=True` bad files are left out, counted, and listed (path and reason) in a
file. Paths go through tf.io.gfile, so local directories and gs:// buckets both work.

Melspec files hold whole tracks (MTG-Jamendo: ~10,400 frames, ~4 MB) of which only the first
`n_frames` are used unless a random crop or the silence skip needs the whole track
(`frames_to_read`): both the pre-pass and the dataset read just those frames
(`tfmood.data.npy_files.read_frames`). The dataset reads them with `tf.numpy_function` in a
parallel `map`: a graph op cannot read byte ranges of a file, and the reads (`os.pread`, or
ranged `GFile` reads on gs://) release the GIL, so files are read by several threads at once.

TFRecord shards are written and read by `tfmood.data.shards`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfmood.data.config import DataConfig, config_with
from tfmood.data.metadata import Track, label_matrix, read_split
from tfmood.data.npy_files import NPY_DTYPES, NpyLayout, read_frames
from tfmood.data.shards import tfrecord_examples
from tfmood.data.validation import file_path, report_skipped, validate_files

__all__ = [
    "SOURCES",
    "DataConfig",
    "audio_examples",
    "finish_dataset",
    "frames_to_read",
    "make_dataset",
    "mixup_weights",
    "npy_examples",
    "skip_leading_silence",
    "tile_or_crop",
]

SOURCES = ("npy", "audio", "tfrecord")


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
        if not (config.time_masks or config.freq_masks):
            return mel, labels, track_id  # no pass over the example for an empty mask
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


def frames_to_read(config: DataConfig, training: bool) -> int | None:
    """The leading frames of each melspec the pipeline uses; None when it needs whole tracks.

    Args:
        config: the pipeline options (`n_frames`, `random_crop`, `skip_silence`).
        training: whether the pipeline trains (only then is `random_crop` applied).
    """
    if config.skip_silence or (training and config.random_crop):
        return None  # the silence threshold is relative to the track maximum; crops go anywhere
    return config.n_frames


def npy_examples(
    tracks: Sequence[Track],
    root: str,
    layouts: Sequence[NpyLayout],
    config: DataConfig,
    n_frames: int | None = None,
) -> tf.data.Dataset:
    """Unbatched examples from precomputed melspecs `root/PATH.npy` (files already validated).

    Only the first `n_frames` frames of each file are read, by `read_frames` in a parallel map.

    Args:
        tracks: the usable rows.
        root: the melspec root.
        layouts: where each file's data lies (from `validate_files`).
        config: `n_mels` is used.
        n_frames: the leading frames to read (None: whole tracks); see `frames_to_read`.
    """
    paths = [file_path(track, root, "npy") for track in tracks]
    columns = (
        np.array([layout.offset for layout in layouts], dtype=np.int64),
        np.array([NPY_DTYPES.index(layout.dtype) for layout in layouts], dtype=np.int32),
        np.array([layout.rows for layout in layouts], dtype=np.int64),
        np.array([layout.cols for layout in layouts], dtype=np.int64),
        np.array([layout.fortran_order for layout in layouts], dtype=bool),
    )
    labels = label_matrix(tracks).astype(np.float32)
    ids = [track.track_id for track in tracks]
    wanted = -1 if n_frames is None else int(n_frames)

    def read(path, offset, dtype_code, rows, cols, fortran):
        layout = NpyLayout(int(offset), NPY_DTYPES[dtype_code], int(rows), int(cols), bool(fortran))
        return read_frames(path.decode("utf-8"), layout, None if wanted < 0 else wanted)

    def load(path, layout, label, track_id):
        mel = tf.numpy_function(read, [path, *layout], tf.float32, stateful=False)
        return tf.ensure_shape(mel, (config.n_mels, None)), label, track_id

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
    paths = [file_path(track, root, "audio") for track in tracks]
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
    config = config_with(config, options)
    tracks = read_split(tsv) if tsv is not None else None
    if source == "tfrecord":
        examples = tfrecord_examples(root, config, training, tracks)
        return finish_dataset(examples, config, training)
    if tracks is None:
        raise ValueError(f"source {source!r} needs the split file (tsv)")
    frames = frames_to_read(config, training) if source == "npy" else None
    valid = validate_files(tracks, root, source, config, frames)
    if config.skip_bad:
        log = config.skipped_log or _default_skipped_log(tsv, source)
        report_skipped(valid.bad, log, len(tracks))
    if not valid.tracks:
        raise ValueError(f"{tsv}: no usable {source} file under {root}")
    if source == "npy":
        examples = npy_examples(valid.tracks, root, valid.layouts, config, frames)
    else:
        examples = audio_examples(valid.tracks, root, config)
    return finish_dataset(examples, config, training)
