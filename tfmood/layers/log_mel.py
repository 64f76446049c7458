from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfmood.data.mel_filterbank import slaney_mel_filterbank


@keras.saving.register_keras_serializable(package="tfmood")
class LogMel(keras.layers.Layer):
    """Log-mel spectrogram of a waveform, matching the MTG-Jamendo (essentia) melspecs.

    Frames of `n_fft` samples every `hop_length` samples, the first centred on sample 0 with zero
    padding (essentia's FrameGenerator: `ceil(n_samples / hop_length) + 1` frames), symmetric
    Hann window (`numpy.hanning`), power spectrum, Slaney-scale mel filterbank with Slaney area
    normalisation (`librosa.filters.mel(htk=False, norm="slaney")`), then
    `20 * log10(max(mel, amin))` (essentia's `lin2db` with scale 2 on power, down to -200 dB).

    The windowed DFT is a strided 1-D convolution with fixed cosine and sine kernels, and the
    power is summed inside the mel matrix product, so the layer converts to TensorFlow Lite
    builtin operators only (PAD, CONV_2D, MUL, FULLY_CONNECTED or BATCH_MATMUL, MAXIMUM, LOG,
    TRANSPOSE) and can sit at the front of an audio-in TFLite model. It has no weights.

    Args:
        sample_rate: sample rate of the input waveform in Hz.
        n_fft: frame length in samples (also the DFT length).
        hop_length: samples between the centres of successive frames.
        n_mels: number of mel bands.
        f_min: lowest filterbank frequency in Hz.
        f_max: highest filterbank frequency in Hz; `None` means `sample_rate / 2`.
        amin: floor applied to the mel power before the logarithm.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: waveform of shape (batch, n_samples), any float dtype.

    Returns:
        float32 tensor of shape (batch, n_mels, ceil(n_samples / hop_length) + 1), in dB.

    Example:
    >>> layer = LogMel()
    >>> layer(np.zeros((2, 12000), "float32")).shape
    (2, 96, 48)

    Reference:
        Bogdanov et al., "The MTG-Jamendo dataset for automatic music tagging", ICML 2019
        workshop (the melspectrogram script of its repository defines these parameters).
    """

    def __init__(
        self,
        sample_rate: int = 12000,
        n_fft: int = 512,
        hop_length: int = 256,
        n_mels: int = 96,
        f_min: float = 0.0,
        f_max: float | None = None,
        amin: float = 1e-10,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sample_rate = _positive_int("sample_rate", sample_rate)
        self.n_fft = _positive_int("n_fft", n_fft)
        self.hop_length = _positive_int("hop_length", hop_length)
        self.n_mels = _positive_int("n_mels", n_mels)
        self.f_min = float(f_min)
        self.f_max = float(sample_rate / 2 if f_max is None else f_max)
        self.amin = float(amin)
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max} "
                f"with sample_rate={sample_rate}"
            )
        if self.amin <= 0.0:
            raise ValueError(f"amin must be positive, got {amin}")
        self.input_spec = keras.layers.InputSpec(ndim=2)
        self._dft_kernel = _windowed_dft_kernel(self.n_fft)
        mel_matrix = slaney_mel_filterbank(
            self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max
        ).T
        # Stacked twice: [re^2, im^2] @ [M; M] = (re^2 + im^2) @ M, the power's mel projection.
        self._mel_matrix = np.concatenate([mel_matrix, mel_matrix], axis=0).astype(np.float32)

    def call(self, inputs):
        waveform = ops.cast(inputs, "float32")
        # Centre frame 0 on sample 0 and pad the end so the frames run up to the first one
        # centred at or past the end of the signal: ceil(n / hop) + 1 frames, as essentia cuts.
        left = self.n_fft // 2
        right = self.n_fft - left + self.hop_length - 1
        padded = ops.pad(waveform, [[0, 0], [left, right]])
        spectrum = ops.conv(
            ops.expand_dims(padded, -1),
            ops.convert_to_tensor(self._dft_kernel),
            strides=self.hop_length,
            padding="valid",
        )
        mel_power = ops.matmul(ops.square(spectrum), ops.convert_to_tensor(self._mel_matrix))
        decibels = (20.0 / math.log(10.0)) * ops.log(ops.maximum(mel_power, self.amin))
        return ops.transpose(decibels, (0, 2, 1))

    def n_frames(self, n_samples: int) -> int:
        """The number of frames for a waveform of `n_samples` samples."""
        return -(-int(n_samples) // self.hop_length) + 1

    def compute_output_shape(self, input_shape):
        n_samples = input_shape[-1]
        n_frames = None if n_samples is None else self.n_frames(n_samples)
        return (input_shape[0], self.n_mels, n_frames)

    def get_config(self):
        config = super().get_config()
        config.update(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.f_min,
            f_max=self.f_max,
            amin=self.amin,
        )
        return config


def _positive_int(name: str, value) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _windowed_dft_kernel(n_fft: int) -> np.ndarray:
    """Conv1D kernel (n_fft, 1, 2 * (n_fft // 2 + 1)): Hann-windowed cosines, then sines."""
    n_bins = n_fft // 2 + 1
    window = np.hanning(n_fft)
    phase = 2.0 * np.pi * np.outer(np.arange(n_fft), np.arange(n_bins)) / n_fft
    basis = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None]
    return basis[:, None, :].astype(np.float32)
