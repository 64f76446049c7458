"""Training of the micro model on a corpus, optionally distilled from a full model."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tfmood import atomic
from tfmood.deploy.tflm import split_tsv
from tfmood.models.micro import (
    DEFAULT_FILTERS,
    DEFAULT_HEAD_FILTERS,
    WINDOW_FRAMES,
    aggregate_windows,
    build_micro_model,
    clip_windows,
)


def distillation_targets(labels, teacher_scores, weight: float):
    """Training targets mixed from the labels and a teacher's scores: (1 - w) y + w t.

    Args:
        labels: (batch, tags) 0/1 labels.
        teacher_scores: (batch, tags) sigmoid scores of the teacher on the same inputs.
        weight: the teacher's share, in [0, 1] (0: the labels only).
    """
    return (1.0 - weight) * labels + weight * teacher_scores


def _check_distill_weight(weight: float) -> float:
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {weight}")
    return weight


def distillation_model(student, teacher, weight: float = 0.5):
    """The student wrapped for training on soft targets from a frozen teacher.

    The loss compiled into the wrapper is taken against `distillation_targets` of the batch's
    labels and the teacher's scores on the same (randomly cropped) inputs, so the teacher runs
    inside the training step and no scores are stored. Compiled metrics still see the labels.
    The student's layers are shared: after `fit`, save or export `student` itself.

    Args:
        student: the Keras model trained.
        teacher: a Keras model taking the same inputs (e.g. a full VGG-ish model of any length).
        weight: the teacher's share of the targets, in [0, 1].
    """
    import keras

    weight = _check_distill_weight(weight)
    teacher.trainable = False

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__(name=f"{student.name}_distilled")
            self.student = student
            self.teacher = teacher

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            soft = self.teacher(x, training=False)
            target = distillation_targets(y, keras.ops.cast(soft, y_pred.dtype), weight)
            return super().compute_loss(x, target, y_pred, sample_weight, training=training)

    return Distiller()


def _load_teacher(teacher):
    if isinstance(teacher, (str, os.PathLike)):
        from tfmood.models.vggish import load_model

        return load_model(os.fspath(teacher))
    return teacher


def _split_sources(corpus: str, shards: str | None) -> dict:
    """{split: (tsv, root)} and the source: the corpus audio, or shard folders per split."""
    from tfmood.deploy.calibration import default_root

    splits = {split: split_tsv(corpus, split) for split in ("train", "validation", "test")}
    if shards is None:
        return {"source": "audio", **{k: (tsv, default_root(tsv)) for k, tsv in splits.items()}}
    for split in splits:
        if not os.path.isdir(os.path.join(shards, split)):
            raise FileNotFoundError(
                f"{os.path.join(shards, split)}: no shard directory (tfmood.data.pipeline.write_shards "
                f"of the {split} split)"
            )
    return {"source": "tfrecord", **{k: (t, os.path.join(shards, k)) for k, t in splits.items()}}


def train_micro(
    corpus: str | None = None,
    out_path: str | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    filters: Sequence[int] = DEFAULT_FILTERS,
    test_windows: int = 4,
    seed: int = 0,
    head_filters: Sequence[int] = DEFAULT_HEAD_FILTERS,
    dropout: float = 0.1,
    random_crop: bool = True,
    shards: str | None = None,
    teacher=None,
    distill_weight: float = 0.5,
) -> dict:
    """Train the micro model on a corpus and score its test split clip by clip.

    Training reads 320-frame crops (random ones with `random_crop`) through
    `tfmood.data.pipeline.make_dataset`; Adam's learning rate decays to 0 over the epochs (cosine) and the
    output biases start at the tags' training log-odds. A test clip is scored as the firmware
    does: `test_windows` consecutive windows from its start (a shorter clip is tiled from its
    start, as `clip_windows` does), the mean of their scores (`aggregate_windows`).

    Args:
        corpus: a corpus directory in the MTG-Jamendo layout (default: the synthetic corpus of
            `tfmood.deploy.calibration.default_corpus`).
        out_path: where to save the trained `.keras` model (None: not saved).
        epochs: training epochs.
        batch_size: training batch size.
        learning_rate: Adam's initial learning rate.
        filters: strided convolution channels (see `build_micro_model`).
        test_windows: windows per test clip (>= 1).
        seed: random seed.
        head_filters: stride-1 convolution channels (see `build_micro_model`).
        dropout: before the dense layer.
        random_crop: train on random 320-frame crops instead of each track's first frames.
        shards: a folder with `train`, `validation` and `test` shard directories written by
            `tfmood.data.pipeline.write_shards` from the corpus, read instead of decoding its audio.
        teacher: a full model (Keras model or `.keras` path) to distil from, or None.
        distill_weight: the teacher's share of the training targets (see
            `distillation_targets`).

    Returns:
        {"model", "roc_auc" (macro, tags with positives and negatives), "tags", "history",
        "path", "train_seconds"}.
    """
    import math
    import time

    import keras

    from tfmood.data.metadata import read_split
    from tfmood.data.pipeline import make_dataset
    from tfmood.deploy.calibration import default_corpus, load_mel_split
    from tfmood.metrics import defined_columns, macro_roc_auc
    from tfmood.train.fit import tag_prior_bias

    if int(test_windows) < 1:
        raise ValueError(f"test_windows must be >= 1, got {test_windows}")
    distill_weight = _check_distill_weight(distill_weight)
    keras.utils.set_random_seed(seed)
    corpus = corpus or default_corpus()
    splits = _split_sources(corpus, shards)
    source = splits["source"]
    options = {"source": source, "n_frames": WINDOW_FRAMES, "batch_size": batch_size}
    train_data = make_dataset(
        *splits["train"], training=True, random_crop=random_crop, seed=seed, **options
    )
    valid_data = make_dataset(*splits["validation"], training=False, **options)
    model = build_micro_model(filters=filters, head_filters=head_filters, dropout=dropout)
    model.get_layer("scores").bias.assign(tag_prior_bias(splits["train"][0]))
    steps = epochs * math.ceil(len(read_split(splits["train"][0])) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    fitted = model
    if teacher is not None and distill_weight > 0:
        fitted = distillation_model(model, _load_teacher(teacher), distill_weight)
    fitted.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(multi_label=True, name="roc_auc")],
    )
    started = time.time()
    history = fitted.fit(train_data, validation_data=valid_data, epochs=epochs, verbose=2)
    seconds = time.time() - started
    test_tsv, test_root = splits["test"]
    test = load_mel_split(test_tsv, test_root, WINDOW_FRAMES * test_windows, source=source)
    windows = np.stack([clip_windows(mel) for mel in test.inputs])
    flat = windows.reshape(-1, *windows.shape[2:])
    scores = model.predict(flat, batch_size=32, verbose=0).reshape(len(windows), test_windows, -1)
    clip_scores = aggregate_windows(scores)
    columns = defined_columns(test.labels)
    roc_auc = float(macro_roc_auc(test.labels[:, columns], clip_scores[:, columns]))
    if out_path:
        atomic.save_model(model, out_path)
    return {
        "model": model,
        "roc_auc": roc_auc,
        "tags": int(columns.size),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "path": out_path,
        "train_seconds": seconds,
    }
