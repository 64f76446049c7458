"""Tagging whole music libraries: scan, decode in parallel, window, batch, infer, write.

    find_audio(paths) -> [path]                  files and folders (recursive), sorted
    track_windows(mel, n_frames, first_window)   (windows, bands, n_frames) model inputs of a track
    load_runner(path) -> runner                  a .keras or mel-in .tflite model, batch in, scores out
    tag_tracks(runner, paths, ...) -> iterator   TrackResult per track (scores averaged over windows)
    ResultWriter(path)                           CSV / JSONL rows, appended and flushed, resumable

Windows: a track is cut into consecutive `n_frames`-frame windows (1400 frames, ~30 s at 12 kHz,
hop 256, for the MTG-Jamendo models). A partial last window is kept when it holds at least half
a window of new frames, and is then the track's last `n_frames` frames (it overlaps the window
before it); a shorter remainder is dropped. A track shorter than one window is tiled from its
start, as the data pipeline does (`tfmood.data.pipeline.tile_or_crop`). The track's scores are the mean of
its windows' scores. `first_window=True` keeps MediaEval's convention, the first window only, and
then decodes only the first ~30 s of each file.

Speed: a pool of threads decodes files and computes log-mels (libsndfile, numpy's FFT and matmul
release the GIL) while the calling thread runs the model on batches of windows gathered across
tracks; only a few tracks are in flight at once, so memory stays bounded whatever the library.
The log-mel here is the `tfmood.layers.log_mel.LogMel` front-end (same frames, window, Slaney
filterbank, dB floor) computed with an FFT instead of the layer's DFT convolution, which is
~20 times fewer operations; the two agree to float32 rounding.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import scipy.special

from tfmood.data.audio import SAMPLE_RATE, load_audio
from tfmood.data.mel_filterbank import slaney_mel_filterbank
from tfmood.data.tags import MOODTHEME_TAGS

# The shipped pretrained model, in the repository's saved_models/ folder.
MODELS_DIR = Path(__file__).resolve().parent.parent / "saved_models"
DEFAULT_MODEL = MODELS_DIR / "mtg-jamendo-baseline.keras"

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")
N_FRAMES = 1400
N_FFT = 512
HOP = 256
N_MELS = 96
FORMATS = ("csv", "jsonl")
# Windows gathered per runner call (the CLI passes its own, 4).
BATCH_SIZE = 4
# Windows per Keras model step: a batch is run in chunks of this many. The baseline's first block
# holds 34 MB of activations per window and TensorFlow's (oneDNN) scratch grows with the batch:
# steady RSS after 8 steps was 780 MB at 1 window per step, 857 MB at 2 and 1001 MB at 4, and on
# 2 cores one window per step was as fast per window as 2 and faster than 4 (0.05 s vs 0.05 s vs
# 0.09-0.19 s). See BENCHMARKS.md, the tagger section.
KERAS_STEP = 1


def default_model() -> str:
    """The shipped model's path, or FileNotFoundError saying where it was expected."""
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(
            f"{DEFAULT_MODEL}: the shipped model is missing (pass --model MODEL.keras|.tflite)"
        )
    return str(DEFAULT_MODEL)


# ----------------------------------------------------------------------------------------------
# Library scanning


def find_audio(paths: Iterable[str | os.PathLike],
               extensions: Sequence[str] = AUDIO_EXTENSIONS) -> List[str]:
    """The audio files among `paths`: files as given, folders searched recursively (sorted).

    A file named explicitly is kept whatever its extension (so a bad file is reported, not
    silently passed over); in folders only files with one of `extensions` (any case) are taken.
    Duplicates are dropped, first occurrence kept.

    Raises:
        FileNotFoundError: a path that is neither a file nor a folder.
    """
    found, seen = [], set()
    extensions = tuple(e.lower() for e in extensions)

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            inside = []
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                inside.extend(os.path.join(root, name) for name in files
                              if name.lower().endswith(extensions) and not name.startswith("."))
            for file in sorted(inside):
                add(file)
        elif os.path.isfile(path):
            add(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


# ----------------------------------------------------------------------------------------------
# Front-end and windows


_MEL_MATRIX = None


def _mel_matrix() -> np.ndarray:
    global _MEL_MATRIX
    if _MEL_MATRIX is None:
        bank = slaney_mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 0.0, SAMPLE_RATE / 2)
        _MEL_MATRIX = np.ascontiguousarray(bank.T, dtype=np.float32)  # (bins, mels)
    return _MEL_MATRIX


_WINDOW = np.hanning(N_FFT).astype(np.float32)


