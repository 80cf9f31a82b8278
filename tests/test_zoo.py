"""Model zoo: every builder trains, parameter counts match MLPerf Tiny, tf_keras rebuilds are exact copies."""
import numpy as np
import pytest

from edgeport.core import tfenv

tfenv.import_tf()
import keras  # noqa: E402

from edgeport.train.zoo import MODELS, build_model, count_macs  # noqa: E402
from edgeport_runtime.errors import InputError, UsageError  # noqa: E402

# (model, sample shape) small enough to train one epoch in a fraction of a second
SMALL = {"mlp": (8, 8, 1), "tiny_cnn": (8, 8, 1), "ds_cnn": (16, 8, 1), "resnet8": (16, 16, 3),
         "mobilenet_v1": (32, 32, 3), "conv1d": (32, 3), "autoencoder": (16,)}


def test_small_table_covers_every_zoo_model():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_one_epoch_on_synthetic_batch(name):
    keras.utils.set_random_seed(0)
    shape = SMALL[name]
    x = np.random.default_rng(0).normal(size=(32, *shape)).astype(np.float32)
    y = np.arange(32) % 3
    model = build_model(name, shape, 3)
    if MODELS[name].task == "autoencoder":
        model.compile("adam", "mse")
        hist = model.fit(x, x.reshape(32, -1), epochs=1, batch_size=16, verbose=0)
        assert model.output_shape == (None, int(np.prod(shape)))
    else:
        model.compile("adam", "sparse_categorical_crossentropy")
        hist = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert model.output_shape == (None, 3)
    assert np.isfinite(hist.history["loss"][0])


def test_resnet8_and_ds_cnn_match_mlperf_tiny_sizes():
    # MLPerf Tiny reference models: ResNet-8 ~78k parameters (32x32x3, 10 classes), DS-CNN ~23-25k (49x10x1, 12).
    assert 77_000 <= build_model("resnet8", (32, 32, 3), 10).count_params() <= 79_500
    assert 23_000 <= build_model("ds_cnn", (49, 10, 1), 12).count_params() <= 25_000


def test_mobilenet_width_multiplier_shrinks_model():
    small = build_model("mobilenet_v1", (32, 32, 3), 2, width=0.25).count_params()
    large = build_model("mobilenet_v1", (32, 32, 3), 2, width=0.5).count_params()
    assert large > 3 * small


def test_tf_keras_rebuild_copies_weights_exactly():
    import tf_keras

    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype(np.float32)
    k3 = build_model("resnet8", (16, 16, 3), 10)
    k2 = build_model("resnet8", (16, 16, 3), 10, k=tf_keras)
    k2.set_weights(k3.get_weights())
    assert [w.name for w in k3.layers] == [w.name for w in k2.layers]
    for a, b in zip(k3.get_weights(), k2.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Same weights, but the two Keras versions order float32 ops differently: ~2e-8 seen, 1e-6 allows for it.
    np.testing.assert_allclose(np.asarray(k3(x)), k2(x).numpy(), atol=1e-6)


def test_count_macs_matches_hand_computed():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)  # 6*6 * 3*3*2*4 = 2592
    x = keras.layers.DepthwiseConv2D(3, padding="valid")(x)  # 4*4 * 3*3*4 = 576
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(5)(x)  # 64*5 = 320
    assert count_macs(keras.Model(inp, out)) == 2592 + 576 + 320


def test_image_model_on_vectors_errors():
    with pytest.raises(InputError, match=r"needs images shaped \(H, W, C\)"):
        build_model("tiny_cnn", (64,), 10)


def test_unknown_model_and_option_hint():
    with pytest.raises(UsageError, match="Did you mean 'resnet8'"):
        build_model("resnet9", (8, 8, 1), 10)
    with pytest.raises(UsageError, match="option"):
        build_model("tiny_cnn", (8, 8, 1), 10, width=0.5)
