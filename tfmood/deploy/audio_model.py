"""The audio-in model: a mel-input model behind the `LogMel` front-end, for waveforms."""

from __future__ import annotations

from typing import Optional

# Targets the audio-in model is offered for: with int8 weights or activations in the spectral
# front-end (int8, and dynamic, whose hybrid kernels quantise activations on the fly) the quiet
# bins that the dB scale keeps are lost (ROC-AUC fell by 0.13 on the synthetic test split).
AUDIO_IN_TARGETS = ("float32", "float16")


SAMPLE_RATE = 12000


HOP_LENGTH = 256


def audio_samples_for(n_frames: int, hop_length: int = HOP_LENGTH) -> int:
    """Waveform length whose LogMel has exactly `n_frames` frames: (n_frames - 1) * hop."""
    return (int(n_frames) - 1) * hop_length


def audio_in_model(mel_model, n_samples: int, batch_size: Optional[int] = 1):
    """One Keras model from a fixed-length 12 kHz waveform to tag scores: LogMel, then the model.

    Args:
        mel_model: a model taking (batch, n_mels, frames) log-mel dB.
        n_samples: the waveform length (`audio_samples_for(frames)` matches a fixed-length model).
        batch_size: static batch size of the input (None: any).

    Returns:
        A chain model (batch, n_samples) -> (batch, tags): `LogMel` then `mel_model`'s layers.
    """
    import keras

    from tfmood.layers.log_mel import LogMel

    n_mels = mel_model.inputs[0].shape[1]
    waveform = keras.Input(shape=(n_samples,), batch_size=batch_size, name="waveform")
    mel = LogMel(n_mels=n_mels, name="log_mel")(waveform)
    frames = mel_model.inputs[0].shape[2]
    if frames is not None and mel.shape[2] != frames:
        raise ValueError(
            f"{n_samples} samples give {mel.shape[2]} frames; the model takes {frames} "
            f"(use {audio_samples_for(frames)} samples)"
        )
    return keras.Model(waveform, mel_model(mel), name=f"{mel_model.name}_audio_in")
