"""Import PyTorch `.pth` weights of the VGG-ish family without torch and without running code.

A `.pth` file is a pickle, and unpickling can call any importable function. This module reads
both PyTorch formats with a restricted unpickler that resolves only the globals a state dict
needs (`torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the typed storage
classes and `collections.OrderedDict`), each mapped to a numpy implementation here; any other
global raises `UnsafePickleError` before anything is called.

- zip format (torch >= 1.6): `<archive>/data.pkl` whose persistent ids name the raw storages
  `<archive>/data/<key>`, plus `<archive>/byteorder`.
- legacy format: pickles of the magic number, the protocol version and the system info, then the
  object pickle (persistent ids name storages), then the list of storage keys, then for each key
  an int64 element count followed by the raw storage bytes.

The state dict is then mapped onto a `tfmood.models.vggish` preset by layer name (`bn_init`, `conv_1`,
`bn_1`, ..., `dense`), BatchNorm moving statistics included.

The MTG-Jamendo VGG-ish baseline weights (`mtg_baseline/best_model.pth` in the reference files)
are the Music Technology Group's, licensed Apache-2.0 (Music Technology Group); credit them
wherever a model imported from them is used or shipped.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

# The legacy format starts with this number, pickled, then the protocol version.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# numpy type (byte order added per file) and item size of each torch storage class.
STORAGE_DTYPES: Dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # raw bits; widened to float32 when the tensor is built
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}

# Keys under which training scripts commonly nest the state dict of a checkpoint.
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "net")


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the tensor-rebuild allow-list."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for a `torch.<Type>Storage` class: only its element type matters."""

    name: str

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read once the pickle is loaded.

    `view` is (offset, numel) in elements for a legacy-format view of a larger storage.
    """

    key: str
    storage_type: _StorageType
    numel: int
    view: Optional[Tuple[int, int]] = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor made of a storage, an element offset, a size and strides (in elements)."""

    storage: _StorageRef
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused_flags_and_hooks):
    """Numpy stand-in for `torch._utils._rebuild_tensor_v2` (requires_grad, hooks ignored)."""
    if not isinstance(storage, _StorageRef) or not isinstance(storage_offset, int):
        raise UnsafePickleError(f"malformed tensor: storage {storage!r}, offset {storage_offset!r}")
    return _TensorRef(storage, storage_offset, _int_tuple(size), _int_tuple(stride))


def _rebuild_parameter(data, *unused_requires_grad_and_hooks):
    """Numpy stand-in for `torch._utils._rebuild_parameter`: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError(f"parameter rebuilt from a non-tensor object {type(data)}")
    return data


def _int_tuple(values) -> Tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) for v in values):
        raise UnsafePickleError(f"tensor size/stride must be a tuple of ints, got {values!r}")
    return tuple(int(v) for v in values)


# The only globals a state-dict pickle may name, and what they resolve to.
SAFE_FUNCTIONS: Dict[Tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
SAFE_CLASSES: Dict[Tuple[str, str], type] = {
    ("collections", "OrderedDict"): collections.OrderedDict
}
SAFE_STORAGE_MODULE = "torch"


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals; persistent ids become `_StorageRef`s.

    Every lookup returns a new object (a storage marker or a wrapper function), so a BUILD opcode
    aimed at a resolved global cannot change shared module state. The one class allowed,
    OrderedDict, is a built-in type whose attributes cannot be set.
    """

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if module == SAFE_STORAGE_MODULE and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in SAFE_CLASSES:
            return SAFE_CLASSES[(module, name)]
        if (module, name) in SAFE_FUNCTIONS:
            function = SAFE_FUNCTIONS[(module, name)]
            return lambda *args: function(*args)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name} from {self.source}: only PyTorch "
            "tensor-rebuild globals are allowed in a weights file"
        )

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel);
        # legacy: ('storage', type, key, location, numel, view_metadata).
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise UnsafePickleError(f"unexpected persistent id {pid!r} in {self.source}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            # (view_key, offset, view_numel): a slice of storage `key`.
            if not isinstance(view, tuple) or len(view) != 3:
                raise UnsafePickleError(f"malformed storage view {pid!r} in {self.source}")
            view = _int_tuple(view[1:])
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise UnsafePickleError(f"malformed storage id {pid!r} in {self.source}")
        return _StorageRef(str(key), storage_type, numel, view)


# What a truncated or nonsensical pickle raises inside the restricted unpickler.
_MALFORMED_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
)