def log_mel(waveform: np.ndarray, max_frames: Optional[int] = None) -> np.ndarray:
    """The `LogMel` spectrogram (96, ceil(n / 256) + 1) in dB of a 12 kHz mono waveform.

    Args:
        waveform: float32 (n_samples,) at 12 kHz.
        max_frames: compute only the first `max_frames` frames (None: all).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    n_frames = -(-waveform.size // HOP) + 1
    if max_frames is not None:
        n_frames = min(n_frames, max_frames)
    left = N_FFT // 2
    padded = np.zeros(left + waveform.size + N_FFT - left + HOP - 1, np.float32)
    padded[left:left + waveform.size] = waveform
    matrix = _mel_matrix()
    out = np.empty((n_frames, N_MELS), np.float32)
    chunk = 2048  # frames per FFT block: bounded scratch memory for long tracks
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        frames = np.lib.stride_tricks.as_strided(
            padded[start * HOP:], shape=(stop - start, N_FFT),
            strides=(HOP * padded.strides[0], padded.strides[0]), writeable=False)
        spectrum = np.fft.rfft(frames * _WINDOW, axis=1)
        power = spectrum.real.astype(np.float32) ** 2 + spectrum.imag.astype(np.float32) ** 2
        np.matmul(power, matrix, out=out[start:stop])
    np.maximum(out, 1e-10, out=out)
    np.log10(out, out=out)
    out *= 20.0
    return np.ascontiguousarray(out.T)


def n_windows(n_frames_track: int, n_frames: int = N_FRAMES, first_window: bool = False) -> int:
    """How many windows a track of `n_frames_track` mel frames is cut into."""
    if first_window or n_frames_track <= n_frames:
        return 1
    full, rest = divmod(n_frames_track, n_frames)
    return full + (1 if 2 * rest >= n_frames else 0)


def track_windows(mel: np.ndarray, n_frames: int = N_FRAMES,
                  first_window: bool = False) -> np.ndarray:
    """The model inputs of one track: (windows, bands, n_frames) float32.

    Consecutive windows from the start; a partial last window with at least half a window of
    frames becomes the track's last `n_frames` frames; a track shorter than a window is tiled.
    """
    mel = np.asarray(mel, dtype=np.float32)
    length = mel.shape[1]
    if length == 0:
        raise ValueError("the spectrogram has no frames")
    if length < n_frames:
        repeats = -(-n_frames // length)
        return np.tile(mel, (1, repeats))[None, :, :n_frames]
    count = n_windows(length, n_frames, first_window)
    starts = [i * n_frames for i in range(min(count, length // n_frames))]
    if len(starts) < count:
        starts.append(length - n_frames)
    return np.stack([mel[:, s:s + n_frames] for s in starts])


def first_window_seconds(n_frames: int = N_FRAMES) -> float:
    """Seconds to decode so the first `n_frames` frames equal those of the whole file.

    Frame i reads samples up to i * 256 + 256; a margin covers the resampler's last sample.
    """
    return (n_frames * HOP + N_FFT) / SAMPLE_RATE + 0.5


def load_windows(path: str, n_frames: int = N_FRAMES, first_window: bool = False) -> np.ndarray:
    """Decode a file and cut it into model windows (see `track_windows`)."""
    max_seconds = first_window_seconds(n_frames) if first_window else None
    waveform = load_audio(path, max_seconds=max_seconds)
    mel = log_mel(waveform, max_frames=n_frames if first_window else None)
    del waveform
    return track_windows(mel, n_frames, first_window)


# ----------------------------------------------------------------------------------------------
# Models


class KerasRunner:
    """A .keras model: a batch of (bands, frames) log-mels in, (batch, tags) scores out."""

    def __init__(self, model, step: int = KERAS_STEP):
        self.model = model
        self.step = max(1, int(step))
        shape = model.input_shape
        if len(shape) != 3:
            raise ValueError(f"the model takes inputs of shape {shape}, not (batch, mels, frames)")
        self.n_mels, self.n_frames = shape[1], shape[2]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # `step` windows per model call, whatever the batch gathered (memory: see KERAS_STEP).
        # With step 1 every call has the same shape, so the predict function never retraces.
        return np.concatenate([
            np.asarray(self.model.predict_on_batch(batch[i:i + self.step]), dtype=np.float32)
            for i in range(0, len(batch), self.step)])


class TFLiteRunner:
    """A mel-in .tflite model run with LiteRT (via `tfmood.deploy.runtime`), one window at a time.

    One interpreter, allocated once, invoked per window: the exported graphs fix batch 1 in
    their reshapes, so `resize_tensor_input` to a batch fails in XNNPACK ("failed to reshape"),
    and per window costs no more (61 ms float32, 16 ms int8 on one thread). What made the runner
    slow in the pipeline was the front-end importing TensorFlow in a decode thread (see
    `tfmood.data.mel_filterbank`): 0.43 -> ~1.3 tracks/s whole-track, peak RSS 952 -> ~190 MB.
    """

    def __init__(self, flatbuffer: bytes, path: str = "model", num_threads: Optional[int] = None):
        from tfmood.deploy import runtime

        self._quantize, self._dequantize = runtime.quantize, runtime.dequantize
        # Half the cores: XNNPACK's threads spin, and starve the decoding threads if they
        # take every core (on 2 cores, 2 interpreter threads tagged 7x slower than 1).
        self.interpreter = runtime.make_interpreter(
            flatbuffer, num_threads=num_threads or max(1, (os.cpu_count() or 1) // 2))
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()
        shape = list(self.input["shape"])
        if len(shape) != 3:
            raise ValueError(
                f"{path}: takes inputs of shape {shape}; `predict` runs mel-in models "
                "(1, mels, frames) (use the -int8 / float32 mel-in export, not an audio-in one)")
        self.n_mels, self.n_frames = shape[1], shape[2]
        # An export with --logits (the shipped int8 model) leaves the sigmoid to the app.
        self.logits = runtime.outputs_logits(flatbuffer)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        for example in batch:
            self.interpreter.set_tensor(self.input["index"],
                                        self._quantize(example[None], self.input))
            self.interpreter.invoke()
            output = self.interpreter.get_tensor(self.output["index"])
            outputs.append(self._dequantize(output, self.output))
        outputs = np.concatenate(outputs).astype(np.float32)
        return scipy.special.expit(outputs) if self.logits else outputs


def load_runner(path: Optional[str] = None, n_frames: Optional[int] = None,
                num_threads: Optional[int] = None):
    """A model runner for a .keras or .tflite file (None: the shipped model).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a model tfmood can run here (the message names the file).
    """
    path = default_model() if path is None else os.fspath(path)
    if path.lower().endswith(".tflite"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such model file")
        with open(path, "rb") as handle:
            flatbuffer = handle.read()
        try:
            runner = TFLiteRunner(flatbuffer, path, num_threads)
        except (RuntimeError, ValueError) as error:
            if str(path) in str(error):
                raise
            raise ValueError(f"{path}: not a loadable TFLite model ({error})") from None
    else:
        from tfmood.models.vggish import load_model

        runner = KerasRunner(load_model(path))
    if runner.n_frames is None:
        runner.n_frames = n_frames or N_FRAMES
    if runner.n_mels != N_MELS:
        raise ValueError(f"{path}: the model takes {runner.n_mels} mel bands, not {N_MELS}")
    return runner


# ----------------------------------------------------------------------------------------------
# Tagging


@dataclasses.dataclass
class TrackResult:
    path: str
    scores: Optional[np.ndarray] = None  # (tags,) mean over windows; None when it failed
    windows: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def default_workers(first_window: bool = False) -> int:
    """Decoding threads: all cores but one (the model's), at least 1, at most 4.

    With `first_window` all cores, at most 4: decoding ~30 s per track is then the bottleneck
    (one window of model time per track) and holds little memory (on 2 cores, 17 tracks took
    2.4 s with 2 threads vs 4.0 s with 1). Whole tracks keep a core for the model, and memory:
    a second decode thread there raised peak RSS from 872 to 1002 MB for no clear gain.
    """
    cores = os.cpu_count() or 1
    return max(1, min(4, cores if first_window else cores - 1))


def tag_tracks(runner: Callable[[np.ndarray], np.ndarray], paths: Sequence[str],
               n_frames: int = N_FRAMES, first_window: bool = False, batch_size: int = BATCH_SIZE,
               workers: Optional[int] = None, in_flight: Optional[int] = None,
               window_scores: bool = False) -> Iterator[TrackResult]:
    """Tag tracks: yields one `TrackResult` per path, in order, as soon as it is scored.

    Files are decoded and turned into windows by `workers` threads, at most `in_flight` tracks
    ahead of the model; windows of several tracks are batched together (`batch_size`). A file
    that cannot be decoded yields a result with `error` set (its reason) and no scores.

    Args:
        runner: a batch (N, bands, n_frames) -> (N, tags) scores callable (`load_runner`).
        paths: audio files.
        window_scores: attach the per-window scores as `result.window_scores` (tests, analysis).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    workers = workers or default_workers(first_window)
    in_flight = max(in_flight or workers + 2, 1)
    pending = collections.deque()  # [path, future or windows, scores list, n windows]
    batch: List[np.ndarray] = []
    owners: List[list] = []
    todo = iter(paths)
    exhausted = False

    def flush_batch() -> None:
        if not batch:
            return
        scores = runner(np.stack(batch))
        for entry, score in zip(owners, scores):
            entry[2].append(score)
        batch.clear()
        owners.clear()

    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tfmood-decode") as pool:
        while True:
            while not exhausted and len(pending) < in_flight:
                path = next(todo, None)
                if path is None:
                    exhausted = True
                    break
                future = pool.submit(load_windows, path, n_frames, first_window)
                pending.append([path, future, [], 0, False])
            if not pending:
                break
            # Queue the windows of every decoded track, in order, then run full batches.
            for entry in pending:
                if entry[4]:
                    continue
                future = entry[1]
                if not future.done() and (entry is not pending[0] or batch):
                    break
                entry[4] = True
                try:
                    windows = future.result()
                except (ValueError, FileNotFoundError, OSError, RuntimeError) as error:
                    entry[1] = error
                    continue
                entry[1] = None
                entry[3] = len(windows)
                for window in windows:
                    batch.append(window)
                    owners.append(entry)
                    if len(batch) >= batch_size:
                        flush_batch()
            head = pending[0]
            if head[4] and not isinstance(head[1], BaseException) and len(head[2]) < head[3]:
                flush_batch()  # the oldest track waits on a partial batch: run it
            while pending and pending[0][4] and (
                    isinstance(pending[0][1], BaseException) or len(pending[0][2]) == pending[0][3]):
                path, outcome, scores, count, _ = pending.popleft()
                if isinstance(outcome, BaseException):
                    message = str(outcome)
                    yield TrackResult(path, error=message if path in message
                                      else f"{path}: {message}")
                    continue
                stacked = np.stack(scores)
                result = TrackResult(path, stacked.mean(axis=0), count)
                if window_scores:
                    result.window_scores = stacked
                yield result


# ----------------------------------------------------------------------------------------------
# Output


def output_format(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "json":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown output format (use a .csv or .jsonl file)")
    return suffix


class ResultWriter:
    """Per-track rows (path, windows, one score per tag) appended to a CSV or JSONL file.

    Opening an existing file resumes it: the tracks it already holds are `done`, and a
    half-written last line (a run killed while writing) is cut off. Each row is flushed and
    fsync'ed as it is written, so a kill loses at most the track in progress.
    """

    def __init__(self, path: str, tags: Sequence[str] = MOODTHEME_TAGS):
        self.path = os.fspath(path)
        self.format = output_format(self.path)
        self.tags = list(tags)
        self.header = ["path", "windows"] + self.tags
        self.done = set()
        exists = os.path.isfile(self.path) and os.path.getsize(self.path) > 0
        if exists:
            self._resume()
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        if not exists and self.format == "csv":
            self._write_line(self._csv_line(self.header))

    @staticmethod
    def key(path: str) -> str:
        return os.path.abspath(path)

    def _resume(self) -> None:
        with open(self.path, "rb") as handle:
            data = handle.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a half-written last line: cut it off
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)
            data = data[:complete]
        lines = data.decode("utf-8").splitlines()
        if self.format == "csv":
            rows = list(csv.reader(lines))
            if not rows or rows[0] != self.header:
                raise ValueError(f"{self.path}: exists but is not a tfmood tags CSV "
                                 "(its header differs); remove it or choose another -o")
            for row in rows[1:]:
                if row:
                    self.done.add(self.key(row[0]))
        else:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.done.add(self.key(row["path"]))
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{self.path}: line {number} is not a tfmood tags row; "
                                     "remove the file or choose another -o") from None

    @staticmethod
    def _csv_line(row) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        return buffer.getvalue()

    def _write_line(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, result: TrackResult) -> None:
        scores = [float(f"{s:.6g}") for s in np.asarray(result.scores, dtype=np.float64)]
        if self.format == "csv":
            line = self._csv_line([result.path, result.windows] + scores)
        else:
            row = {"path": result.path, "windows": result.windows}
            row.update(zip(self.tags, scores))
            line = json.dumps(row) + "\n"
        self._write_line(line)
        self.done.add(self.key(result.path))

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_results(path: str) -> List[dict]:
    """The rows of a tags file: [{"path", "windows", "scores": (tags,) array}]."""
    rows = []
    if output_format(path) == "csv":
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            for row in reader:
                rows.append({"path": row[0], "windows": int(row[1]),
                             "scores": np.array(row[2:], np.float32), "tags": header[2:]})
    else:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                tags = [k for k in row if k not in ("path", "windows")]
                rows.append({"path": row["path"], "windows": row["windows"],
                             "scores": np.array([row[t] for t in tags], np.float32),
                             "tags": tags})
    return rows


def audio_hours(paths: Sequence[str]) -> float:
    """Total duration of audio files in hours (from their headers; unreadable ones count 0)."""
    import soundfile as sf

    total = 0.0
    for path in paths:
        try:
            info = sf.info(path)
            total += info.frames / info.samplerate
        except Exception:  # noqa: BLE001  (a broken file simply adds nothing)
            pass
    return total / 3600.0 if math.isfinite(total) else 0.0
