"""tfmood.compat: every library internal tfmood uses is present, and a missing one is reported."""

import keras
import numpy as np
import pytest

from tfmood import compat


@pytest.mark.parametrize("name", sorted(compat.INTERNALS))
def test_internal_is_present(name):
    compat.check(name)


def test_missing_internal_is_reported_with_its_reason(monkeypatch):
    monkeypatch.setitem(compat.INTERNALS, "gone", ("keras.Model", "_no_such_hook", "a reason"))
    with pytest.raises(RuntimeError, match=r"keras.Model._no_such_hook is missing.*a reason"):
        compat.check("gone")


def test_inbound_nodes_are_the_calls_of_a_layer():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    keras.Model(inputs, dense(dense(keras.layers.Dense(2)(inputs))))
    assert len(compat.inbound_nodes(dense)) == 2


def test_tflite_schema_reads_a_flatbuffer():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    schema = compat.tflite_schema()
    graph = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = {graph.OperatorCodes(i).BuiltinCode() for i in range(graph.OperatorCodesLength())}
    assert schema.BuiltinOperator.FULLY_CONNECTED in codes


def test_build_from_shapes_and_vector_logs_train_a_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    compat.build_from_shapes(model, (np.zeros((1, 3), "float32"), np.zeros((1, 2), "float32")))
    compat.scalar_logs_as_vectors(model)
    history = model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
