"""Loading the model to convert: Keras 3 `.keras`, legacy `.h5`, or a TensorFlow SavedModel directory.

Nothing in a model file is allowed to run code by default: `.keras` loads with Keras safe_mode, and `.h5` files
are checked for Lambda layers and unknown classes before any deserialisation (legacy Lambda layers carry
marshalled Python bytecode). ``unsafe=True`` (``--unsafe-load``) lifts both for files the user trusts.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from edgeport_runtime.errors import ModelLoadError, UsageError

from ..core import tfenv
from .opscan import check_saved_model

# Layer classes a legacy .h5 may hold without being treated as code (everything tf.keras ships as plain layers).
_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


@dataclass
class Source:
    """A loaded source model and the handful of things conversion needs from it."""

    path: Path
    kind: str  # keras | tf_keras | saved_model
    model: Any
    input_shape: Tuple[int, ...]  # one sample, no batch dimension
    output_shape: Tuple[int, ...]
    fn: Any = None  # SavedModel serving function
    # every input / output as (name, sample shape), in the Keras model's order (None: one input, one output)
    inputs: Optional[List[Tuple[str, Tuple[int, ...]]]] = None
    outputs: Optional[List[Tuple[str, Tuple[int, ...]]]] = None

    @property
    def multi_io(self) -> bool:
        """True for a model with several inputs or several outputs."""
        return len(self.inputs or ()) > 1 or len(self.outputs or ()) > 1

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        """One sample as the pipeline moves it: the input shape, or (total,) packed for several inputs."""
        if len(self.inputs or ()) > 1:
            return (sum(int(np.prod(s)) for _, s in self.inputs),)
        return self.input_shape

    def predict(self, x: np.ndarray, batch_size: int = 512):
        """Float outputs of the source model for a batch (the parity reference).

        Several inputs: ``x`` is packed (see :mod:`edgeport.convert.multiio`); several outputs: a list of arrays.
        """
        from .multiio import unpack

        x = np.asarray(x, np.float32)
        parts = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if self.kind == "saved_model":
                out = self.fn(xb)
                parts.append([np.asarray(list(out.values())[0] if isinstance(out, dict) else out)])
            else:
                feed = unpack(xb, [s for _, s in self.inputs]) if len(self.inputs or ()) > 1 else xb
                out = self.model(feed, training=False)
                parts.append([np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)])
        outs = [np.concatenate([p[j] for p in parts]).astype(np.float32) for j in range(len(parts[0]))]
        return outs if len(self.outputs or ()) > 1 else outs[0]

    def tensor_specs(self, tf):
        """tf.TensorSpecs of the inputs, free batch, named like the Keras inputs (one input: ``input``)."""
        if len(self.inputs or ()) > 1:
            return [tf.TensorSpec([None, *s], tf.float32, name=n) for n, s in self.inputs]
        return [tf.TensorSpec([None, *self.input_shape], tf.float32, name="input")]

    def concrete_function(self):
        """A tf ConcreteFunction ``serve(input)`` with a free batch dimension, for TFLite and tf2onnx."""
        tf = tfenv.import_tf()
        if self.multi_io:
            model = self.model
            many = len(self.inputs) > 1
            f = tf.function(lambda *xs: model(list(xs) if many else xs[0], training=False),
                            input_signature=self.tensor_specs(tf))
            return f, f.get_concrete_function()
        spec = tf.TensorSpec([None, *self.input_shape], tf.float32, name="input")
        if self.kind == "saved_model":
            fn = self.fn
            f = tf.function(lambda x: _first(fn(x)), input_signature=[spec])
        else:
            model = self.model
            f = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return f, f.get_concrete_function()


def _first(out):
    return list(out.values())[0] if isinstance(out, dict) else out


def _shape(t) -> Tuple[int, ...]:
    return tuple(int(d) if d is not None else -1 for d in t[1:])


def _check_single_io(model, path) -> None:
    """Every input needs a fixed sample shape (int8 export); any number of inputs and outputs is fine."""
    for t in model.inputs:
        if any(d is None for d in t.shape[1:]):
            raise UsageError(f"{path}: the input shape {tuple(t.shape)} has free dimensions besides the batch; "
                             "int8 export needs a fixed sample shape. Rebuild the model with a fixed Input shape.")


def _io(model) -> Tuple[Optional[list], Optional[list]]:
    """(name, sample shape) of each input and output in the Keras model's order; (None, None) for single I/O."""
    if len(model.inputs) == 1 and len(model.outputs) == 1:
        return None, None
    in_names = [getattr(t, "name", f"input_{i}").split(":")[0] for i, t in enumerate(model.inputs)]
    in_names = list(getattr(model, "input_names", None) or in_names)
    out_names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    return ([(n, _shape(tuple(t.shape))) for n, t in zip(in_names, model.inputs)],
            [(n, _shape(tuple(t.shape))) for n, t in zip(out_names, model.outputs)])


