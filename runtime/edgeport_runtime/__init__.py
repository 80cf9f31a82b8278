"""edgeport-runtime: run edgeport bundles on ARM and x86 CPUs with LiteRT, tflite-runtime or onnxruntime.

Never imports TensorFlow or Keras. Only numpy is required; the interpreter comes from an extra::

    import edgeport_runtime as er
    model = er.load("bundle/")          # picks the best installed backend, verifies sha256 first
    probs = model.predict(x_float)      # float in, float out, any batch size
"""
from .backends import BACKENDS, installed_backends
from .errors import (BackendUnavailableError, EdgeportError, GateFailed, InputError, IntegrityError,
                     ModelLoadError, ModelRunError, UsageError)
from .manifest import SCHEMA_VERSION, Artifact, Manifest, TensorSpec, read_manifest
from .model import Model, load
from .quant import dequantize, quantize

__version__ = "0.1.0"
__all__ = ["load", "Model", "Manifest", "Artifact", "TensorSpec", "read_manifest", "SCHEMA_VERSION",
           "quantize", "dequantize", "BACKENDS", "installed_backends", "EdgeportError", "UsageError",
           "InputError", "ModelLoadError", "ModelRunError", "IntegrityError", "BackendUnavailableError", "GateFailed"]
