"""Importing and configuring TensorFlow for CPU work: quiet logs, hidden GPUs, thread counts.

TensorFlow must be configured before its runtime starts, so every stage gets TF through :func:`import_tf`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from importlib import metadata
from typing import Any, Dict, List, Optional

_VERBOSE = False


def set_verbose(verbose: bool) -> None:
    """Choose whether TensorFlow's C++ and Python log noise is shown (``--verbose``)."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        # Hides most C++ logs (not the oneDNN banner); must be set before tensorflow is imported.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


@contextlib.contextmanager
def silenced(fds=(2,)):
    """Send file descriptors ``fds`` to /dev/null unless verbose.

    C++ code prints around Python's logging: the oneDNN banner ignores TF_CPP_MIN_LOG_LEVEL and the
    TFLite converter prints its quantization settings to stdout.
    """
    if _VERBOSE:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, keep in saved.items():
            os.dup2(keep, fd)
            os.close(keep)
        os.close(devnull)


def import_tf():
    """Import tensorflow (and keras) quietly unless verbose; return the tensorflow module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    set_verbose(_VERBOSE)
    with silenced():
        import tensorflow as tf
        importlib.import_module("keras")  # load Keras while stderr is silenced too

        # The first op creation prints the oneDNN banner; trigger it while stderr is silenced.
        tf.constant(0)
    tf.get_logger().setLevel("ERROR" if not _VERBOSE else "INFO")
    return tf


def configure_cpu(allow_gpu: bool = False, threads: Optional[int] = None) -> Dict[str, Any]:
    """Hide GPUs (unless ``allow_gpu``) and set TF thread pools; return what was applied.

    Must run before TensorFlow executes anything that fixes its devices; later calls that cannot change the
    setting keep the first one and say so in the returned dict.
    """
    tf = import_tf()
    applied: Dict[str, Any] = {"allow_gpu": allow_gpu}
    try:
        if not allow_gpu:
            tf.config.set_visible_devices([], "GPU")
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError as e:  # runtime already initialised in this process
        applied["note"] = f"device/thread settings kept from earlier in this process ({e})"
    applied["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    applied["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads() or "auto"
    return applied


def devices_used() -> List[str]:
    """Names of the logical devices TensorFlow will place ops on."""
    tf = import_tf()
    return [d.name for d in tf.config.list_logical_devices()]


def package_versions(names=("tensorflow-cpu", "keras", "numpy", "ai-edge-litert", "onnx", "onnxruntime",
                            "tf2onnx", "tf-keras", "tensorflow-model-optimization", "scikit-learn",
                            "edgeport", "edgeport-runtime")) -> Dict[str, str]:
    """Installed versions of the packages that shape results, for train.json and manifests."""
    out = {"python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out