def _keras_source(path: Path, kind: str, model) -> "Source":
    ins, outs = _io(model)
    return Source(path, kind, model, _shape(tuple(model.inputs[0].shape)), _shape(tuple(model.outputs[0].shape)),
                  inputs=ins, outputs=outs)


def _h5_config(path: Path) -> Optional[dict]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read it as HDF5 ({e}); the file is corrupt or truncated.") from None
    if raw is None:
        raise ModelLoadError(f"{path}: an HDF5 file without a model_config; it holds weights only. Save the whole "
                             "model (model.save) or build the architecture and load the weights yourself.")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _config_objects(config) -> Iterator[dict]:
    """Every dict in a Keras config (nested models and layers included), depth first."""
    stack = [config]
    while stack:
        c = stack.pop()
        if isinstance(c, dict):
            yield c
            stack.extend(reversed(list(c.values())))
        elif isinstance(c, list):
            stack.extend(reversed(c))


def _code_layers(config) -> list:
    """Names of layers in a Keras config that would execute Python code when deserialised."""
    return [f"{c.get('config', {}).get('name', '?')} ({c['class_name']})" for c in _config_objects(config)
            if c.get("class_name") in _CODE_LAYERS]


def _custom_objects(config) -> list:
    """Objects in a Keras 3 config that name code outside Keras: registered custom classes or other modules.

    Deserialising them imports the named module or needs the user's class; either way code that is not in
    Keras would run, so safe mode refuses them before Keras sees the file.
    """
    found = []
    for c in _config_objects(config):
        if "class_name" in c:
            module, registered = c.get("module"), c.get("registered_name")
            foreign = module is not None and not (module == "keras" or str(module).startswith("keras."))
            if foreign or (isinstance(registered, str) and ">" in registered):
                found.append(f"{c['class_name']} ({registered or module})")
    return found


