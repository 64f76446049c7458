"""Running a trained model: on a split (for evaluation) and on audio files (top tags)."""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence

import numpy as np

from tfmood.data.tags import MOODTHEME_TAGS


@dataclasses.dataclass
class SplitPredictions:
    track_ids: List[str]
    groundtruth: np.ndarray  # (tracks, tags) bool, in the split's order
    predictions: np.ndarray  # (tracks, tags) float32 scores


def predict_split(model, tsv: str, root: str, source: str = "npy", n_frames: int = 1400,
                  batch_size: int = 16, skip_bad: bool = False) -> SplitPredictions:
    """Scores of every usable track of a split, in the TSV's order, with its ground truth."""
    from tfmood.data import pipeline

    # One pass, so no cache: memory stays at a few batches and the (tracks, 56) arrays, however
    # large the split (cached, the test split's 4,231 mels would hold 2.3 GB).
    dataset = pipeline.make_dataset(tsv, root, source, training=False, n_frames=n_frames,
                                    batch_size=batch_size, with_ids=True, skip_bad=skip_bad,
                                    cache=False)
    ids, labels, scores = [], [], []
    for mel, label, track_id in dataset.as_numpy_iterator():
        scores.append(model.predict_on_batch(mel))
        labels.append(label)
        ids.extend(t.decode() if isinstance(t, bytes) else str(t) for t in track_id)
    return SplitPredictions(ids, np.concatenate(labels).astype(bool),
                            np.concatenate(scores).astype(np.float32))


def defined_tags(groundtruth: np.ndarray, tags: Sequence[str] = MOODTHEME_TAGS):
    """Columns (and names) of the tags whose metrics are defined on this ground truth."""
    from tfmood import metrics

    columns = metrics.defined_columns(groundtruth)
    return columns, [tags[c] for c in columns]


def test_model(model_path: str, tsv: str, root: str, out_dir: str, source: str = "npy",
               n_frames: int = 1400, batch_size: int = 16, skip_bad: bool = False,
               all_tags: bool = False):
    """Predict a test split, write predictions/ground truth/track ids, evaluate and report.

    Tags without a positive (or negative) test track have undefined metrics: they are left out
    of the evaluation and named in `excluded_tags.txt`, unless `all_tags` is set (then they are
    an error, as in `tfmood evaluate`).

    Returns:
        The `tfmood.metrics.EvaluationResult`.
    """
    from tfmood import metrics
    from tfmood.models.vggish import load_model

    model = load_model(model_path)
    split = predict_split(model, tsv, root, source, n_frames, batch_size, skip_bad)
    os.makedirs(out_dir, exist_ok=True)
    metrics.save_matrix(os.path.join(out_dir, "predictions.npy"), split.predictions)
    metrics.save_matrix(os.path.join(out_dir, "groundtruth.npy"), split.groundtruth)
    _write_lines(os.path.join(out_dir, "track_ids.txt"), split.track_ids)
    columns = np.arange(len(MOODTHEME_TAGS))
    if not all_tags:
        columns, _ = defined_tags(split.groundtruth)
        excluded = [t for i, t in enumerate(MOODTHEME_TAGS) if i not in set(columns)]
        _write_lines(os.path.join(out_dir, "excluded_tags.txt"), excluded)
    result = metrics.evaluate(split.groundtruth[:, columns], split.predictions[:, columns],
                              tags=[MOODTHEME_TAGS[c] for c in columns])
    metrics.write_report(result, out_dir)
    return result


def _write_lines(path: str, lines: Sequence[str]) -> None:
    from tfmood import atomic

    atomic.write_text(path, "".join(f"{line}\n" for line in lines))


def top_tags(scores: np.ndarray, k: int = 5, tags: Sequence[str] = MOODTHEME_TAGS):
    """The k best (tag, score) pairs of one score vector, best first."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(tags[i], float(scores[i])) for i in order]


def predict_audio(model, paths: Sequence[str], n_frames: Optional[int] = 1400,
                  k: int = 5, first_window: bool = True) -> List[dict]:
    """Top-k tags of audio files (a .keras model object, or a `tfmood.tagger` runner).

    With `first_window` (the default, MediaEval's convention) the model sees each file's first
    `n_frames` frames (tiled if shorter); otherwise the mean over the whole track's windows
    (`tfmood.tagger`). A file that cannot be decoded raises its ValueError/FileNotFoundError.
    """
    from tfmood import tagger

    runner = model if callable(model) and not hasattr(model, "predict_on_batch") \
        else tagger.KerasRunner(model)
    n_frames = runner.n_frames or n_frames or tagger.N_FRAMES
    results = []
    for result in tagger.tag_tracks(runner, list(paths), n_frames=n_frames,
                                    first_window=first_window, workers=1):
        if not result.ok:
            raise ValueError(result.error)
        results.append({"file": str(result.path), "tags": [
            {"tag": tag, "score": round(score, 4)} for tag, score in top_tags(result.scores, k)]})
    return results
