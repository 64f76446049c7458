"""Audio files to 12 kHz mono waveforms, as essentia's MonoLoader made them for MTG-Jamendo.

Decoding uses libsndfile through the `soundfile` package: WAV, FLAC, OGG Vorbis and MP3
(libsndfile >= 1.1 decodes MPEG audio with libmpg123, trimming the encoder delay and padding that
a LAME/Xing header records, as essentia's ffmpeg-based loader does, so lengths and mel frame
counts agree; MP3 samples are then rounded to 16 bits as essentia hands them over). soundfile
releases the GIL while libsndfile decodes, and decodes of different files share no state, so
files can be decoded in parallel threads. The channels are averaged to mono and the result is
resampled by linear interpolation exactly as libsamplerate's SRC_LINEAR converter does it
(MonoLoader's `resampleQuality=4`): the MTG-Jamendo melspecs were computed from audio resampled
that way, aliasing included, and a band-limited resampler lands further from them (see
`resample_linear`).

Decoding with tensorflow-io, an optional extra, lives in `tfmood.data.audio_tfio`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

SAMPLE_RATE = 12000
SUPPORTED_FORMATS = "WAV, MP3, FLAC or OGG Vorbis"

# libsndfile reads more than these (AIFF, 64-bit float WAV, Opus, ...), but these are the
# formats and encodings tfmood's front-end is tested against, and what it accepted before.
_PCM_WAV = frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"})
_SUPPORTED_ENCODINGS = {
    "WAV": _PCM_WAV,
    "WAVEX": _PCM_WAV,
    "FLAC": frozenset({"PCM_S8", "PCM_16", "PCM_24"}),
    "OGG": frozenset({"VORBIS"}),
    "MP3": frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"}),
}

# libsndfile error codes (sf_error). 7 (SFE_BAD_FILE) is what its MPEG reader returns when
# libmpg123 finds no decodable stream in content that looked like MPEG audio.
_UNRECOGNISED_FORMAT, _UNSUPPORTED_ENCODING, _NO_MPEG_STREAM = 1, 4, 7

# libsndfile logs a WAV data chunk that runs past the end of the file as
# "data : <declared bytes> (should be <bytes present>)" and then silently reads what is there.
_WAV_DATA_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers leave the data size unset (0 or 0xFFFFFFFF): not a truncation.
_WAV_UNSET_SIZES = (0, 0xFFFFFFFF)

# Output samples per resampling block: bounds the float64 scratch of np.interp (~6 MB).
_RESAMPLE_BLOCK = 1 << 18

# The largest Vorbis block (samples): the most a stream's last block can decode short of the
# length its last granule position announces.
_VORBIS_MAX_BLOCK = 8192

# essentia hands MP3 audio over as 16-bit samples (ffmpeg's fixed-point MP3 decoder; older
# essentia converted every decode to int16), clipped at full scale. libmpg123 decodes to float,
# and a loud master decodes to peaks above 1.0: unclipped, its log-mel was 0.2 dB off essentia's,
# rounded to the same 16-bit grid it is within 0.01 dB.
_INT16_FULL_SCALE = 32768

# The length tags of an MP3's first frame; without one libmpg123 only estimates the length.
_MP3_LENGTH_TAGS = (b"Xing", b"Info", b"VBRI")
_MP3_FRAME_SYNC = re.compile(rb"\xff[\xe0-\xff]")  # 11 set bits start an MPEG audio frame
_MP3_SEARCH_BYTES = 8192  # where to look for the first frame after any ID3v2 tag


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    decoder: Callable = None,
) -> np.ndarray:
    """Decode an audio file, average its channels and resample it.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.
        sample_rate: the output rate in Hz (12 kHz for the MTG-Jamendo front-end).
        max_seconds: decode only the file's first `max_seconds` seconds (None: all of it).
            The result is then the start of the whole file's waveform, sample for sample.
        decoder: `decode_audio` (libsndfile) by default; `tfmood.data.audio_tfio` passes its own.

    Returns:
        The mono waveform, float32, shape (n_samples,).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a supported audio format, is corrupt or holds no samples.
    """
    samples, file_rate = (decoder or decode_audio)(path, max_seconds=max_seconds)
    mono = downmix_to_mono(samples)
    del samples  # the decoded channels go before resampling (mono may be a view of them)
    return resample_linear(mono, file_rate, sample_rate)


def load_audio_tensor(
    path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None, loader: Callable = None
):
    """`load_audio` for a `tf.data` pipeline: a scalar string tensor in, a float32 tensor out.

    libsndfile runs outside the TensorFlow graph, so this wraps `load_audio` in
    `tf.py_function`; it works inside `Dataset.map` (with `num_parallel_calls`, files are
    decoded in parallel) but cannot be saved into a model graph.

    Args:
        path: a scalar `tf.string` tensor naming an audio file.
        sample_rate: the output rate in Hz.
        max_seconds: decode only the first `max_seconds` seconds (None: the whole file).
        loader: `load_audio` by default; `tfmood.data.audio_tfio` passes its own.

    Returns:
        A float32 tensor of shape (n_samples,).
    """
    import tensorflow as tf

    load_file = loader or load_audio

    def load(path_tensor):
        return load_file(path_tensor.numpy().decode("utf-8"), sample_rate, max_seconds)

    waveform = tf.py_function(load, [path], Tout=tf.float32)
    waveform.set_shape([None])
    return waveform


def decode_audio(
    path: str | os.PathLike, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode an audio file, or its first `max_seconds` seconds, with libsndfile.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.
        max_seconds: decode at most `round(max_seconds * file_rate)` samples per channel (at
            least one) from the start (None: the whole file). A shorter file is decoded whole.

    Returns:
        `(samples, sample_rate)`: float32 samples of shape (n_samples, n_channels) scaled to
        [-1, 1] (integer PCM divided by its full scale, 2 ** (bits - 1); float WAV as stored;
        MP3 rounded to 16-bit values and clipped to [-1, 32767 / 32768], as essentia decodes
        it), and the file's sample rate in Hz.

    Raises:
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

    try:
        handle = sf.SoundFile(name)
    except sf.LibsndfileError as error:
        raise ValueError(f"{name}: {_describe_open_error(error)}") from None
    with handle:
        _check_supported(handle, name)
        if handle.format in ("WAV", "WAVEX"):
            _check_wav_data_size(handle, name)
        limit = -1 if max_seconds is None else max(1, round(max_seconds * handle.samplerate))
        samples = _read(handle, limit, name)
        if handle.format == "MP3":
            samples = _to_16_bit(samples)
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"{name}: the file holds no audio samples (zero length)")
    return samples, handle.samplerate


def _describe_open_error(error) -> str:
    """A one-line reason for a file libsndfile could not open."""
    if error.code in (_UNRECOGNISED_FORMAT, _NO_MPEG_STREAM):
        return f"unsupported or unrecognised audio format (expected {SUPPORTED_FORMATS})"
    reason = error.error_string.strip().rstrip(".")
    if error.code == _UNSUPPORTED_ENCODING:
        return f"unsupported audio encoding ({reason})"
    return f"corrupt or truncated audio file ({reason})"


def _check_supported(handle, name: str) -> None:
    """Raise ValueError unless the open file is one of `_SUPPORTED_ENCODINGS`."""
    encodings = _SUPPORTED_ENCODINGS.get(handle.format)
    if encodings is None:
        raise ValueError(
            f"{name}: unsupported or unrecognised audio format "
            f"({handle.format_info}; expected {SUPPORTED_FORMATS})"
        )
    if handle.subtype not in encodings:
        raise ValueError(
            f"{name}: unsupported audio encoding ({handle.subtype_info} in {handle.format_info})"
        )


def _check_wav_data_size(handle, name: str) -> None:
    """Raise ValueError if a WAV file's data chunk is cut short (libsndfile would read on)."""
    short = _WAV_DATA_SHORT.search(handle.extra_info)
    if short is None:
        return
    declared, present = int(short.group(1)), int(short.group(2))
    if declared > present and declared not in _WAV_UNSET_SIZES:
        raise ValueError(
            f"{name}: corrupt or truncated audio file "
            f"(the data chunk declares {declared} bytes, the file holds {present})"
        )


