"""One set of checks every tfmood layer goes through."""

import os

import keras
import numpy as np


def run_layer_checks(layer_cls, init_kwargs, input_shape, expected_output_shape,
                     expected_trainable_weights, tmp_path, atol=1e-6):
    """Config round trip, build and output shape, weight count, one fit step, .keras save/load."""
    layer = layer_cls(**init_kwargs)
    clone = layer_cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2,) + tuple(input_shape)).astype("float32")
    y = layer(x)
    assert tuple(y.shape) == (2,) + tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape((2,) + tuple(input_shape))) == tuple(y.shape)
    assert len(layer.trainable_weights) == expected_trainable_weights

    inputs = keras.Input(shape=input_shape)
    outputs = layer_cls(**init_kwargs)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    target = rng.normal(size=(2,) + tuple(expected_output_shape)).astype("float32")
    model.fit(x, target, epochs=1, batch_size=2, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after)), "a weight did not train"

    path = os.path.join(tmp_path, "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=atol)
