"""The options of the input pipeline (`DataConfig`), shared by every source and the shard writer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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


def config_with(config: DataConfig | None, options: dict) -> DataConfig:
    """`config` (or the defaults) with `options` replacing fields; unknown names are a ValueError."""
    fields = {field.name for field in dataclasses.fields(DataConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown data options {unknown}; valid: {', '.join(sorted(fields))}")
    return dataclasses.replace(config or DataConfig(), **options)
