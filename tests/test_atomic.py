"""Atomic writes: the destination is the old file or the complete new one, never a partial one."""

import json
import os

import keras
import numpy as np
import pytest

from tfmood import atomic


def test_write_text_json_and_bytes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.json"  # the folder is created
    atomic.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and path.read_text().endswith("\n")
    atomic.write_text(path, "new")
    assert path.read_text() == "new"
    atomic.write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "scores.npy"
    atomic.write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic.open_binary(path) as handle:
            handle.write(b"partial")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.npy"]


def test_temporary_name_keeps_the_extension_writers_check(tmp_path):
    # Keras picks the format from ".keras" and requires ".weights.h5" for weights.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    atomic.save_model(model, tmp_path / "best.keras")
    atomic.save_model(model, tmp_path / "latest.weights.h5")
    loaded = keras.saving.load_model(tmp_path / "best.keras", safe_mode=True)
    x = np.ones((1, 3), "float32")
    np.testing.assert_array_equal(loaded.predict_on_batch(x), model.predict_on_batch(x))
    with atomic.temporary_path(tmp_path / "latest.weights.h5") as temp:
        assert temp.endswith(".tmp.weights.h5") and os.path.dirname(temp) == str(tmp_path)
        open(temp, "wb").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "latest.weights.h5"]


def test_stale_temporaries_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "best.keras"
    stale = tmp_path / ".best.4242.0a1b2c3d.tmp.keras"
    other = tmp_path / ".bestest.4242.0a1b2c3d.tmp.keras"
    for file in (path, stale, other):
        file.write_bytes(b"x")
    assert atomic.remove_stale_temporaries(path) == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])


def test_save_npy_writes_a_plain_array_and_refuses_pickled_objects(tmp_path):
    path = tmp_path / "scores.npy"
    atomic.save_npy(path, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError):
        atomic.save_npy(path, np.array([{"a": 1}], dtype=object))
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), [[0, 1, 2], [3, 4, 5]])
    assert [p.name for p in tmp_path.iterdir()] == ["scores.npy"]
