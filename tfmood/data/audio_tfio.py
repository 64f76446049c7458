"""Audio decoding with tensorflow-io, an optional extra (`pip install tfmood[tfio]`).

tfmood decodes audio with libsndfile (`tfmood.data.audio`). This module keeps tensorflow-io's
decoders for users who ask for them, e.g. to reproduce features computed with tfmood before it
moved to libsndfile. It is the only module of tfmood that uses tensorflow-io, and it imports it
on first use: tensorflow-io's last release (0.37.1) has no wheel for Python 3.13 and its native
ops do not load on TensorFlow 2.18 and later; where it cannot be imported, every function here
raises ImportError saying how to install it.

The decoded samples follow `tfmood.data.audio.decode_audio`'s conventions, with one difference: MP3
comes out as tensorflow-io's float samples, not rounded to 16 bits as essentia hands it over.
Decoding runs eagerly: tensorflow-io's graph-mode reader must be told each file's sample type
when the graph is traced (and aborts the process when a file differs), and its decoders are
not thread-safe, so `load_audio_tensor_tfio` wraps the eager decoder in `tf.py_function` and
decodes one file at a time.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import threading
from pathlib import Path

import numpy as np

from tfmood.data.audio import SAMPLE_RATE, SUPPORTED_FORMATS, load_audio, load_audio_tensor

INSTALL_HINT = (
    "pip install tfmood[tfio], on a TensorFlow and Python that tensorflow-io has a wheel for; "
    "tfmood.data.audio decodes the same formats with libsndfile without it"
)

# tensorflow-io's decoders are not thread-safe: concurrent decodes can return each other's
# samples. Every decode holds this lock.
_DECODE_LOCK = threading.Lock()

# Integer PCM is scaled to [-1, 1) by its full-scale value, as audio decoders do.
_PCM_FULL_SCALE = {"int16": 32768.0, "int32": 2147483648.0}


def require_tfio():
    """The `tensorflow_io` module, imported on first use.

    Returns:
        The imported `tensorflow_io` module.

    Raises:
        ImportError: tensorflow-io is not installed, or cannot load with this TensorFlow.
    """
    try:
        import tensorflow_io
    except ImportError as error:
        raise ImportError(f"tensorflow-io is not installed ({error}): {INSTALL_HINT}") from error
    except Exception as error:
        # A tensorflow-io built for another TensorFlow fails while loading its kernels, with
        # errors such as NotFoundError (undefined symbols) rather than ImportError.
        import tensorflow as tf

        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        reason = (str(error).splitlines() or [""])[0]
        raise ImportError(
            f"tensorflow-io cannot load with TensorFlow {tf.__version__} on Python {python} "
            f"({type(error).__name__}: {reason}): {INSTALL_HINT}"
        ) from error
    return tensorflow_io


def load_audio_tfio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """`tfmood.data.audio.load_audio` with tensorflow-io's decoders: decode, average, resample.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.
        sample_rate: the output rate in Hz.
        max_seconds: decode only the file's first `max_seconds` seconds (None: all of it).

    Returns:
        The mono waveform, float32, shape (n_samples,).

    Raises:
        ImportError: tensorflow-io cannot be imported.
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a supported audio format, is corrupt or holds no samples.
    """
    return load_audio(path, sample_rate, max_seconds, decoder=decode_audio_tfio)


def load_audio_tensor_tfio(path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None):
    """`load_audio_tfio` for a `tf.data` pipeline: a scalar string tensor in, float32 out.

    Args:
        path: a scalar `tf.string` tensor naming an audio file.
        sample_rate: the output rate in Hz.
        max_seconds: decode only the first `max_seconds` seconds (None: the whole file).

    Returns:
        A float32 tensor of shape (n_samples,).

    Raises:
        ImportError: tensorflow-io cannot be imported (checked when the pipeline is built).
    """
    require_tfio()
    return load_audio_tensor(path, sample_rate, max_seconds, loader=load_audio_tfio)


def decode_audio_tfio(
    path: str | os.PathLike, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode an audio file, or its first `max_seconds` seconds, with tensorflow-io.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.
        max_seconds: decode at most `round(max_seconds * file_rate)` samples per channel (at
            least one) from the start (None: the whole file).

    Returns:
        `(samples, sample_rate)`: float32 samples of shape (n_samples, n_channels) scaled to
        [-1, 1], and the file's sample rate in Hz.

    Raises:
        ImportError: tensorflow-io cannot be imported.
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a supported audio format, is corrupt or holds no samples,
            or `max_seconds` is not a positive number.
    """
    name = os.fspath(path)
    if max_seconds is not None and not 0 < max_seconds < math.inf:
        raise ValueError(f"max_seconds must be a positive number of seconds, got {max_seconds}")
    if not Path(name).is_file():
        raise FileNotFoundError(f"{name}: no such audio file")
    if Path(name).stat().st_size == 0:
        raise ValueError(f"{name}: the file is empty")

    tfio = require_tfio()
    import tensorflow as tf

    try:
        with _DECODE_LOCK:
            audio = tfio.audio.AudioIOTensor(name)
            sample_rate = int(audio.rate.numpy())
            if max_seconds is None:
                samples = audio.to_tensor().numpy()
            else:
                samples = audio[: max(1, round(max_seconds * sample_rate))].numpy()
    except tf.errors.OpError as error:
        raise ValueError(f"{name}: {_describe_decode_error(error)}") from None
    if samples.ndim != 2 or samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"{name}: the file holds no audio samples (zero length)")
    if sample_rate <= 0:
        raise ValueError(f"{name}: invalid sample rate {sample_rate}")
    if samples.dtype == np.float32 and _is_int32_pcm_wav(name):
        # tensorflow-io hands 32-bit integer WAV samples over as float32 bit patterns.
        samples = np.ascontiguousarray(samples).view(np.int32)
    return _to_float32(samples, name), sample_rate


def _describe_decode_error(error) -> str:
    """A one-line reason for a tensorflow-io decoding failure."""
    message = str(error.message if hasattr(error, "message") else error).splitlines()[0]
    if "unknown file type" in message:
        return f"unsupported or unrecognised audio format (expected {SUPPORTED_FORMATS})"
    # Strip TensorFlow's op-location prefix and suffix, keep the decoder's own words.
    reason = message.split("}}")[-1].split("[Op:")[0].strip()
    if "unsupported" in reason.lower():
        return f"unsupported audio encoding ({reason})"
    return f"corrupt or truncated audio file ({reason})"


def _is_int32_pcm_wav(name: str) -> bool:
    """Whether a file is a RIFF/WAVE file of 32-bit integer PCM samples."""
    pcm_format, extensible_format = 1, 0xFFFE
    with open(name, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return False
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return False
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = handle.read(min(size, 40))
                if len(fmt) < 16:
                    return False
                tag, bits = struct.unpack("<H", fmt[:2])[0], struct.unpack("<H", fmt[14:16])[0]
                if tag == extensible_format and len(fmt) >= 26:
                    tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID's first field
                return tag == pcm_format and bits == 32
            handle.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to even sizes


def _to_float32(samples: np.ndarray, name: str) -> np.ndarray:
    """Scale decoded samples to float32 in [-1, 1]."""
    kind = samples.dtype.name
    if kind == "float32":
        return samples
    if kind in _PCM_FULL_SCALE:
        return (samples.astype(np.float64) / _PCM_FULL_SCALE[kind]).astype(np.float32)
    if kind == "uint8":
        # 8-bit WAV is unsigned with its zero at 128.
        return ((samples.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise ValueError(f"{name}: unsupported sample type {kind}")
