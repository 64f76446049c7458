"""TFRecord shards of a split's melspecs: writing them (resumable) and reading them back.

Shards (`write_shards`) hold one record per track: the mel as little-endian float32 bytes with its
shape, the 56 labels, the track id and its path; each shard is written under a temporary name and
renamed when complete, with a small JSON sidecar, so an interrupted run resumes where it stopped.
`index.json`, written last, lists the shards, their track ids and the files left out.
`tfrecord_examples` reads them back as the unbatched (mel, labels, track id) examples of the
input pipeline (`tfmood.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfmood import atomic
from tfmood.data.config import DataConfig, config_with
from tfmood.data.metadata import Track, label_matrix, read_split
from tfmood.data.tags import N_TAGS
from tfmood.data.validation import (
    BadFile,
    audio_mel,
    file_path,
    inspect_npy,
    outcome,
    raise_first_bad,
    report_skipped,
)

INDEX_NAME = "index.json"
SKIPPED_NAME = "skipped.tsv"
SHARD_FORMAT = "tfmood-mel-shards-v1"


def _join(root: str, relative: str) -> str:
    return tf.io.gfile.join(os.fspath(root), relative)


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


# --------------------------------------------------------------------------------------------
# Writing


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
            mel, reason = outcome(lambda p: inspect_npy(p, n_mels, max_frames)[0], path)
        else:
            mel, reason = outcome(audio_mel, path, n_mels)
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
    paths = [file_path(track, root, source) for track in tracks]
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
        raise_first_bad(bad)
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
    config = config_with(config, options)
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
        report_skipped(skipped, config.skipped_log or _join(out_dir, SKIPPED_NAME), len(tracks))
    atomic.write_json(_join(out_dir, INDEX_NAME), index, indent=1)
    return index


# --------------------------------------------------------------------------------------------
# Reading


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
