"""The VGG-ish family of the paper: five blocks, each a Conv2D or an attention layer, ELU or AReLU.

The baseline is the MTG-Jamendo VGG-ish network (input BatchNorm; five blocks of
3x3 conv -> BatchNorm -> ELU -> MaxPool with 64, 128, 128, 128, 64 channels and pools
(2,4), (2,4), (2,4), (3,5), (4,4); flatten; dropout 0.5; dense sigmoid). The last pool is a global
max pool, identical to the (4,4) pool at 96 x 1400 and valid for any longer input. Layer names
follow the PyTorch reference (`bn_init`, `conv_1`, `bn_1`, ..., `dense`) so weights map by name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple, Union

import keras

from tfmood.data.tags import N_TAGS
from tfmood.layers import (
    AReLU,
    AttentionAugmentedConv2D,
    LocalSelfAttention,
    SyncBatchNormalization,
)
from tfmood.models.micro import MICRO_PRESET

BLOCK_FILTERS = (64, 128, 128, 128, 64)
BLOCK_POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))
# PyTorch BatchNorm defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


# One channel multiplier for every block, or one per block.
Width = Union[float, Tuple[float, ...]]


def parse_width(value) -> Width:
    """A width from Python, YAML or the command line: 0.5, "0.5", [0.25, ...] or "0.25,0.5,...".

    Returns a float, or a tuple of one positive float per block.
    """
    if isinstance(value, str):
        value = [part for part in value.replace(" ", "").split(",") if part]
        value = value[0] if len(value) == 1 else value
    try:
        if isinstance(value, (list, tuple)):
            widths = tuple(float(v) for v in value)
        else:
            widths = (float(value),)
    except (TypeError, ValueError):
        raise ValueError(f"`width` must be a number or {len(BLOCK_FILTERS)} numbers, "
                         f"got {value!r}") from None
    if len(widths) not in (1, len(BLOCK_FILTERS)):
        raise ValueError(f"`width` needs 1 or {len(BLOCK_FILTERS)} values, got {len(widths)}")
    if min(widths) <= 0:
        raise ValueError(f"`width` must be positive, got {value!r}")
    return widths[0] if len(widths) == 1 else widths


@dataclasses.dataclass(frozen=True)
class VGGishConfig:
    """Architecture of one VGG-ish model.

    Args:
        layers: per block, the spatial layer: one of `BLOCK_LAYERS` ("conv", "attention", ...).
        activations: per block, "elu" or "arelu".
        heads: attention heads for "attention" blocks (None: one per channel, as the paper).
        width: multiplier of the blocks' channel counts (rounded to an even number): one for
            every block, or one per block (see `parse_width`).
        n_tags: number of output tags.
        n_mels: mel bands of the input.
        n_frames: frames of the input, or None for any length (>= `min_frames`).
        dropout: dropout rate before the dense layer.
    """

    layers: Tuple[str, ...] = ("conv",) * 5
    activations: Tuple[str, ...] = ("elu",) * 5
    heads: Optional[int] = None
    width: Width = 1.0
    n_tags: int = N_TAGS
    n_mels: int = 96
    n_frames: Optional[int] = 1400
    dropout: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "activations", tuple(self.activations))
        for name, values, valid in (
            ("layers", self.layers, BLOCK_LAYERS),
            ("activations", self.activations, ACTIVATIONS),
        ):
            if len(values) != len(BLOCK_FILTERS):
                raise ValueError(f"`{name}` needs {len(BLOCK_FILTERS)} entries, got {values}")
            unknown = sorted(set(values) - set(valid))
            if unknown:
                raise ValueError(f"unknown {name} {unknown}; valid: {sorted(valid)}")
        object.__setattr__(self, "width", parse_width(self.width))
        min_mels = _pool_product(0)
        if self.n_mels < min_mels:
            raise ValueError(f"`n_mels` must be >= {min_mels}, got {self.n_mels}")
        if self.n_frames is not None and self.n_frames < min_frames():
            raise ValueError(f"`n_frames` must be >= {min_frames()}, got {self.n_frames}")

    @property
    def filters(self) -> Tuple[int, ...]:
        return tuple(max(2, 2 * round(f * w / 2)) for f, w in zip(BLOCK_FILTERS, self.widths))

    @property
    def widths(self) -> Tuple[float, ...]:
        """The channel multiplier of each block."""
        if isinstance(self.width, tuple):
            return self.width
        return (self.width,) * len(BLOCK_FILTERS)

    def replace(self, **changes) -> "VGGishConfig":
        return dataclasses.replace(self, **changes)


def _pool_product(axis: int) -> int:
    product = 1
    for pool in BLOCK_POOLS[:-1]:
        product *= pool[axis]
    return product


def min_frames() -> int:
    """Shortest input (in frames) that survives the first four pools."""
    return _pool_product(1)


def _conv(filters: int, config: VGGishConfig, name: str) -> keras.layers.Layer:
    return keras.layers.Conv2D(filters, 3, padding="same", name=name)


def _attention(filters: int, config: VGGishConfig, name: str) -> keras.layers.Layer:
    return LocalSelfAttention(filters, kernel_size=3, heads=config.heads, name=name)


# The spatial layer of a block, by name; each factory takes (filters, config, name).
BLOCK_LAYERS: Dict[str, Callable[[int, VGGishConfig, str], keras.layers.Layer]] = {
    "conv": _conv,
    "attention": _attention,
    "augmented": AttentionAugmentedConv2D.for_block,
}

ACTIVATIONS: Dict[str, Callable[[str], keras.layers.Layer]] = {
    "elu": lambda name: keras.layers.ELU(name=name),
    "arelu": lambda name: AReLU(name=name),
}


def _with_block(layer: str, block: int, base: Tuple[str, ...] = ("conv",) * 5) -> Tuple[str, ...]:
    return tuple(layer if i == block - 1 else kind for i, kind in enumerate(base))


PRESETS: Dict[str, VGGishConfig] = {
    "baseline": VGGishConfig(),
    "sa3": VGGishConfig(layers=_with_block("attention", 3)),
    "sa4": VGGishConfig(layers=_with_block("attention", 4)),
    "sa5": VGGishConfig(layers=_with_block("attention", 5)),
    "arelu": VGGishConfig(activations=("arelu",) * 5),
    "sa3-arelu": VGGishConfig(layers=_with_block("attention", 3), activations=("arelu",) * 5),
}


def get_config(preset: Union[str, VGGishConfig], **overrides) -> VGGishConfig:
    """The config of a preset name (or a config), with fields overridden."""
    if isinstance(preset, VGGishConfig):
        config = preset
    else:
        try:
            config = PRESETS[preset]
        except KeyError:
            valid = sorted([*PRESETS, MICRO_PRESET])
            raise ValueError(f"unknown preset {preset!r}; valid: {valid}") from None
    return config.replace(**overrides) if overrides else config


def build_model(
    preset: Union[str, VGGishConfig] = "baseline", name: Optional[str] = None, **overrides
) -> keras.Model:
    """Build a VGG-ish model from a preset name or a `VGGishConfig`, or the micro model.

    Args:
        preset: "baseline", "sa3", "sa4", "sa5", "arelu", "sa3-arelu", or a `VGGishConfig`;
            or "micro": `tfmood.models.micro.build_micro_model` (fixed-length windows).
        name: model name (default: the preset name; the micro model's own default).
        **overrides: `VGGishConfig` fields to change (n_tags, n_frames, width, ...); for
            "micro", `build_micro_model` arguments (n_frames, filters, head_filters, dropout, ...).

    Returns:
        A `keras.Model` from (batch, n_mels, n_frames) log-mel dB to (batch, n_tags) sigmoid scores.
    """
    if isinstance(preset, str) and preset == MICRO_PRESET:
        from tfmood.models.micro import build_micro_model

        return build_micro_model(**overrides, **({} if name is None else {"name": name}))
    config = get_config(preset, **overrides)
    if name is None:
        name = preset if isinstance(preset, str) else "vggish"
    inputs = keras.Input(shape=(config.n_mels, config.n_frames), name="mel")
    x = keras.layers.Reshape((config.n_mels, -1, 1), name="add_channel")(inputs)
    x = _batch_norm("bn_init")(x)
    for block, (layer, activation, filters, pool) in enumerate(
        zip(config.layers, config.activations, config.filters, BLOCK_POOLS), start=1
    ):
        x = BLOCK_LAYERS[layer](filters, config, f"conv_{block}")(x)
        x = _batch_norm(f"bn_{block}")(x)
        x = ACTIVATIONS[activation](f"act_{block}")(x)
        if block < len(BLOCK_POOLS):
            x = keras.layers.MaxPooling2D(pool, name=f"pool_{block}")(x)
        else:
            x = keras.layers.GlobalMaxPooling2D(name=f"pool_{block}")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(config.n_tags, activation="sigmoid", name="dense")(x)
    return keras.Model(inputs, outputs, name=name)


def _batch_norm(name: str) -> keras.layers.Layer:
    # Global-batch statistics under tf.distribute, one collective per layer; plain
    # BatchNormalization on one device.
    return SyncBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def load_model(path: str) -> keras.Model:
    """Load a `.keras` model with safe_mode on (no arbitrary code runs), tfmood layers known."""
    import os
    import zipfile

    import tfmood.layers  # noqa: F401  (registers the custom layers)

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    path_str = os.fspath(path)
    if path_str.endswith(".keras") and os.path.isfile(path_str):
        # Keras reports an unreadable archive as "File not found"; say what is wrong instead.
        try:
            with zipfile.ZipFile(path_str) as archive:
                bad = archive.testzip()
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ValueError(
                f"{path_str}: corrupt or truncated .keras model file (not a readable zip "
                f"archive: {error})"
            ) from None
        if bad is not None:
            raise ValueError(f"{path_str}: corrupt .keras model file ({bad} fails its CRC check)")
        if "config.json" not in names:
            raise ValueError(f"{path_str}: corrupt .keras model file (no config.json inside)")
    return keras.saving.load_model(path, safe_mode=True)
