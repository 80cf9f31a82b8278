"""edgeport-runtime: run edgeport bundles on ARM and x86 CPUs with LiteRT, tflite-runtime or onnxruntime.

Never imports TensorFlow or Keras. Only numpy is required; the interpreter comes from an extra.
"""
__version__ = "0.1.0"