def _restricted_load(data: Union[bytes, io.BytesIO], source: str):
    """Unpickle one object with `_RestrictedUnpickler`; malformed data raises ValueError."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return _RestrictedUnpickler(stream, source).load()
    except UnsafePickleError:
        raise
    except _MALFORMED_PICKLE_ERRORS as error:
        raise ValueError(f"{source}: malformed pickle data ({error})") from None


# ---------------------------------------------------------------------------------------------
# Reading the two file formats
# ---------------------------------------------------------------------------------------------


def _zip_archive_prefix(archive: zipfile.ZipFile, path: str) -> str:
    pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
    prefixes = {name[: -len("data.pkl")] for name in pickles}
    if len(prefixes) != 1 or any(p.count("/") != 1 for p in prefixes):
        raise ValueError(f"{path}: not a PyTorch zip checkpoint (data.pkl entries: {pickles})")
    return prefixes.pop()


def _load_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        prefix = _zip_archive_prefix(archive, path)
        names = set(archive.namelist())
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        obj = _restricted_load(archive.read(prefix + "data.pkl"), path)

        def read_storage(storage: _StorageRef) -> bytes:
            name = f"{prefix}data/{storage.key}"
            if name not in names:
                raise ValueError(f"{path}: storage {storage.key!r} missing from the archive")
            return archive.read(name)

        return _materialise(obj, read_storage, _byteorder_char(byteorder, path), path)


def _byteorder_char(byteorder: str, path: str) -> str:
    if byteorder not in ("little", "big"):
        raise ValueError(f"{path}: unknown byte order {byteorder!r}")
    return "<" if byteorder == "little" else ">"


def _load_legacy(path: str):
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    magic = _restricted_load(stream, path)
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a PyTorch file (bad magic number)")
    protocol = _restricted_load(stream, path)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info = _restricted_load(stream, path)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    byteorder = "<" if little else ">"
    obj = _restricted_load(stream, path)
    keys = _restricted_load(stream, path)
    if not isinstance(keys, list):
        raise ValueError(f"{path}: malformed storage key list")
    item_sizes = {ref.key: np.dtype(ref.storage_type.dtype).itemsize for ref in _storages(obj)}
    storages = _read_legacy_storages(data, stream.tell(), keys, item_sizes, byteorder, path)
    return _materialise(obj, lambda ref: storages[ref.key], byteorder, path)


def _read_legacy_storages(
    data: bytes, offset: int, keys, item_sizes: Dict[str, int], byteorder: str, path: str
) -> Dict[str, bytes]:
    """Split the tail of a legacy file into storages: per key, int64 numel then the bytes."""
    storages = {}
    view = memoryview(data)
    for key in keys:
        if key not in item_sizes:
            raise ValueError(f"{path}: storage {key!r} is listed but no tensor uses it")
        if offset + 8 > len(data):
            raise ValueError(f"{path}: truncated before storage {key!r}")
        numel = int(np.frombuffer(data, f"{byteorder}i8", count=1, offset=offset)[0])
        end = offset + 8 + numel * item_sizes[key]
        if numel < 0 or end > len(data):
            raise ValueError(f"{path}: storage {key!r} runs past the end of the file")
        storages[key] = view[offset + 8 : end]
        offset = end
    return storages


def _storages(obj) -> Iterator[_StorageRef]:
    for tensor in _walk_tensors(obj):
        yield tensor.storage


def _walk_tensors(obj) -> Iterator[_TensorRef]:
    if isinstance(obj, _TensorRef):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _walk_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _walk_tensors(value)


def _materialise(obj, read_storage: Callable[[_StorageRef], bytes], byteorder: str, path: str):
    """Replace every `_TensorRef` in nested dicts/lists/tuples by a numpy array."""
    if isinstance(obj, _TensorRef):
        return _tensor_to_array(obj, read_storage(obj.storage), byteorder, path)
    if isinstance(obj, dict):
        result = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            result[key] = _materialise(value, read_storage, byteorder, path)
        return result
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(value, read_storage, byteorder, path) for value in obj)
    return obj


def _tensor_to_array(tensor: _TensorRef, raw: bytes, byteorder: str, path: str) -> np.ndarray:
    storage = tensor.storage
    dtype = np.dtype(byteorder + storage.storage_type.dtype)
    if len(raw) % dtype.itemsize:
        raise ValueError(f"{path}: storage {storage.key!r} is not a whole number of elements")
    elements = np.frombuffer(raw, dtype)
    if storage.view is not None:
        view_offset, view_numel = storage.view
        elements = elements[view_offset : view_offset + view_numel]
    if len(tensor.size) != len(tensor.stride):
        raise ValueError(f"{path}: tensor size {tensor.size} and stride {tensor.stride} differ")
    if min(tensor.size, default=1) == 0:
        values = np.zeros(tensor.size, dtype)
    else:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
        if tensor.offset < 0 or min(tensor.stride, default=0) < 0 or last >= len(elements):
            raise ValueError(
                f"{path}: tensor (offset {tensor.offset}, size {tensor.size}, stride "
                f"{tensor.stride}) lies outside its storage {storage.key!r} of {len(elements)}"
            )
        values = np.lib.stride_tricks.as_strided(
            elements[tensor.offset :],
            shape=tensor.size,
            strides=tuple(s * dtype.itemsize for s in tensor.stride),
            writeable=False,
        )
    if storage.storage_type.name == "BFloat16Storage":
        # bfloat16 is the upper half of a float32.
        return (values.astype(np.uint32) << 16).view(np.float32)
    return np.array(values, dtype=dtype.newbyteorder("="))


def load_pth(path: Union[str, Path]):
    """Read a PyTorch `.pth` file (zip or legacy format) without torch and without running code.

    Args:
        path: the file.

    Returns:
        The pickled object, with every tensor replaced by a numpy array (dicts, lists and tuples
        kept as they are).

    Raises:
        UnsafePickleError: the pickle names a global outside the tensor-rebuild allow-list.
        ValueError: the file is not a PyTorch checkpoint or is malformed.
        FileNotFoundError: no such file.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such PyTorch weights file")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def _strip_prefix(state: Mapping[str, np.ndarray], prefix: str) -> Mapping[str, np.ndarray]:
    if state and all(key.startswith(prefix) for key in state):
        return collections.OrderedDict((key[len(prefix) :], value) for key, value in state.items())
    return state


