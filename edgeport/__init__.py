"""edgeport toolkit: train small Keras models on CPU, convert them to TFLite/ONNX bundles, check parity.

The stages live in ``edgeport.train``, ``edgeport.convert`` and ``edgeport.devices``; the device side is the
separate, TensorFlow-free ``edgeport_runtime`` package. Errors come from :mod:`edgeport_runtime.errors`.
"""
__version__ = "0.1.0"
