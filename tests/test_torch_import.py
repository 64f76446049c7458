"""Reading PyTorch .pth files without torch, refusing code, and mapping onto the Keras presets.

The synthetic .pth files are written here opcode by opcode, following PyTorch's two formats, so the
reader is checked against arrays known in numpy; the reference files check real PyTorch output.
"""

import collections
import dataclasses
import os
import pickle
import struct
import zipfile
from typing import Optional, Tuple

import numpy as np
import pytest

from tfmood.models.torch_import import (
    UnsafePickleError,
    expected_torch_shapes,
    import_state_dict,
    import_torch,
    infer_preset,
    load_pth,
    read_state_dict,
)

PARITY_TOLERANCE = 1e-4


# --- a minimal PyTorch-format writer (pickle opcodes by hand: no torch, no fake modules) -------


@dataclasses.dataclass
class StoredTensor:
    """A tensor as PyTorch pickles it: a storage key, an element offset, a size and strides."""

    key: str
    storage_type: str
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]
    numel: int  # of the whole storage
    parameter: bool = False
    view: Optional[Tuple[str, int, int]] = None  # legacy only: (view key, offset, numel)


def _fragment(value) -> bytes:
    """The opcodes of a plain value, without the PROTO header and STOP."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _encode(obj, legacy: bool) -> bytes:
    if isinstance(obj, dict):
        items = b"".join(
            _encode(key, legacy) + _encode(value, legacy) for key, value in obj.items()
        )
        return _global("collections", "OrderedDict") + b")R(" + items + b"u"
    if isinstance(obj, StoredTensor):
        pid_body = _fragment("storage") + _global("torch", obj.storage_type)
        pid_body += _fragment(obj.key) + _fragment("cpu") + _fragment(obj.numel)
        if legacy:
            pid_body += _fragment(obj.view)
        hooks = _global("collections", "OrderedDict") + b")R"
        args = b"((" + pid_body + b"tQ" + _fragment(obj.offset) + _fragment(tuple(obj.size))
        args += _fragment(tuple(obj.stride)) + _fragment(False) + hooks + b"t"
        tensor = _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
        if obj.parameter:
            tensor = _global("torch._utils", "_rebuild_parameter") + b"(" + tensor
            tensor += _fragment(True) + hooks + b"tR"
        return tensor
    return _fragment(obj)


def _object_pickle(obj, legacy: bool) -> bytes:
    return b"\x80\x02" + _encode(obj, legacy) + b"."


def write_zip_pth(path, obj, storages, byteorder="little"):
    """PyTorch's zip format: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _object_pickle(obj, legacy=False))
        archive.writestr("archive/byteorder", byteorder)
        archive.writestr("archive/version", "3\n")
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())


