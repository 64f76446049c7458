"""Micro model against a full model on whole clips: the firmware's window loop vs one full pass.

Generates a synthetic corpus of clips (default 1,200 x 30 s), writes its log-mel shards, trains
a full VGG-ish baseline (widths 0.25, 0.25, 0.5, 1, 1) and the micro model
(training/configs/micro.yaml) with the same recipe (random 320-frame crops, Adam 3e-3 cosine,
dropout 0.1), both through `tfmood.train.fit.train`, then scores the test split:

- full model: the whole clip (1,400 frames) in one pass, and its first 320 frames;
- micro model: consecutive 320-frame windows of the clip, window scores averaged, in Keras and in
  the TFLM interpreter on the int8 export (`tfmood.deploy.tflm.score_clips_tflm`).

Prints and writes `<out>/clip_accuracy.json`. Every step resumes from what is already in `<out>`.

    python3 tflite/micro/clip_accuracy.py --out /tmp/micro30 [--tracks 1200] [--seconds 30]
"""

import argparse
import json
import os
import subprocess
import time

import numpy as np

SPLITS = ("train", "validation", "test")
MICRO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs",
                            "micro.yaml")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="working folder (corpus, shards, models)")
    parser.add_argument("--tracks", type=int, default=1200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--epochs", type=int, default=12)
    return parser.parse_args()


def corpus_and_shards(out: str, tracks: int, seconds: float) -> str:
    from tfmood.data.shards import write_shards

    tsv = os.path.join(out, "corpus", "autotagging_moodtheme-{}.tsv")
    if not os.path.exists(tsv.format("test")):
        command = ["tfmood", "synth", "--out", os.path.join(out, "corpus"),
                   "--tracks", str(tracks), "--seconds", str(seconds)]  # fmt: skip
        subprocess.run(command, check=True)
    for split in SPLITS:
        write_shards(tsv.format(split), os.path.join(out, "corpus", "audio"),
                     os.path.join(out, "shards", split), source="audio")  # fmt: skip
    return tsv


def data_fields(out: str, tsv: str) -> dict:
    """The TrainConfig data fields of the corpus's shards."""
    return dict(
        source="tfrecord", train_tsv=tsv.format("train"), validation_tsv=tsv.format("validation"),
        train_root=os.path.join(out, "shards", "train"),
        validation_root=os.path.join(out, "shards", "validation"),
    )  # fmt: skip


def train_full(out: str, tsv: str, epochs: int) -> str:
    from tfmood.train.fit import TrainConfig, train

    config = TrainConfig(
        preset="baseline", width=(0.25, 0.25, 0.5, 1, 1), n_frames=320, random_crop=True,
        learning_rate=3e-3, lr_schedule="cosine", dropout=0.1, **data_fields(out, tsv),
        out_dir=os.path.join(out, "full"), epochs=epochs, patience=epochs,
    )  # fmt: skip
    return train(config).best_model


def train_micro(out: str, tsv: str, epochs: int) -> str:
    from tfmood.train.config import load_config
    from tfmood.train.fit import TrainConfig, train

    fields = dict(data_fields(out, tsv), out_dir=os.path.join(out, "micro"), epochs=epochs)
    config = load_config(TrainConfig, MICRO_CONFIG, **fields, patience=epochs)
    return train(config).best_model


def keras_clip_scores(model, clips: np.ndarray) -> np.ndarray:
    """Clip scores of a micro model in Keras as the firmware computes them: the mean of the
    scores of the clip's consecutive windows."""
    from tfmood.models.micro import aggregate_windows, clip_windows

    windows = np.stack([clip_windows(clip) for clip in clips])
    flat = windows.reshape(-1, *windows.shape[2:])
    scores = model.predict(flat, batch_size=32, verbose=0)
    return aggregate_windows(scores.reshape(len(windows), windows.shape[1], -1))


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from tfmood.metrics import defined_columns, macro_roc_auc

    columns = defined_columns(labels)
    return float(macro_roc_auc(labels[:, columns], scores[:, columns]))


def main() -> None:
    args = parse_args()
    from tfmood.atomic import write_json
    from tfmood.deploy.calibration import load_mel_split
    from tfmood.deploy.tflm import export_micro, score_clips_tflm
    from tfmood.models.micro import WINDOW_FRAMES
    from tfmood.models.vggish import load_model

    started = time.time()
    tsv = corpus_and_shards(args.out, args.tracks, args.seconds)
    test_root = os.path.join(args.out, "shards", "test")
    clip_frames = int(args.seconds * 12000 / 256)
    test = load_mel_split(tsv.format("test"), test_root, min(clip_frames, 1400), "tfrecord")
    windows = test.inputs.shape[-1] // WINDOW_FRAMES
    results = {"test_tracks": len(test.labels), "clip_frames": test.inputs.shape[-1],
               "micro_windows_per_clip": windows}  # fmt: skip

    full = load_model(train_full(args.out, tsv, args.epochs))
    results["full_clip"] = macro_auc(test.labels, full.predict(test.inputs, verbose=0))
    first = test.inputs[..., :WINDOW_FRAMES]
    results["full_first_window"] = macro_auc(test.labels, full.predict(first, verbose=0))

    micro_path = train_micro(args.out, tsv, args.epochs)
    clips = test.inputs[..., : windows * WINDOW_FRAMES]
    results["micro_keras_windows"] = macro_auc(
        test.labels, keras_clip_scores(load_model(micro_path), clips)
    )
    tflite_path = os.path.join(args.out, "fw", "model.tflite")
    report = export_micro(micro_path, tflite_path, calibration=os.path.join(args.out, "corpus"))
    results.update(arena_bytes=report["arena_bytes"], model_bytes=report["bytes"])
    with open(tflite_path, "rb") as f:
        flatbuffer = f.read()
    results["micro_tflm_windows"] = macro_auc(test.labels, score_clips_tflm(flatbuffer, clips))
    results["micro_tflm_first_window"] = macro_auc(
        test.labels, score_clips_tflm(flatbuffer, test.inputs[..., :WINDOW_FRAMES])
    )
    results["seconds"] = round(time.time() - started, 1)
    print(json.dumps(results, indent=1))
    write_json(os.path.join(args.out, "clip_accuracy.json"), results)


if __name__ == "__main__":
    main()
