"""Audio files to 12 kHz mono waveforms, as essentia's MonoLoader made them for MTG-Jamendo.

Decoding uses tensorflow-io (WAV, MP3, FLAC and OGG Vorbis, recognised by their content); every
use of tensorflow-io in tfmood lives in this module, so it can be replaced in one place. The
channels are averaged to mono and the result is resampled by linear interpolation exactly as
libsamplerate's SRC_LINEAR converter does it (MonoLoader's `resampleQuality=4`): the MTG-Jamendo
melspecs were computed from audio resampled that way, aliasing included, and a band-limited
resampler lands further from them (see `resample_linear`).
"""

from __future__ import annotations

import math
import os
import struct
import threading
from pathlib import Path

import numpy as np

SAMPLE_RATE = 12000
SUPPORTED_FORMATS = "WAV, MP3, FLAC or OGG Vorbis"

# tensorflow-io's decoders are not thread-safe: concurrent decodes can return each other's
# samples. Every decode holds this lock (the mel computation after it runs in parallel).
_DECODE_LOCK = threading.Lock()

# Integer PCM is scaled to [-1, 1) by its full-scale value, as audio decoders do.
_PCM_FULL_SCALE = {"int16": 32768.0, "int32": 2147483648.0}


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file, average its channels and resample it.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.
        sample_rate: the output rate in Hz (12 kHz for the MTG-Jamendo front-end).

    Returns:
        The mono waveform, float32, shape (n_samples,).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a supported audio format, is corrupt or holds no samples.
    """
    samples, file_rate = decode_audio(path)
    mono = downmix_to_mono(samples)
    return resample_linear(mono, file_rate, sample_rate)


def load_audio_tensor(path, sample_rate: int = SAMPLE_RATE):
    """`load_audio` for a `tf.data` pipeline: a scalar string tensor in, a float32 tensor out.

    The decoder reports the file's sample rate only eagerly, so this wraps `load_audio` in
    `tf.py_function`; it works inside `Dataset.map` but cannot be saved into a model graph.

    Args:
        path: a scalar `tf.string` tensor naming an audio file.
        sample_rate: the output rate in Hz.

    Returns:
        A float32 tensor of shape (n_samples,).
    """
    import tensorflow as tf

    def load(path_tensor):
        return load_audio(path_tensor.numpy().decode("utf-8"), sample_rate)

    waveform = tf.py_function(load, [path], Tout=tf.float32)
    waveform.set_shape([None])
    return waveform


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a whole audio file with tensorflow-io.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.

    Returns:
        `(samples, sample_rate)`: float32 samples of shape (n_samples, n_channels) scaled to
        [-1, 1], and the file's sample rate in Hz.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a supported audio format, is corrupt or holds no samples.
    """
    name = os.fspath(path)
    if not Path(name).is_file():
        raise FileNotFoundError(f"{name}: no such audio file")
    if Path(name).stat().st_size == 0:
        raise ValueError(f"{name}: the file is empty")

    import tensorflow as tf
    import tensorflow_io as tfio

    try:
        with _DECODE_LOCK:
            audio = tfio.audio.AudioIOTensor(name)
            samples = audio.to_tensor().numpy()
            sample_rate = int(audio.rate.numpy())
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


def downmix_to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels, as MonoLoader's `downmix="mean"` does.

    Args:
        samples: float32 array of shape (n_samples, n_channels), or already mono (n_samples,).

    Returns:
        float32 array of shape (n_samples,).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float32)


def resample_linear(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample by linear interpolation, reproducing libsamplerate's SRC_LINEAR converter.

    The converter's conventions are kept so the output matches essentia's resampling to float32
    rounding: the ratio is the float32 quotient `rate_out / rate_in` (essentia passes it as
    float); output sample m is the input read at position `m / ratio - 1` (the converter starts
    with the first sample held one step back), clamped to the first sample before the start;
    and outputs are produced while `m / ratio < n_samples`, i.e. `ceil(n_samples * ratio)`.
    There is no anti-aliasing filter: energy above the new Nyquist folds down, as it did in the
    MTG-Jamendo melspecs.

    Args:
        samples: mono float array of shape (n_samples,).
        rate_in: the input sample rate in Hz.
        rate_out: the output sample rate in Hz.

    Returns:
        float32 array of shape (about ceil(n_samples * rate_out / rate_in),).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} and {rate_out}")
    if rate_in == rate_out or samples.size == 0:
        return samples.copy()
    ratio = float(np.float32(rate_out) / np.float32(rate_in))
    step = 1.0 / ratio
    # Outputs are produced while their read position m * step is inside the input.
    n_out = math.ceil(samples.size / step)
    while n_out > 0 and (n_out - 1) * step >= samples.size:
        n_out -= 1
    while n_out * step < samples.size:
        n_out += 1
    positions = np.arange(n_out, dtype=np.float64) * step - 1.0
    resampled = np.interp(positions, np.arange(samples.size, dtype=np.float64), samples)
    return resampled.astype(np.float32)