def write_legacy_pth(path, obj, storages):
    """PyTorch's legacy format: magic, protocol, sys_info, object, keys, then the storages."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, 2), pickle.dumps(1001, 2)]
    parts += [pickle.dumps(sys_info, 2), _object_pickle(obj, legacy=True)]
    parts.append(pickle.dumps(list(storages), 2))
    for array in storages.values():
        parts.append(
            struct.pack("<q", array.size) + array.astype(array.dtype.newbyteorder("<")).tobytes()
        )
    path.write_bytes(b"".join(parts))


def tricky_state():
    """Tensors with offsets, shared storages, transposed strides, several dtypes, and the arrays
    each one must come out as."""
    rng = np.random.default_rng(0)
    shared = rng.standard_normal(40).astype(np.float32)
    counts = np.array([7, 19904], dtype=np.int64)
    doubles = rng.standard_normal(6)
    halves = rng.standard_normal(4).astype(np.float16)
    storages = {"0": shared, "1": counts, "2": doubles, "3": halves}
    tensors = collections.OrderedDict(
        [
            # (2, 3, 2) contiguous from element 4
            ("a.weight", StoredTensor("0", "FloatStorage", 4, (2, 3, 2), (6, 2, 1), 40, True)),
            # the transpose of a (3, 5) block starting at element 20 (non-contiguous strides)
            ("a.bias", StoredTensor("0", "FloatStorage", 20, (5, 3), (1, 5), 40)),
            ("a.num_batches_tracked", StoredTensor("1", "LongStorage", 1, (), (), 2)),
            ("b.running_var", StoredTensor("2", "DoubleStorage", 0, (2, 3), (3, 1), 6)),
            ("b.half", StoredTensor("3", "HalfStorage", 1, (3,), (1,), 4)),
        ]
    )
    expected = {
        "a.weight": shared[4:16].reshape(2, 3, 2),
        "a.bias": shared[20:35].reshape(3, 5).T,
        "a.num_batches_tracked": np.array(19904, dtype=np.int64),
        "b.running_var": doubles.reshape(2, 3),
        "b.half": halves[1:],
    }
    return tensors, storages, expected


def assert_same_arrays(state, expected):
    assert list(state) == list(expected)
    for key, array in expected.items():
        assert state[key].dtype == array.dtype, key
        assert state[key].shape == array.shape, key
        np.testing.assert_array_equal(state[key], array, err_msg=key)


@pytest.mark.parametrize("writer", [write_zip_pth, write_legacy_pth])
def test_reads_offsets_strides_and_dtypes(tmp_path, writer):
    tensors, storages, expected = tricky_state()
    path = tmp_path / "weights.pth"
    writer(path, tensors, storages)
    assert_same_arrays(read_state_dict(path), expected)


def test_reads_big_endian_zip(tmp_path):
    values = np.arange(6, dtype=np.float32) * 1.5
    tensors = {"w": StoredTensor("0", "FloatStorage", 0, (2, 3), (3, 1), 6)}
    write_zip_pth(tmp_path / "big.pth", tensors, {"0": values.astype(">f4")}, byteorder="big")
    state = read_state_dict(tmp_path / "big.pth")
    np.testing.assert_array_equal(state["w"], values.reshape(2, 3))


def test_reads_legacy_storage_views(tmp_path):
    root = np.arange(10, dtype=np.float32)
    # A view of elements 4..9 of storage "0", then a tensor at offset 1 of that view.
    tensor = StoredTensor("0", "FloatStorage", 1, (2, 2), (2, 1), 10, view=("0v", 4, 6))
    write_legacy_pth(tmp_path / "view.pth", {"w": tensor}, {"0": root})
    np.testing.assert_array_equal(read_state_dict(tmp_path / "view.pth")["w"], [[5, 6], [7, 8]])


def test_unwraps_nested_checkpoint_and_module_prefix(tmp_path):
    weights = np.arange(4, dtype=np.float32)
    tensor = StoredTensor("0", "FloatStorage", 0, (4,), (1,), 4)
    checkpoint = {"epoch": 12, "state_dict": {"module.dense.bias": tensor}}
    write_zip_pth(tmp_path / "checkpoint.pth", checkpoint, {"0": weights})
    raw = load_pth(tmp_path / "checkpoint.pth")
    assert raw["epoch"] == 12
    state = read_state_dict(tmp_path / "checkpoint.pth")
    assert list(state) == ["dense.bias"]
    np.testing.assert_array_equal(state["dense.bias"], weights)


def test_rejects_tensor_outside_its_storage(tmp_path):
    tensor = StoredTensor("0", "FloatStorage", 2, (3, 3), (3, 1), 9)
    write_zip_pth(tmp_path / "bad.pth", {"w": tensor}, {"0": np.zeros(9, np.float32)})
    with pytest.raises(ValueError, match="outside its storage"):
        read_state_dict(tmp_path / "bad.pth")


def test_rejects_non_pytorch_files(tmp_path):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pth"):
        read_state_dict(tmp_path / "text.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")


# --- refusing pickles that run code -------------------------------------------------------------


class RunsCommand:
    """Unpickling this with a plain unpickler would run a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _malicious_files(tmp_path, sentinel):
    payload = pickle.dumps({"w": RunsCommand(f"touch {sentinel}")}, protocol=2)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(payload)
    # A well-formed legacy header, with the payload as the object pickle.
    legacy = tmp_path / "legacy.pth"
    header = [pickle.dumps(0x1950A86A20F9469CFC6C, 2), pickle.dumps(1001, 2), pickle.dumps({}, 2)]
    legacy.write_bytes(b"".join(header) + payload)
    zipped = tmp_path / "zipped.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
    return [raw, legacy, zipped]