def _keras_archive_config(path: Path) -> Optional[dict]:
    """config.json of a .keras archive, or None when it cannot be read (Keras then reports the damage)."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _load_keras(path: Path, unsafe: bool):
    import keras

    config = _keras_archive_config(path)
    if config is not None and not unsafe:
        code = _code_layers(config) + _custom_objects(config)
        if code:
            raise ModelLoadError(f"{path}: {code} are Lambda layers or custom objects whose code loading would "
                                 "run (or import); safe mode refuses them. Pass --unsafe-load only if you trust "
                                 "this file and its code is importable.")

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as e:
        msg = str(e)
        if "safe_mode" in msg or "lambda" in msg.lower():
            raise ModelLoadError(f"{path}: the model contains code (a Lambda layer or custom object) and safe mode "
                                 "is on; pass --unsafe-load only if you trust this file.") from None
        raise ModelLoadError(f"{path}: Keras cannot load it ({msg.splitlines()[0][:300]}); the file is corrupt or "
                             "truncated, or was saved by an incompatible Keras version.") from None
    except (OSError, KeyError, TypeError, EOFError) as e:  # zip errors, truncated archives
        raise ModelLoadError(f"{path}: cannot read the .keras file ({type(e).__name__}: {str(e)[:200]}); "
                             "it is corrupt or truncated.") from None
    except Exception as e:  # zipfile.BadZipFile and friends
        raise ModelLoadError(f"{path}: cannot read the .keras file ({type(e).__name__}: {str(e)[:200]}); "
                             "it is corrupt or truncated.") from None


class _LegacyDepthwiseConv2D:
    """Factory used when Keras 3 meets a tf.keras DepthwiseConv2D config with the obsolete ``groups`` key."""

    def __new__(cls, *args, **kwargs):
        import keras

        kwargs.pop("groups", None)
        return keras.layers.DepthwiseConv2D(*args, **kwargs)

    @classmethod
    def from_config(cls, config):
        import keras

        config = dict(config)
        config.pop("groups", None)
        return keras.layers.DepthwiseConv2D.from_config(config)


def _load_h5(path: Path, unsafe: bool):
    """Keras 3 first (tolerating known legacy keys); tf_keras when Keras 3 refuses the file."""
    config = _h5_config(path)
    code = _code_layers(config)
    if code and not unsafe:
        raise ModelLoadError(f"{path}: layers {code} hold Python code that loading would run; safe mode refuses "
                             "them. Pass --unsafe-load only if you trust this file.")
    import keras

    errors = []
    try:
        m = keras.saving.load_model(path, compile=False, safe_mode=not unsafe,
                                    custom_objects={"DepthwiseConv2D": _LegacyDepthwiseConv2D})
        return m, "keras"
    except Exception as e:  # Keras 3 refuses many legacy files; tf_keras is the fallback
        errors.append(f"Keras 3: {str(e).splitlines()[0][:200]}")
    try:
        import tf_keras

        return tf_keras.models.load_model(path, compile=False), "tf_keras"
    except Exception as e:
        errors.append(f"tf_keras: {str(e).splitlines()[0][:200]}")
    raise ModelLoadError(f"{path}: neither Keras 3 nor tf_keras can load this .h5 ({'; '.join(errors)}).")


def _keras_metadata_code(path: Path) -> list:
    """Code-bearing layers (Lambda, ...) named in a tf_keras SavedModel's keras_metadata.pb."""
    from tf_keras.protobuf import saved_metadata_pb2  # deferred: imports TensorFlow

    meta = saved_metadata_pb2.SavedMetadata()
    try:
        meta.ParseFromString((path / "keras_metadata.pb").read_bytes())
        configs = [json.loads(n.metadata) for n in meta.nodes if n.metadata]
    except Exception as e:  # protobuf DecodeError, bad JSON
        raise ModelLoadError(f"{path}: keras_metadata.pb is unreadable ({type(e).__name__}); the SavedModel is "
                             "corrupt. Remove keras_metadata.pb to convert it as a plain SavedModel.") from None
    return _code_layers(configs)


def _legacy_keras_configs(path: Path) -> list:
    """Keras layer configs stored in saved_model.pb itself, as tf.keras wrote them before TF 2.5.

    Those SavedModels have no keras_metadata.pb; each Keras object's config sits in its object-graph node
    (``user_object.metadata``, identifier ``_tf_keras_*``), and tf_keras still revives layers from there.
    """
    from tensorflow.core.protobuf import saved_model_pb2  # deferred: imports TensorFlow

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception:  # protobuf DecodeError: the plain loader reports the damage
        return []
    configs = []
    for graph in sm.meta_graphs:
        for node in graph.object_graph_def.nodes:
            obj = node.user_object if node.WhichOneof("kind") == "user_object" else None
            if obj is not None and obj.identifier.startswith("_tf_keras") and obj.metadata:
                try:
                    configs.append(json.loads(obj.metadata))
                except ValueError:
                    raise ModelLoadError(f"{path}: the Keras metadata inside saved_model.pb is unreadable; the "
                                         "SavedModel is corrupt.") from None
    return configs


