"""The numpy backend's parts: flatbuffer reader, window geometry, float / int8 / dynamic-range kernels."""