def test_malicious_pickles_are_refused_and_run_nothing(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    for path in _malicious_files(tmp_path, sentinel):
        with pytest.raises(UnsafePickleError, match=r"refusing to load global (os|posix)\.system"):
            read_state_dict(path)
        assert not sentinel.exists(), f"{path.name} ran its command"
    # The payload is live: a plain unpickler would have created the file.
    assert b"system" in (tmp_path / "raw.pth").read_bytes()


def test_refuses_any_global_outside_the_allow_list(tmp_path):
    tensors, storages, _ = tricky_state()
    path = tmp_path / "weights.pth"
    write_zip_pth(path, tensors, storages)
    with zipfile.ZipFile(path) as archive:
        data = archive.read("archive/data.pkl")
    # Pickles have no offsets, so one GLOBAL opcode can be swapped for another of any length.
    tampered = data.replace(_global("collections", "OrderedDict"), _global("builtins", "eval"), 1)
    with zipfile.ZipFile(tmp_path / "tampered.pth", "w") as archive:
        archive.writestr("archive/data.pkl", tampered)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        read_state_dict(tmp_path / "tampered.pth")


# --- mapping a state dict onto the presets ------------------------------------------------------

FILTERS = (1, 64, 128, 128, 128, 64)


def synthetic_state(attention_blocks=(), n_tags=56, seed=0):
    """A random PyTorch-layout VGG-ish state dict, attention in the given blocks."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()

    def batch_norm(name, channels):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, channels).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0, 1, channels).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2, channels).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(3, dtype=np.int64)

    batch_norm("bn_init", 1)
    for block in range(1, 6):
        c_in, c_out = FILTERS[block - 1], FILTERS[block]
        if block in attention_blocks:
            for projection in ("query_conv", "key_conv", "value_conv"):
                weight = rng.normal(0, 0.1, (c_out, c_in, 1, 1)).astype(np.float32)
                state[f"conv_{block}.{projection}.weight"] = weight
            state[f"conv_{block}.rel_h"] = rng.normal(0, 1, (c_out // 2, 1, 1, 3, 1)).astype(
                np.float32
            )
            state[f"conv_{block}.rel_w"] = rng.normal(0, 1, (c_out // 2, 1, 1, 1, 3)).astype(
                np.float32
            )
        else:
            state[f"conv_{block}.weight"] = rng.normal(0, 0.1, (c_out, c_in, 3, 3)).astype(
                np.float32
            )
            state[f"conv_{block}.bias"] = rng.normal(0, 0.1, c_out).astype(np.float32)
        batch_norm(f"bn_{block}", c_out)
    state["dense.weight"] = rng.normal(0, 0.1, (n_tags, 64)).astype(np.float32)
    state["dense.bias"] = rng.normal(0, 0.1, n_tags).astype(np.float32)
    return state


def torch_conv3x3(x, weight, bias):
    """PyTorch Conv2d(3, padding=1) on NCHW in numpy: cross-correlation of the padded input."""
    _, _, height, width = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], weight.shape[0], height, width))
    for i in range(3):
        for j in range(3):
            window = padded[:, :, i : i + height, j : j + width]
            out += np.einsum("bchw,oc->bohw", window, weight[:, :, i, j])
    return out + bias[None, :, None, None]


def torch_attention_conv(x, state, prefix):
    """The reference AttentionConv forward (kernel 3, padding 1, one group) on NCHW in numpy."""
    batch, _, height, width = x.shape

    def project(inputs, name):
        return np.einsum("bchw,oc->bohw", inputs, state[f"{prefix}.{name}.weight"][:, :, 0, 0])

    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    q, k, v = project(x, "query_conv"), project(padded, "key_conv"), project(padded, "value_conv")
    channels = q.shape[1]
    # unfold(2, 3, 1).unfold(3, 3, 1): (B, C, H, W, 3, 3), kernel row then kernel column.
    k_patches = np.zeros((batch, channels, height, width, 3, 3))
    v_patches = np.zeros_like(k_patches)
    for i in range(3):
        for j in range(3):
            k_patches[..., i, j] = k[:, :, i : i + height, j : j + width]
            v_patches[..., i, j] = v[:, :, i : i + height, j : j + width]
    half = channels // 2
    k_patches[:, :half] += state[f"{prefix}.rel_h"][None]  # (C/2, 1, 1, 3, 1)
    k_patches[:, half:] += state[f"{prefix}.rel_w"][None]  # (C/2, 1, 1, 1, 3)
    logits = q[..., None] * k_patches.reshape(batch, channels, height, width, 9)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights * v_patches.reshape(batch, channels, height, width, 9)).sum(axis=-1)


def layer_output(model, name, x_nchw):
    """Run one Keras layer on an NCHW numpy input and return its output as NCHW."""
    output = model.get_layer(name)(x_nchw.transpose(0, 2, 3, 1).astype(np.float32))
    return np.asarray(output).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("block, preset", [(4, "sa4"), (5, "sa5")])
def test_attention_blocks_map_like_pytorch(block, preset):
    state = synthetic_state(attention_blocks=(block,))
    assert infer_preset(state) == preset
    model = import_state_dict(state)
    assert model.name == preset
    x = np.random.default_rng(1).normal(size=(2, FILTERS[block - 1], 4, 6))
    expected = torch_attention_conv(x, state, f"conv_{block}")
    np.testing.assert_allclose(layer_output(model, f"conv_{block}", x), expected, atol=1e-4)


def test_conv_batchnorm_and_dense_map_like_pytorch():
    state = synthetic_state()
    model = import_state_dict(state, preset="baseline")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 64, 5, 7))
    expected = torch_conv3x3(x, state["conv_2.weight"], state["conv_2.bias"])
    np.testing.assert_allclose(layer_output(model, "conv_2", x), expected, atol=1e-4)
    # BatchNorm in eval mode, with the running statistics: (x - mean) / sqrt(var + eps) * w + b.
    y = rng.normal(size=(2, 128, 3, 3))
    bn = {key: state[f"bn_3.{key}"][None, :, None, None] for key in ("weight", "bias")}
    mean, var = (state[f"bn_3.running_{key}"][None, :, None, None] for key in ("mean", "var"))
    expected = (y - mean) / np.sqrt(var + 1e-5) * bn["weight"] + bn["bias"]
    np.testing.assert_allclose(layer_output(model, "bn_3", y), expected, atol=1e-4)
    features = rng.normal(size=(2, 64)).astype(np.float32)
    logits = features @ state["dense.weight"].T + state["dense.bias"]
    dense = np.asarray(model.get_layer("dense")(features))
    np.testing.assert_allclose(dense, 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_expected_keys_cover_every_parameter():
    state = synthetic_state(attention_blocks=(3,))
    model = import_state_dict(state)
    expected = expected_torch_shapes(model)
    parameters = {k: v.shape for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert dict(expected) == parameters


def test_mismatches_are_named():
    state = synthetic_state(attention_blocks=(3,))
    with pytest.raises(ValueError, match=r"missing keys \['conv_3.weight', 'conv_3.bias'\]"):
        import_state_dict(state, preset="baseline")
    broken = synthetic_state()
    del broken["bn_2.running_var"]
    broken["extra.weight"] = np.zeros(3, np.float32)
    broken["dense.weight"] = np.zeros((50, 64), np.float32)
    with pytest.raises(ValueError) as error:
        import_state_dict(broken)
    message = str(error.value)
    assert "missing keys ['bn_2.running_var']" in message
    assert "unexpected keys ['extra.weight']" in message
    assert "dense.weight has shape (50, 64), expected (56, 64)" in message


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match=r"attention in blocks \[1, 2\]"):
        infer_preset(synthetic_state(attention_blocks=(1, 2)))


# --- parity with PyTorch on the reference files -------------------------------------------------


@pytest.mark.parametrize(
    "folder, weights, preset",
    [("mtg_baseline", "best_model.pth", "baseline"), ("augment_sa3", "random_init.pth", "sa3")],
)
def test_reference_parity(reference_dir, folder, weights, preset):
    state = read_state_dict(reference_dir / folder / weights)
    assert infer_preset(state) == preset
    model = import_torch(reference_dir / folder / weights, preset=preset)
    with np.load(reference_dir / folder / "io.npz", allow_pickle=False) as reference:
        x, y = reference["x"], reference["y"]
    scores = model.predict(x, verbose=0)
    difference = float(np.abs(scores - y).max())
    print(f"{folder}: max abs difference to PyTorch {difference:.3g}")
    assert difference < PARITY_TOLERANCE
