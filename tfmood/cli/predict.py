"""`tfmood predict`: tag whole music libraries, or score a batch of log-mel spectrograms.

Two modes: audio files and folders as arguments -> per-track scores averaged over 30-s windows
(`tfmood.tagger`), top tags printed, all scores to `-o tags.csv|tags.jsonl` (resumable); or
`--input MELS.npy` (N, n_mels, frames) -> `-o SCORES.npy` (N, n_tags).
"""

import argparse
import os

import numpy as np

from tfmood import atomic


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="tag audio files and folders (whole tracks), or score a batch of mel spectrograms",
        description=(
            "Tag music: audio files and folders (searched recursively for "
            ".wav .flac .ogg .oga .mp3) are decoded, cut into consecutive 1400-frame windows "
            "(~30 s) whose scores are averaged per track, and the top tags printed; -o tags.csv "
            "or tags.jsonl writes all tag scores per track, and a rerun with the same -o resumes "
            "(tracks already in the file are skipped). Files that cannot be decoded are reported "
            "and skipped (exit status 1). Or: --input MELS.npy (N, 96, frames) -o SCORES.npy."
        ),
    )
    parser.add_argument("audio", nargs="*", help="audio files or folders (use --input for mels)")
    parser.add_argument("--model",
                        help="a .keras model or a mel-in .tflite model (default: the shipped "
                             "saved_models/mtg-jamendo-baseline.keras)")
    parser.add_argument("--input", help="a .npy of log-mel spectrograms, shape (N, 96, frames)")
    parser.add_argument("-o", "--output",
                        help="audio: a .csv or .jsonl of per-track scores (appended, resumable); "
                             "--input: the .npy of scores to write, shape (N, tags)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="audio: windows per model step (default 4); --input: examples per "
                             "step (default 16)")
    parser.add_argument("--top", type=int, default=5,
                        help="tags printed per track (0: print none)")
    parser.add_argument("--n-frames", type=int, default=1400,
                        help="frames per window, for a model that takes any length")
    parser.add_argument("--first-window", action="store_true",
                        help="tag only each track's first window (~30 s, MediaEval's "
                             "convention); only that much is decoded")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads (default: CPUs - 1, 1 to 4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="audio mode: print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size is None:
        from tfmood.tagger import BATCH_SIZE

        args.batch_size = 16 if args.input else BATCH_SIZE
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.input and args.audio:
        raise ValueError("give either --input MELS.npy or audio files, not both")
    if args.input:
        return _run_mel_batch(args)
    if args.audio:
        return _run_audio(args)
    raise ValueError("nothing to predict: pass audio files or folders, or --input MELS.npy")


def _run_audio(args: argparse.Namespace) -> int:
    import json
    import sys

    from tqdm import tqdm

    from tfmood import tagger
    from tfmood.inference import top_tags

    if args.top < 0:
        raise ValueError(f"--top must be >= 0, got {args.top}")
    if args.workers is not None and args.workers <= 0:
        raise ValueError(f"--workers must be positive, got {args.workers}")
    paths = tagger.find_audio(args.audio)
    if not paths:
        raise ValueError(f"no audio files ({' '.join(tagger.AUDIO_EXTENSIONS)}) in "
                         f"{' '.join(args.audio)}")
    writer = tagger.ResultWriter(args.output) if args.output else None
    skipped = 0
    if writer is not None:
        todo = [p for p in paths if writer.key(p) not in writer.done]
        skipped = len(paths) - len(todo)
        paths = todo
        if skipped:
            print(f"{args.output}: {skipped} tracks already tagged, {len(paths)} to go",
                  file=sys.stderr)
    runner = tagger.load_runner(args.model, n_frames=args.n_frames)
    failures, printed = [], []
    progress = tqdm(total=len(paths), unit="track", disable=args.no_progress or None,
                    file=sys.stderr, dynamic_ncols=True)
    try:
        for result in tagger.tag_tracks(runner, paths, n_frames=runner.n_frames,
                                        first_window=args.first_window,
                                        batch_size=args.batch_size, workers=args.workers):
            progress.update(1)
            if not result.ok:
                failures.append(result.error)
                progress.write(f"skipped: {result.error}", file=sys.stderr)
                continue
            if writer is not None:
                writer.write(result)
            if args.top:
                best = top_tags(result.scores, args.top)
                if args.json:
                    printed.append({"file": result.path, "windows": result.windows, "tags": [
                        {"tag": tag, "score": round(score, 4)} for tag, score in best]})
                else:
                    tags = ", ".join(f"{tag} {score:.3f}" for tag, score in best)
                    progress.write(f"{result.path}: {tags}")
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    if args.json:
        print(json.dumps(printed, indent=2))
    if failures:
        print(f"tfmood predict: {len(failures)} of {len(paths)} files could not be tagged:",
              file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def _run_mel_batch(args: argparse.Namespace) -> int:
    from tfmood import tagger
    from tfmood.models.vggish import load_model

    if not args.output:
        raise ValueError("--input needs -o/--output, the .npy of scores to write")
    if args.model and args.model.lower().endswith(".tflite"):
        raise ValueError(f"{args.model}: --input runs a .keras model (TFLite: tag audio files)")
    model = load_model(args.model or tagger.default_model())
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

