"""The microcontroller model: a small strided CNN on short windows, scored clip by clip.

    build_micro_model(...) -> keras.Model                 96 x 320 windows, int8-friendly
                                                          (also build_model("micro", ...))
    clip_windows(mel) -> windows                          consecutive windows of a clip
    aggregate_windows(window_scores) -> clip scores       mean over windows (as the firmware does)

The board class is an Arduino Nano 33 BLE Sense (nRF52840: 256 KB RAM, 1 MB flash): the TFLM
tensor arena must stay within 256 KB and the model within 1 MB, int8 end to end. The full-size
models cannot fit (their first block alone holds several MB of activations), so the micro model
reads a short window (320 frames, 6.8 s) and halves both axes at each of its first convolutions,
so the arena is set by the two largest (early) activations, live together: 48 x 160 x 16 and
24 x 80 x 32 int8, 184,320 bytes (the trained model's arena: 191,280 bytes). Its late layers are
wide (128 channels, an extra convolution at the lowest resolution): on these small maps they cost
little arena, and late capacity is what limits learning on the synthetic corpus (as for the full
models). Global max and mean pooling are concatenated. A clip is scored by running the model on
consecutive windows and averaging their scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_MELS = 96


WINDOW_FRAMES = 320  # 320 hops of 256 samples at 12 kHz: 6.8 s


MICRO_PRESET = "micro"  # its preset name: build_model("micro"), TrainConfig(preset="micro")


DEFAULT_FILTERS = (16, 32, 64, 128)  # stride-2 convolutions


DEFAULT_HEAD_FILTERS = (128,)  # stride-1 convolutions at the lowest resolution


def build_micro_model(
    n_mels: int = N_MELS,
    n_frames: int = WINDOW_FRAMES,
    filters: Sequence[int] = DEFAULT_FILTERS,
    n_tags: int = 56,
    dropout: float = 0.2,
    name: str = "micro_cnn",
    head_filters: Sequence[int] = DEFAULT_HEAD_FILTERS,
):
    """A small CNN for TFLM: strided 3x3 convolutions, 3x3 convolutions at the lowest
    resolution, global max and mean pool, sigmoid dense.

    Each strided convolution (stride 2, BatchNorm folded at conversion, ReLU) halves both axes,
    so the activations shrink as the channels grow; the head convolutions (stride 1) then add
    capacity where the maps are smallest. The input is log-mel dB, normalised by a BatchNorm.
    Every layer converts to a TFLM builtin (CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D,
    CONCATENATION, ...).

    Args:
        n_mels: mel bands of the input.
        n_frames: frames per window.
        filters: channels of the strided convolutions, one stride-2 convolution each.
        n_tags: outputs (sigmoid scores).
        dropout: before the dense layer (training only).
        name: model name.
        head_filters: channels of the stride-1 convolutions after them (may be empty).

    Returns:
        A Keras model (batch, n_mels, n_frames) -> (batch, n_tags).
    """
    import keras

    for label, values, least in (("filters", filters, 1), ("head_filters", head_filters, 0)):
        if len(values) < least or any(int(f) < 1 for f in values):
            raise ValueError(f"{label} must be positive channel counts, got {list(values)}")
    mel = keras.Input(shape=(n_mels, n_frames), name="mel")
    x = keras.layers.Reshape((n_mels, n_frames, 1), name="channel")(mel)
    x = keras.layers.BatchNormalization(name="input_norm")(x)
    layers = [(int(c), 2) for c in filters] + [(int(c), 1) for c in head_filters]
    for index, (channels, stride) in enumerate(layers):
        x = keras.layers.Conv2D(
            channels, 3, strides=stride, padding="same", use_bias=False, name=f"conv_{index}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"norm_{index}")(x)
        x = keras.layers.ReLU(name=f"relu_{index}")(x)
    # Global max and mean as pools over the whole map (MAX_POOL_2D, AVERAGE_POOL_2D): TFLM's
    # CMSIS-NN build has optimised int8 kernels for pools, not for REDUCE_MAX or MEAN.
    window = tuple(x.shape[1:3])
    pooled = [
        keras.layers.Flatten(name="max_flat")(
            keras.layers.MaxPooling2D(window, name="max_pool")(x)
        ),
        keras.layers.Flatten(name="mean_flat")(
            keras.layers.AveragePooling2D(window, name="mean_pool")(x)
        ),
    ]
    x = keras.layers.Concatenate(name="pool")(pooled)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    scores = keras.layers.Dense(n_tags, activation="sigmoid", name="scores")(x)
    return keras.Model(mel, scores, name=name)


def clip_windows(mel: np.ndarray, n_frames: int = WINDOW_FRAMES) -> np.ndarray:
    """Consecutive non-overlapping windows of a clip's log-mel, as the firmware feeds them.

    A trailing part shorter than a window is dropped; a clip shorter than one window is tiled.

    Args:
        mel: (n_mels, T) log-mel of one clip.
        n_frames: frames per window.

    Returns:
        (n_windows, n_mels, n_frames) float32.
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[1] == 0:
        raise ValueError(f"expected a (n_mels, frames) log-mel, got shape {mel.shape}")
    if mel.shape[1] < n_frames:
        mel = np.tile(mel, (1, -(-n_frames // mel.shape[1])))
    count = mel.shape[1] // n_frames
    return np.stack([mel[:, i * n_frames : (i + 1) * n_frames] for i in range(count)])


def aggregate_windows(window_scores: np.ndarray) -> np.ndarray:
    """Clip scores: the mean of its window scores (the firmware keeps a running sum).

    Args:
        window_scores: (n_windows, tags), or (clips, n_windows, tags) for several clips.

    Returns:
        (tags,) or (clips, tags) float32.
    """
    scores = np.asarray(window_scores, dtype=np.float32)
    if scores.ndim not in (2, 3) or scores.shape[-2] == 0:
        raise ValueError(f"expected (windows, tags) or (clips, windows, tags), got {scores.shape}")
    return scores.mean(axis=-2)