def _read(handle, limit: int, name: str) -> np.ndarray:
    """Read `limit` frames (-1: all) as float32 (n_samples, n_channels), checking the length."""
    try:
        samples = handle.read(limit, dtype="float32", always_2d=True)
    except sf.LibsndfileError as error:
        reason = error.error_string.strip().rstrip(".")
        raise ValueError(f"{name}: corrupt or truncated audio file ({reason})") from None
    if handle.format == "MP3":
        _check_mp3_length(handle, name, samples.shape[0], limit)
        return samples
    expected = handle.frames if limit < 0 else min(limit, handle.frames)
    if handle.format == "OGG" and limit < 0:
        # libsndfile takes an Ogg stream's length from its last granule position, which can
        # exceed what the final Vorbis block decodes to (by 104 samples in a HyperRogue track);
        # a stream cut short ends at its last complete page and reads to that length.
        expected -= _VORBIS_MAX_BLOCK
    if samples.shape[0] < expected:
        # The header promised more samples than the decoder found.
        raise ValueError(
            f"{name}: corrupt or truncated audio file "
            f"(decoded {samples.shape[0]} of {expected} samples)"
        )
    return samples


def _to_16_bit(samples: np.ndarray) -> np.ndarray:
    """Round float samples to the nearest 16-bit PCM value, clipped at full scale (exact)."""
    scaled = np.rint(samples * np.float32(_INT16_FULL_SCALE))
    np.clip(scaled, -_INT16_FULL_SCALE, _INT16_FULL_SCALE - 1, out=scaled)
    return scaled / np.float32(_INT16_FULL_SCALE)