def _load_tf_keras_saved_model(path: Path, unsafe: bool, configs: Optional[list] = None) -> Optional[Source]:
    """A tf_keras SavedModel, loaded as layers so pruning/QAT apply; None if tf_keras fails.

    ``configs``: the Keras configs of a pre-TF-2.5 SavedModel (inside saved_model.pb); None reads
    keras_metadata.pb. Either way layers holding code are refused before tf_keras deserialises anything.
    """
    code = _keras_metadata_code(path) if configs is None else _code_layers(configs)
    if code and not unsafe:
        raise ModelLoadError(f"{path}: layers {code} hold Python code that loading would run; safe mode refuses "
                             "them. Pass --unsafe-load only if you trust this file.")
    import tf_keras

    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)  # "SavedModel saved prior to TF 2.5 detected": expected here, not news
    try:
        model = tf_keras.models.load_model(str(path), compile=False)
    except Exception:  # e.g. custom layers tf_keras cannot revive: the plain SavedModel path still converts it
        return None
    finally:
        tf_log.setLevel(level)
    if not isinstance(model, tf_keras.Model) or not getattr(model, "inputs", None):
        return None
    _check_single_io(model, path)
    return _keras_source(path, "tf_keras", model)


def _load_saved_model(path: Path, unsafe: bool = False) -> Source:
    tf = tfenv.import_tf()
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path}: a directory without saved_model.pb; expected a TensorFlow SavedModel.")
    if not unsafe:
        check_saved_model(path)  # before TensorFlow runs anything from the file
    if (path / "keras_metadata.pb").is_file():
        src = _load_tf_keras_saved_model(path, unsafe)
        if src is not None:
            return src
    else:
        legacy = _legacy_keras_configs(path)
        if legacy:  # saved by tf.keras before TF 2.5: its layers load like .h5, so QAT and pruning apply
            src = _load_tf_keras_saved_model(path, unsafe, legacy)
            if src is not None:
                return src
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"{path}: TensorFlow cannot load the SavedModel ({str(e).splitlines()[0][:200]}); "
                             "it is corrupt or incomplete.") from None
    sigs = getattr(loaded, "signatures", {})
    if "serving_default" in sigs:
        fn = sigs["serving_default"]
        in_specs = fn.structured_input_signature[1]
        if len(in_specs) != 1 or len(fn.structured_outputs) != 1:
            raise UsageError(f"{path}: the serving signature has {len(in_specs)} inputs and "
                             f"{len(fn.structured_outputs)} outputs; a SavedModel without Keras metadata converts "
                             "only with one input and one output. Convert the Keras model (.keras/.h5) instead.")
        in_name, spec = next(iter(in_specs.items()))
        call = lambda x: fn(**{in_name: tf.convert_to_tensor(x)})  # noqa: E731
    elif hasattr(loaded, "serve") or callable(loaded):
        raise ModelLoadError(f"{path}: the SavedModel has no serving_default signature; re-export it with "
                             "tf.saved_model.save(model, dir, signatures=...) or keras model.export(dir).")
    else:
        raise ModelLoadError(f"{path}: the SavedModel exposes nothing callable.")
    out_spec = next(iter(fn.structured_outputs.values()))
    shape = tuple(spec.shape)
    if len(shape) < 2 or any(d is None for d in shape[1:]):
        raise UsageError(f"{path}: input shape {shape} must be (batch, fixed dims...) for int8 export.")
    return Source(path, "saved_model", loaded, _shape(shape), _shape(tuple(out_spec.shape)), fn=call)


def load_source(path: os.PathLike, unsafe: bool = False) -> Source:
    """Load MODEL for conversion.

    Args:
        path: a ``.keras`` file, a legacy ``.h5`` file, or a SavedModel directory (old ones without Keras
            metadata included).
        unsafe: allow model files to run code (Lambda layers, custom objects). Off by default.

    Raises:
        ModelLoadError: missing, corrupt, truncated, code-bearing (in safe mode) or unloadable files.
        UsageError: free sample dimensions; several inputs/outputs in a plain SavedModel.
    """
    p = Path(path)
    tfenv.import_tf()
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or directory; expected a .keras, a .h5 or a SavedModel directory.")
    if p.is_dir():
        return _load_saved_model(p, unsafe)
    suffix = p.suffix.lower()
    if suffix == ".keras":
        model, kind = _load_keras(p, unsafe), "keras"
    elif suffix in (".h5", ".hdf5"):
        model, kind = _load_h5(p, unsafe)
    else:
        raise ModelLoadError(f"{p}: unsupported model file {suffix!r}; expected .keras, .h5 or a SavedModel "
                             "directory.")
    _check_single_io(model, p)
    return _keras_source(p, kind, model)
