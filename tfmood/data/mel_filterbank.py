"""The Slaney-scale triangular mel filterbank (librosa's `htk=False, norm="slaney"`), numpy only.

Shared by the `LogMel` layer and the tagger's TensorFlow-free front-end (importing the layer
imports Keras and TensorFlow, which a TFLite run must not pay).
"""

from __future__ import annotations

import math

import numpy as np


def _hz_to_slaney_mel(hz):
    """Slaney's mel scale: linear to 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_step = math.log(6.4) / 27.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    return np.where(hz >= 1000.0, logarithmic, linear)


def _slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def slaney_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max) -> np.ndarray:
    """Triangular filters (n_mels, n_fft // 2 + 1) on the Slaney scale, each of unit area."""
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_mel = np.linspace(_hz_to_slaney_mel(f_min), _hz_to_slaney_mel(f_max), n_mels + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: divide each triangle by half its base so every filter has unit area.
    return weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
