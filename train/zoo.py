"""The model zoo: small models for Raspberry Pi-class CPUs, one builder each.

Every builder has the signature ``build(k, input_shape, num_classes, **options)`` where ``k`` is the Keras
module to build with: ``keras`` (Keras 3, for training and export) or ``tf_keras`` (for the pruning/QAT bridge,
which needs tf_keras because tfmot rejects Keras 3 models). Layer names are fixed so weights copy across by name.
Only layers both Keras versions share are used, and augmentation stays outside the model so exports are clean.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Sequence, Tuple

from edgeport_runtime.errors import InputError, unknown_name

# Keras's default 0.99 lets the moving statistics lag far behind on small datasets (a few hundred steps in all):
# ds_cnn on digits evaluated at chance level with 0.99 and trains normally with 0.9.
BN_MOMENTUM = 0.9


def _flat_input(k, input_shape):
    inp = k.Input(shape=tuple(input_shape), name="input")
    x = k.layers.Flatten(name="flatten")(inp) if len(input_shape) > 1 else inp
    return inp, x


def build_mlp(k, input_shape, num_classes, units: Sequence[int] = (64, 32), dropout: float = 0.1):
    """Dense classifier: Flatten -> Dense(64, relu) -> Dense(32, relu) -> softmax. Any input rank.

    Parameters: ~6.6k on digits (64 features) with 10 classes.
    """
    inp, x = _flat_input(k, input_shape)
    for i, u in enumerate(units):
        x = k.layers.Dense(u, activation="relu", name=f"dense{i}")(x)
        if dropout:
            x = k.layers.Dropout(dropout, name=f"dropout{i}")(x)
    out = k.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="mlp")


def _need_image(name, input_shape):
    if len(input_shape) != 3:
        raise InputError(f"model {name} needs images shaped (H, W, C); the dataset has samples of shape "
                         f"{tuple(input_shape)}. Use `mlp` (any shape) or `conv1d` (sequences).")


def build_tiny_cnn(k, input_shape, num_classes, filters: Sequence[int] = (32, 64), dense: int = 128):
    """Two conv blocks (3x3 conv + BN + ReLU + 2x2 max-pool), Flatten, Dense, softmax. The default model.

    Parameters: ~53k on digits (8x8x1) with 10 classes. Big enough that weights, not the flatbuffer
    overhead (~8 KB), dominate the .tflite: int8 then really is ~1/4 of float32.
    """
    _need_image("tiny_cnn", input_shape)
    inp = k.Input(shape=tuple(input_shape), name="input")
    x = inp
    for i, f in enumerate(filters):
        x = k.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
        x = k.layers.ReLU(name=f"relu{i}")(x)
        x = k.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = k.layers.Flatten(name="flatten")(x)
    x = k.layers.Dense(dense, activation="relu", name="dense")(x)
    x = k.layers.Dropout(0.2, name="dropout")(x)
    out = k.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="tiny_cnn")


def build_ds_cnn(k, input_shape, num_classes, filters: int = 64, blocks: int = 4):
    """Keyword-spotting depthwise-separable CNN (MLPerf Tiny KWS DS-CNN): conv 10x4/2, 4 DS blocks, avg pool.

    Parameters: ~24.9k with 12 classes (MLPerf Tiny: ~24.9k), ~24.8k with 10.
    """
    _need_image("ds_cnn", input_shape)
    inp = k.Input(shape=tuple(input_shape), name="input")
    x = k.layers.Conv2D(filters, (10, 4), strides=2, padding="same", name="conv0")(inp)
    x = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn0")(x)
    x = k.layers.ReLU(name="relu0")(x)
    for i in range(1, blocks + 1):
        x = k.layers.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(x)
        x = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"dw_bn{i}")(x)
        x = k.layers.ReLU(name=f"dw_relu{i}")(x)
        x = k.layers.Conv2D(filters, 1, name=f"pw{i}")(x)
        x = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"pw_bn{i}")(x)
        x = k.layers.ReLU(name=f"pw_relu{i}")(x)
    x = k.layers.Dropout(0.4, name="dropout")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    out = k.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="ds_cnn")


def build_resnet8(k, input_shape, num_classes, filters: Sequence[int] = (16, 32, 64)):
    """MLPerf Tiny image-classification ResNet-8: conv stem + 3 residual stacks (16, 32, 64 filters).

    Parameters: ~78.7k on 32x32x3 with 10 classes (MLPerf Tiny: ~78k), ~78.3k on 28x28x1.
    """
    _need_image("resnet8", input_shape)
    L = k.layers
    reg = k.regularizers.l2(1e-4)
    inp = k.Input(shape=tuple(input_shape), name="input")
    x = L.Conv2D(filters[0], 3, padding="same", kernel_regularizer=reg, name="stem")(inp)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for s, f in enumerate(filters):
        strides = 1 if s == 0 else 2
        y = L.Conv2D(f, 3, strides=strides, padding="same", kernel_regularizer=reg, name=f"s{s}_conv1")(x)
        y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"s{s}_bn1")(y)
        y = L.ReLU(name=f"s{s}_relu1")(y)
        y = L.Conv2D(f, 3, padding="same", kernel_regularizer=reg, name=f"s{s}_conv2")(y)
        y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"s{s}_bn2")(y)
        if s > 0:  # projection shortcut where the shape changes
            x = L.Conv2D(f, 1, strides=strides, padding="same", kernel_regularizer=reg, name=f"s{s}_proj")(x)
        x = L.Add(name=f"s{s}_add")([x, y])
        x = L.ReLU(name=f"s{s}_relu2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="resnet8")


def build_mobilenet_v1(k, input_shape, num_classes, width: float = 0.25):
    """MobileNet v1 (visual-wake-words style) with width multiplier ``width``: 13 depthwise-separable blocks.

    Parameters: ~219k at width 0.25 on 96x96x3 with 2 classes (MLPerf Tiny VWW: ~221k).
    """
    _need_image("mobilenet_v1", input_shape)
    if not 0 < width <= 1.0:
        raise InputError(f"mobilenet_v1 width must be in (0, 1], got {width}.")
    L = k.layers
    c = lambda n: max(8, int(n * width))  # noqa: E731
    inp = k.Input(shape=tuple(input_shape), name="input")
    x = L.Conv2D(c(32), 3, strides=2, padding="same", use_bias=False, name="conv0")(inp)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="bn0")(x)
    x = L.ReLU(6.0, name="relu0")(x)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (f, s) in enumerate(plan, 1):
        x = L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"dw_bn{i}")(x)
        x = L.ReLU(6.0, name=f"dw_relu{i}")(x)
        x = L.Conv2D(c(f), 1, use_bias=False, name=f"pw{i}")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"pw_bn{i}")(x)
        x = L.ReLU(6.0, name=f"pw_relu{i}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="mobilenet_v1")


def build_conv1d(k, input_shape, num_classes, filters: Sequence[int] = (16, 32)):
    """1-D CNN for sensor windows / time series (N, T, C); vectors (N, F) are read as (F, 1).

    Parameters: ~3.2k on 64x3 windows with 4 classes.
    """
    if len(input_shape) not in (1, 2):
        raise InputError(f"model conv1d needs sequences shaped (T, C) or vectors (F,); the dataset has samples "
                         f"of shape {tuple(input_shape)}. Use `mlp` or a 2-D CNN for images.")
    L = k.layers
    inp = k.Input(shape=tuple(input_shape), name="input")
    x = L.Reshape((input_shape[0], 1), name="to_sequence")(inp) if len(input_shape) == 1 else inp
    for i, f in enumerate(filters):
        x = L.Conv1D(f, 5, padding="same", name=f"conv{i}")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
        x = L.MaxPooling1D(2, padding="same", name=f"pool{i}")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    out = L.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="conv1d")


def build_autoencoder(k, input_shape, num_classes=None, units: Sequence[int] = (32, 16, 8)):
    """Dense autoencoder (MLPerf Tiny anomaly-detection style, smaller): reconstructs the flattened input.

    Its metric is reconstruction error (MSE), not accuracy; the output is the flattened input.
    Parameters: ~5.5k on digits (64 features).
    """
    inp, x = _flat_input(k, input_shape)
    n = 1
    for d in input_shape:
        n *= int(d)
    for i, u in enumerate(units):
        x = k.layers.Dense(u, activation="relu", name=f"enc{i}")(x)
    for i, u in enumerate(reversed(units[:-1])):
        x = k.layers.Dense(u, activation="relu", name=f"dec{i}")(x)
    out = k.layers.Dense(n, name="reconstruction")(x)
    return k.Model(inp, out, name="autoencoder")


@dataclass(frozen=True)
class ZooModel:
    """One row of the model zoo table."""

    name: str
    build: Callable
    task: str  # classification | autoencoder
    reference_shape: Tuple[int, ...]  # the input the model was designed for (for `edgeport models`)
    reference_classes: int
    # Parameters and MACs of the model built at reference_shape / reference_classes (default options), kept as
    # data so `edgeport models` needs no TensorFlow; tests/test_models_cli.py rebuilds each model to check them.
    params: int
    macs: int
    description: str
    options: Dict[str, object] = field(default_factory=dict)  # option -> default


MODELS: Dict[str, ZooModel] = {
    m.name: m for m in [
        ZooModel("mlp", build_mlp, "classification", (8, 8, 1), 10, 6_570, 6_464,
                 "dense classifier, any input shape"),
        ZooModel("tiny_cnn", build_tiny_cnn, "classification", (8, 8, 1), 10, 53_290, 347_392,
                 "2 conv blocks + dense (default)"),
        ZooModel("ds_cnn", build_ds_cnn, "classification", (49, 10, 1), 12, 24_908, 2_656_768,
                 "keyword spotting, depthwise-separable (MLPerf Tiny KWS)"),
        ZooModel("resnet8", build_resnet8, "classification", (32, 32, 3), 10, 78_666, 12_501_632,
                 "image classification (MLPerf Tiny IC)"),
        ZooModel("mobilenet_v1", build_mobilenet_v1, "classification", (96, 96, 3), 2, 219_058, 7_489_664,
                 "visual wake words (MLPerf Tiny VWW), --width multiplier", {"width": 0.25}),
        ZooModel("conv1d", build_conv1d, "classification", (64, 3), 4, 3_172, 97_408,
                 "sensor / time-series windows"),
        ZooModel("autoencoder", build_autoencoder, "autoencoder", (64,), 0, 5_544, 5_376,
                 "dense anomaly-detection autoencoder (metric: reconstruction MSE)"),
    ]
}


def build_model(name: str, input_shape, num_classes: int, k=None, **options):
    """Build zoo model ``name`` with Keras module ``k`` (default: Keras 3).

    Raises:
        UsageError: unknown model name or option.
        InputError: the input shape does not suit the model.
    """
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    row = MODELS[name]
    for opt in options:
        if opt not in row.options:
            raise unknown_name(f"option for model {name}", opt, row.options or ["(none)"])
    if k is None:
        import keras as k
    return row.build(k, tuple(int(d) for d in input_shape), num_classes, **options)


def count_macs(model) -> int:
    """Multiply-accumulates of one inference (batch 1) over Conv/Depthwise/Separable/Dense layers."""
    total = 0
    for layer in model.layers:
        cls = type(layer).__name__
        try:
            in_shape = tuple(layer.input.shape)
            out_shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        w = layer.get_weights()
        if not w:
            continue
        spatial = 1
        for d in out_shape[1:-1]:
            spatial *= int(d)
        if cls in ("Conv2D", "Conv1D"):
            kernel = w[0]  # (kh, kw, in, out) / (k, in, out)
            total += spatial * int(kernel.size)
        elif cls == "DepthwiseConv2D":
            total += spatial * int(w[0].size)
        elif cls == "SeparableConv2D":
            in_spatial = spatial  # depthwise output has the output spatial size
            total += in_spatial * int(w[0].size) + spatial * int(w[1].size)
        elif cls == "Dense":
            rows = 1
            for d in in_shape[1:-1]:
                rows *= int(d)
            total += rows * int(w[0].size)
    return total
