"""The tf_keras bridge: tfmot (pruning, QAT) rejects Keras 3 models, so rebuild the same graph in tf_keras.

:func:`to_tf_keras` walks a Keras 3 functional or Sequential model layer by layer, creates the tf_keras layer of
the same class from the Keras 3 layer's config (keys tf_keras does not know are dropped; initializers and
regularizers too, since the weights are copied), connects it the same way and copies the weights. The result
computes the same function (weights bit-identical, outputs equal to float rounding; tested per layer type).

Importing tfmot sets TF_USE_LEGACY_KERAS=1 in os.environ (seen with tfmot 0.8.1); :func:`import_tfmot` restores it so child
processes and later Keras code are not switched to tf_keras behind the user's back.
"""
from __future__ import annotations

import inspect
import os
from typing import Dict

from edgeport_runtime.errors import EdgeportError

from .recipes import still_working

# The layers the bridge carries, keyed by Keras 3 class name (tf_keras has the class of the same name).
# tfmot's pruning accepts all of them; its default 8-bit QAT scheme refuses Conv1D and a BatchNormalization that
# does not follow a convolution (tfmot 0.8.1), and the QAT recipe then names the layer.
BRIDGE_LAYERS = (
    "InputLayer", "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization",
    "ReLU", "Activation", "Softmax", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Flatten",
    "Reshape", "Dropout", "Add", "Concatenate", "ZeroPadding2D", "UpSampling2D",
)
_DROP_KEYS = {"dtype", "kernel_initializer", "bias_initializer", "depthwise_initializer", "pointwise_initializer",
              "beta_initializer", "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer",
              "kernel_regularizer", "bias_regularizer", "activity_regularizer", "depthwise_regularizer",
              "pointwise_regularizer", "beta_regularizer", "gamma_regularizer", "kernel_constraint",
              "bias_constraint", "depthwise_constraint", "pointwise_constraint", "beta_constraint",
              "gamma_constraint", "quantization_config", "lora_rank", "lora_alpha", "synchronized"}


class BridgeError(EdgeportError):
    """A model the tf_keras bridge cannot carry (names the layer and the recipes that still work)."""


def import_tfmot():
    """Import tensorflow_model_optimization without leaving TF_USE_LEGACY_KERAS set in os.environ."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    import tensorflow_model_optimization as tfmot

    if before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def _refuse(layer, why: str):
    ok = still_working(lambda s: s.bridge)
    return BridgeError(f"the tf_keras bridge (needed by tflite-int8-qat and tflite-int8-pruned) cannot carry "
                       f"layer {layer.name!r} ({type(layer).__name__}): {why}. Recipes that still work: {ok}.")


def _tf_layer(tfk, layer):
    cls_name = type(layer).__name__
    if cls_name not in BRIDGE_LAYERS:
        raise _refuse(layer, f"{cls_name} is not in the bridge's layer table")
    tf_cls = getattr(tfk.layers, cls_name)
    cfg = layer.get_config()
    accepted = set(inspect.signature(tf_cls.__init__).parameters) | {"name", "trainable"}
    kwargs = {k: v for k, v in cfg.items() if k not in _DROP_KEYS and k in accepted}
    for key in ("activation",):
        if isinstance(kwargs.get(key), dict):
            raise _refuse(layer, f"its {key} is a custom object")
    try:
        return tf_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise _refuse(layer, f"tf_keras rejects its config ({e})") from None


def to_tf_keras(model):
    """Rebuild Keras 3 ``model`` in tf_keras with identical weights; raise BridgeError when it cannot."""
    import keras
    import tf_keras as tfk

    if not model.inputs or len(model.inputs) != 1:
        raise BridgeError("the bridge needs a built model with exactly one input.")
    if isinstance(model, keras.Sequential):  # linear by definition: no graph walk needed
        x = inp = tfk.Input(shape=tuple(model.inputs[0].shape[1:]), name="input")
        pairs = []
        for layer in model.layers:
            new = _tf_layer(tfk, layer)
            x = new(x)
            pairs.append((layer, new))
        return _copy_weights(tfk.Model(inp, x, name=model.name), pairs)
    tensors: Dict[int, object] = {}
    src_in = model.inputs[0]
    tensors[id(src_in)] = tfk.Input(shape=tuple(src_in.shape[1:]), name="input")
    pairs = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        # Nodes from earlier builds (e.g. a Sequential's) reference other tensors; only nodes fed by this graph count.
        nodes = [n for n in layer._inbound_nodes
                 if all(id(t) in tensors for t in keras.tree.flatten(n.input_tensors))]
        if not nodes:
            raise _refuse(layer, "its inputs come from outside the model graph (a nested model?)")
        if len(nodes) > 1:
            raise _refuse(layer, "it is shared (called more than once in the graph)")
        node = nodes[0]
        new = _tf_layer(tfk, layer)
        args = node.arguments.args
        mapped = keras.tree.map_structure(lambda t: tensors[id(t)] if id(t) in tensors else t, args[0])
        out = new(mapped)
        outs_src = keras.tree.flatten(node.output_tensors)
        outs_new = out if isinstance(out, (list, tuple)) else [out]
        for s, n in zip(outs_src, outs_new):
            tensors[id(s)] = n
        pairs.append((layer, new))
    missing = [t for t in model.outputs if id(t) not in tensors]
    if missing:
        raise BridgeError(f"the bridge could not reach the model output {missing[0].name}; unsupported graph.")
    rebuilt = tfk.Model(tensors[id(src_in)], [tensors[id(t)] for t in model.outputs][0], name=model.name)
    return _copy_weights(rebuilt, pairs)


def _copy_weights(rebuilt, pairs):
    for src, new in pairs:
        w = src.get_weights()
        if w:
            new.set_weights(w)
    return rebuilt


def bridge_model(source):
    """A tf_keras model computing the same function as ``source`` (an edgeport.convert.source.Source)."""
    if source.kind == "tf_keras":
        import tf_keras as tfk

        clone = tfk.models.clone_model(source.model)
        clone.set_weights(source.model.get_weights())
        return clone
    if source.kind == "keras":
        return to_tf_keras(source.model)
    ok = still_working(lambda s: s.bridge)
    raise BridgeError(f"{source.path}: a SavedModel without Keras layers cannot be pruned or fine-tuned "
                      f"(no layers to wrap). Recipes that still work: {ok}.")