def _unwrap_state_dict(obj, path: str) -> "collections.OrderedDict[str, np.ndarray]":
    while isinstance(obj, dict) and not _is_state_dict(obj):
        nested = [key for key in NESTING_KEYS if isinstance(obj.get(key), dict)]
        if not nested:
            raise ValueError(
                f"{path}: no state dict found (top-level keys: {sorted(map(str, obj))[:10]})"
            )
        obj = obj[nested[0]]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    # A model wrapped in DataParallel saves every key under "module.".
    return collections.OrderedDict(_strip_prefix(obj, "module."))


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(
        isinstance(key, str) and isinstance(value, np.ndarray) for key, value in obj.items()
    )


def read_state_dict(path: Union[str, Path]) -> "collections.OrderedDict[str, np.ndarray]":
    """The state dict of a `.pth` file as an ordered dict of parameter name -> numpy array.

    A checkpoint that nests the state dict (under "state_dict", "model_state_dict", "model" or
    "net") is unwrapped, and a "module." prefix common to all keys is dropped.

    Args:
        path: a PyTorch `.pth` file, zip or legacy format.
    """
    return _unwrap_state_dict(load_pth(path), str(path))


# ---------------------------------------------------------------------------------------------
# Mapping a state dict onto a Keras model
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WeightMapping:
    """How one PyTorch parameter becomes one Keras weight.

    Args:
        suffix: PyTorch parameter name after the module name ("weight", "query_conv.weight").
        to_keras: converts the PyTorch array to the Keras layout.
        torch_shape: the PyTorch shape expected for a Keras weight shape.
    """

    suffix: str
    to_keras: Callable[[np.ndarray], np.ndarray]
    torch_shape: Callable[[Tuple[int, ...]], Tuple[int, ...]]


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _same_shape(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(shape)


# (Cout, Cin, kh, kw) <-> (kh, kw, Cin, Cout).
_CONV_KERNEL = WeightMapping(
    "weight",
    lambda a: a.transpose(2, 3, 1, 0),
    lambda s: (s[3], s[2], s[0], s[1]),
)


def _projection(name: str) -> WeightMapping:
    return dataclasses.replace(_CONV_KERNEL, suffix=f"{name}.weight")


def _relative_embedding(name: str, axis: int) -> WeightMapping:
    """rel_h is (C/2, 1, 1, k, 1) and rel_w (C/2, 1, 1, 1, k) in PyTorch; (C/2, k) in Keras."""

    def torch_shape(shape):
        layout = [shape[0], 1, 1, 1, 1]
        layout[axis] = shape[1]
        return tuple(layout)

    return WeightMapping(name, lambda a: a.reshape(a.shape[0], -1), torch_shape)


def _scalar(name: str) -> WeightMapping:
    """A scalar Keras weight from a one-element PyTorch parameter."""
    return WeightMapping(name, lambda a: a.reshape(()), lambda s: (1,))


# Keras layer class name -> {Keras weight name: mapping}.
LAYER_MAPPINGS: Dict[str, Dict[str, WeightMapping]] = {
    "BatchNormalization": {
        "gamma": WeightMapping("weight", _same, _same_shape),
        "beta": WeightMapping("bias", _same, _same_shape),
        "moving_mean": WeightMapping("running_mean", _same, _same_shape),
        "moving_variance": WeightMapping("running_var", _same, _same_shape),
    },
    "Conv2D": {"kernel": _CONV_KERNEL, "bias": WeightMapping("bias", _same, _same_shape)},
    "Dense": {
        "kernel": WeightMapping("weight", lambda a: a.T, lambda s: (s[1], s[0])),
        "bias": WeightMapping("bias", _same, _same_shape),
    },
    "LocalSelfAttention": {
        "query_kernel": _projection("query_conv"),
        "key_kernel": _projection("key_conv"),
        "value_kernel": _projection("value_conv"),
        "rel_h": _relative_embedding("rel_h", axis=3),
        "rel_w": _relative_embedding("rel_w", axis=4),
    },
    # AReLU's two scalars, assumed saved as `act_N.alpha` and `act_N.beta` of shape (1,).
    "AReLU": {"alpha": _scalar("alpha"), "beta": _scalar("beta")},
}

# PyTorch buffers with no Keras counterpart, accepted and dropped.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def _mapped_class(layer) -> str:
    """The LAYER_MAPPINGS key of a layer: the nearest class (itself or a base) with a mapping."""
    for cls in type(layer).__mro__:
        if cls.__name__ in LAYER_MAPPINGS:
            return cls.__name__
    return type(layer).__name__


def _weight_name(variable) -> str:
    return variable.path.split("/")[-1]


def torch_weight_plan(model) -> "collections.OrderedDict[str, Tuple[object, WeightMapping]]":
    """PyTorch parameter name -> (Keras variable, mapping) for every weight of `model`.

    Args:
        model: a `keras.Model` whose layers are named like the PyTorch modules.

    Raises:
        ValueError: a layer with weights has no known mapping.
    """
    plan = collections.OrderedDict()
    for layer in model.layers:
        if not layer.weights:
            continue
        mappings = LAYER_MAPPINGS.get(_mapped_class(layer))
        if mappings is None:
            raise ValueError(f"no PyTorch mapping for layer {layer.name} ({type(layer).__name__})")
        for variable in layer.weights:
            mapping = mappings[_weight_name(variable)]
            plan[f"{layer.name}.{mapping.suffix}"] = (variable, mapping)
    return plan


def expected_torch_shapes(model) -> "collections.OrderedDict[str, Tuple[int, ...]]":
    """The PyTorch state-dict keys and shapes that `model`'s weights come from.

    Args:
        model: a `keras.Model` built by `tfmood.models.vggish.build_model`.
    """
    return collections.OrderedDict(
        (key, mapping.torch_shape(tuple(variable.shape)))
        for key, (variable, mapping) in torch_weight_plan(model).items()
    )


# Keys that mark a block as attention or AReLU; the group is the block number.
ATTENTION_KEY = re.compile(r"^conv_(\d+)\.query_conv\.weight$")
ARELU_KEY = re.compile(r"^act_(\d+)\.alpha$")


def _blocks_with(state: Mapping[str, np.ndarray], pattern: "re.Pattern") -> Tuple[int, ...]:
    return tuple(sorted(int(match.group(1)) for match in map(pattern.match, state) if match))


def _config_blocks(kinds: Tuple[str, ...], kind: str) -> Tuple[int, ...]:
    return tuple(block for block, name in enumerate(kinds, start=1) if name == kind)


def infer_preset(state: Mapping[str, np.ndarray]) -> str:
    """The `tfmood.models.vggish` preset whose block layout a state dict has.

    Attention blocks are those with `conv_N.query_conv.weight`, AReLU blocks those with
    `act_N.alpha`; every other block is a conv with ELU. Keys and shapes are checked later,
    against the model built from the preset.

    Args:
        state: PyTorch parameter name -> array.

    Raises:
        ValueError: no preset has this layout.
    """
    from tfmood.models.vggish import PRESETS

    attention = _blocks_with(state, ATTENTION_KEY)
    arelu = _blocks_with(state, ARELU_KEY)
    for name, config in PRESETS.items():
        if (
            _config_blocks(config.layers, "attention") == attention
            and _config_blocks(config.activations, "arelu") == arelu
        ):
            return name
    raise ValueError(
        f"no preset has attention in blocks {list(attention)} and AReLU in blocks {list(arelu)}; "
        f"presets: {sorted(PRESETS)}"
    )


def check_state_dict(state: Mapping[str, np.ndarray], model) -> None:
    """Raise ValueError naming every missing, unexpected or wrongly shaped key.

    Args:
        state: PyTorch parameter name -> array.
        model: the Keras model the state dict should fill.
    """
    expected = expected_torch_shapes(model)
    present = {key for key in state if key.rsplit(".", 1)[-1] not in IGNORED_SUFFIXES}
    problems = []
    missing = [key for key in expected if key not in present]
    unexpected = sorted(present - set(expected))
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            problems.append(f"{key} has shape {tuple(state[key].shape)}, expected {shape}")
    if problems:
        raise ValueError(f"state dict does not fit model {model.name!r}: " + "; ".join(problems))


def assign_state_dict(state: Mapping[str, np.ndarray], model) -> None:
    """Copy a PyTorch state dict into a Keras model's weights (checked first).

    Args:
        state: PyTorch parameter name -> array.
        model: a `keras.Model` with layers named like the PyTorch modules.
    """
    check_state_dict(state, model)
    for key, (variable, mapping) in torch_weight_plan(model).items():
        variable.assign(mapping.to_keras(np.asarray(state[key], dtype=np.float32)))


def import_state_dict(state: Mapping[str, np.ndarray], preset: Optional[str] = None, **overrides):
    """Build the Keras model of a PyTorch VGG-ish state dict and load its weights.

    Args:
        state: PyTorch parameter name -> array (as `read_state_dict` returns).
        preset: the `tfmood.models.vggish` preset; None infers it from the keys.
        **overrides: `VGGishConfig` fields passed to `build_model` (n_frames, n_tags, ...).

    Returns:
        A `keras.Model` with the weights (BatchNorm moving statistics included) of `state`.

    Raises:
        ValueError: the state dict does not fit the preset (missing, unexpected or mis-shaped
            keys are named).
    """
    from tfmood.models.vggish import build_model

    if preset is None:
        preset = infer_preset(state)
    model = build_model(preset, **overrides)
    assign_state_dict(state, model)
    return model


def import_torch(path: Union[str, Path], preset: Optional[str] = None, **overrides):
    """Read a `.pth` file safely and return the Keras model with its weights.

    Args:
        path: a PyTorch `.pth` file, zip or legacy format.
        preset: the `tfmood.models.vggish` preset; None infers it from the keys.
        **overrides: `VGGishConfig` fields passed to `build_model`.
    """
    state = read_state_dict(path)
    try:
        return import_state_dict(state, preset, **overrides)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
