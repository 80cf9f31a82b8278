"""Convert stage: quantize, prune and export Keras models to TFLite and ONNX bundles."""