def _check_mp3_length(handle, name: str, n_read: int, limit: int) -> None:
    """Raise ValueError if libsndfile may have stopped before the end of an MP3 stream.

    libsndfile never reads past the length libmpg123 reports. With a Xing/Info/VBRI tag that
    length is exact; without one it is estimated from the first frame's bitrate, which for a
    variable-bitrate file can be a fraction of the stream. A read that ends exactly at an
    estimated length is therefore unreliable. A shorter read is fine: MP3 decoders, essentia's
    included, decode a cut stream up to where it ends.
    """
    if n_read < handle.frames or 0 <= limit <= n_read or _has_mp3_length_tag(name):
        return
    raise ValueError(
        f"{name}: unsupported MP3 (no Xing/Info/VBRI length header: libsndfile stops at "
        f"libmpg123's length estimate, {n_read} samples, which falls short of a variable-bitrate "
        "stream; re-encode it, e.g. with LAME, which writes the header)"
    )


def _has_mp3_length_tag(name: str) -> bool:
    """Whether an MP3's first frame carries a Xing, Info or VBRI length tag."""
    with open(name, "rb") as handle:
        head = handle.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:
            # ID3v2: a 10-byte header, a size in four 7-bit bytes, then a footer if flagged.
            size = sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
            start = 10 + size + (10 if head[5] & 0x10 else 0)
        handle.seek(start)
        data = handle.read(_MP3_SEARCH_BYTES)
    sync = _MP3_FRAME_SYNC.search(data)
    if sync is None:
        return False
    # The tag follows the frame header and side information: at most 4 + 32 + 2 (CRC) bytes.
    first_frame = data[sync.start() + 4 : sync.start() + 48]
    return any(tag in first_frame for tag in _MP3_LENGTH_TAGS)


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
    # Channel by channel over contiguous columns, then one division: the sums of
    # `samples.mean(axis=1)` in the same order (equal for up to 7 channels), faster on
    # (n, 2) interleaved frames, whose row-wise reduction numpy does in short strided steps.
    total = samples[:, 0].copy()
    for channel in range(1, samples.shape[1]):
        total += samples[:, channel]
    total /= np.float32(samples.shape[1])
    return total


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
    # In blocks of output samples, each interpolating over only the input it reads: the float64
    # positions of a whole 4-minute 44.1 kHz track at once were 85 MB of scratch. np.interp
    # between two neighbouring samples uses only those two, so blocks change no sample.
    out = np.empty(n_out, np.float32)
    last = samples.size - 1
    for start in range(0, n_out, _RESAMPLE_BLOCK):
        stop = min(start + _RESAMPLE_BLOCK, n_out)
        positions = np.arange(start, stop, dtype=np.float64) * step - 1.0
        low = min(max(math.floor(positions[0]), 0), last)
        high = min(max(math.ceil(positions[-1]), 0), last)
        out[start:stop] = np.interp(
            positions, np.arange(low, high + 1, dtype=np.float64), samples[low : high + 1]
        )
    return out
