"""Audio files to log-mel spectrograms, with the numbers of the `LogMel` layer.

The same front-end as the MTG-Jamendo precomputed melspecs: `tfmood.data.audio.load_audio` (decode,
mono, 12 kHz by linear interpolation) then `tfmood.layers.log_mel.LogMel` (96 Slaney mel bands,
dB), so a file turned into a mel here, a mel from the audio data pipeline and the front-end
inside an audio-in model all agree.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from tfmood import atomic
from tfmood.data.audio import SAMPLE_RATE, load_audio


@functools.cache
def _log_mel_layer(sample_rate: int, n_mels: int):
    from tfmood.layers.log_mel import LogMel

    return LogMel(sample_rate=sample_rate, n_mels=n_mels)


def waveform_to_mel(
    waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mels: int = 96
) -> np.ndarray:
    """The log-mel spectrogram of a mono waveform.

    Args:
        waveform: float array of shape (n_samples,) at `sample_rate`.
        sample_rate: its sample rate in Hz.
        n_mels: the number of mel bands.

    Returns:
        float32 array (n_mels, ceil(n_samples / 256) + 1) in dB.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (n_samples,), got {waveform.shape}")
    mel = _log_mel_layer(sample_rate, n_mels)(waveform[None, :])[0]
    return np.asarray(mel, dtype=np.float32)


def audio_file_to_mel(path: str | os.PathLike, n_mels: int = 96) -> np.ndarray:
    """The log-mel spectrogram of an audio file, as the MTG-Jamendo melspecs were made.

    Args:
        path: a WAV, MP3, FLAC or OGG Vorbis file.
        n_mels: the number of mel bands.

    Returns:
        float32 array (n_mels, T) in dB, T = ceil(n_samples_at_12_kHz / 256) + 1.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a supported audio format, is corrupt or holds no samples.
    """
    waveform = load_audio(path, SAMPLE_RATE)
    return waveform_to_mel(waveform, SAMPLE_RATE, n_mels)


def write_mel(audio_path: str | os.PathLike, output_path: str | os.PathLike) -> np.ndarray:
    """Compute the log-mel of an audio file and save it as a float32 .npy, atomically.

    Args:
        audio_path: a WAV, MP3, FLAC or OGG Vorbis file.
        output_path: the .npy to write; an existing file is replaced only once the new one is
            complete.

    Returns:
        The (96, T) float32 spectrogram that was written.
    """
    output_path = Path(output_path)
    if not output_path.parent.is_dir():
        raise FileNotFoundError(f"{output_path.parent}: output directory does not exist")
    mel = audio_file_to_mel(audio_path)
    atomic.save_npy(output_path, mel)
    return mel

