"""`tfmood predict`: tag scores of a saved model for a batch of log-mel spectrograms.

Two modes: `--input MELS.npy` (N, n_mels, frames) -> `-o SCORES.npy` (N, n_tags); or audio
files as arguments -> the top tags of each file printed (names and scores; `--json`).
"""

import argparse
import os

import numpy as np

from tfmood import atomic


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="tag scores of a .keras model for a batch of mel spectrograms",
        description=(
            "Run a saved model on a (N, 96, frames) array of log-mel spectrograms in dB and "
            "write the (N, tags) sigmoid scores."
        ),
    )
    parser.add_argument("audio", nargs="*", help="audio files (use --input for mel arrays)")
    parser.add_argument("--model", required=True, help="a saved .keras model")
    parser.add_argument("--input", help="a .npy of log-mel spectrograms, shape (N, 96, frames)")
    parser.add_argument("-o", "--output", help="the .npy of scores to write, shape (N, tags)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per step")
    parser.add_argument("--top", type=int, default=5, help="tags printed per audio file")
    parser.add_argument("--n-frames", type=int, default=1400,
                        help="frames the model sees per audio file (the first ones, tiled)")
    parser.add_argument("--json", action="store_true", help="audio mode: print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.input and args.audio:
        raise ValueError("give either --input MELS.npy or audio files, not both")
    if args.input:
        return _run_mel_batch(args)
    if args.audio:
        return _run_audio(args)
    raise ValueError("nothing to predict: pass audio files or --input MELS.npy")


def _run_audio(args: argparse.Namespace) -> int:
    import json

    from tfmood.inference import predict_audio
    from tfmood.models import load_model

    if args.top <= 0:
        raise ValueError(f"--top must be positive, got {args.top}")
    model = load_model(args.model)
    n_frames = model.input_shape[2] or args.n_frames
    results = predict_audio(model, args.audio, n_frames=n_frames, k=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        tags = ", ".join(f"{t['tag']} {t['score']:.3f}" for t in result["tags"])
        print(f"{result['file']}: {tags}")
    return 0


def _run_mel_batch(args: argparse.Namespace) -> int:
    from tfmood.models import load_model

    if not args.output:
        raise ValueError("--input needs -o/--output, the .npy of scores to write")
    model = load_model(args.model)
    mels = load_mel_batch(args.input, n_mels=model.input_shape[1], n_frames=model.input_shape[2])
    scores = model.predict(mels, batch_size=args.batch_size, verbose="auto")
    atomic.save_npy(args.output, scores.astype(np.float32))
    print(f"{args.output}: {scores.shape[0]} examples x {scores.shape[1]} tag scores")
    return 0


def load_mel_batch(path: str, n_mels: int = 96, n_frames: "int | None" = None) -> np.ndarray:
    """Load and check a (N, n_mels, frames) batch of log-mel spectrograms from a .npy file.

    Args:
        path: the .npy file (loaded without pickle).
        n_mels: the mel bands the model expects.
        n_frames: the frames the model expects, or None for any length.

    Returns:
        The batch as float32.

    Raises:
        ValueError: the array is not 3-D, has the wrong number of mel bands or frames, is empty,
            not numeric, or has NaN/inf values (the message names the file).
        FileNotFoundError: no such file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such mel spectrogram file")
    try:
        mels = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path}: not a readable numeric .npy array ({error})") from None
    if not isinstance(mels, np.ndarray) or mels.dtype.kind not in "fiu":
        raise ValueError(f"{path}: expected a numeric array, got {getattr(mels, 'dtype', mels)}")
    if mels.ndim != 3 or mels.shape[1] != n_mels:
        raise ValueError(f"{path}: expected shape (N, {n_mels}, frames), got {mels.shape}")
    if mels.shape[0] == 0:
        raise ValueError(f"{path}: the batch is empty")
    if n_frames is not None and mels.shape[2] != n_frames:
        raise ValueError(
            f"{path}: the model takes {n_frames} frames, the input has {mels.shape[2]}"
        )
    if not np.all(np.isfinite(mels)):
        raise ValueError(f"{path}: contains NaN or infinite values")
    return mels.astype(np.float32)

