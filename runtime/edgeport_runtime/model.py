"""Loading a model and running it: float in, float out, any batch size, thread-safe."""
from __future__ import annotations

import logging
import numbers
import os
import shutil
import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import backends as _backends, fastio
from .bundle import SUFFIX_FORMAT, pick_artifact, resolve
from .errors import EdgeportError, InputError, ModelLoadError, ModelRunError, UsageError
from .inputs import _scale as scale_raw
from .manifest import Artifact, Manifest, TensorSpec, verify_artifact
from .multi_io import arrange_inputs, wrap_outputs
from .quant import dequantize, quantize
from .sections import Preprocessing

log = logging.getLogger("edgeport_runtime")

ArrayLike = Union[np.ndarray, Sequence]
MAX_CHUNK = 256  # samples per interpreter call: bounds memory for huge batches without slowing small ones


def _standardized(pre: Preprocessing) -> bool:
    return pre.feature_mean is not None or pre.feature_std is not None


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity, e.g. taskset or containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Model:
    """A loaded artifact. Create it with :func:`load`.

    ``predict`` takes float inputs exactly as the Keras model did and returns float outputs; int8 artifacts are
    quantized and dequantized with the scale and zero point the artifact records, using TFLite's rounding.
    Calls from many threads are serialised (interpreters are not thread-safe on their own).
    """

    def __init__(self, session, artifact: Optional[Artifact], manifest: Optional[Manifest], path: str,
                 num_threads: int, temp_dir: Optional[str] = None, directory: Optional[str] = None):
        self._session = session
        self._lock = threading.Lock()
        self.artifact = artifact
        self.manifest = manifest
        self.path = path
        self.num_threads = num_threads
        self.directory = directory  # the bundle directory (None for a bare file)
        self._temp_dir = temp_dir
        self.selection: Optional[Dict[str, Any]] = None  # the release's selected.json load() applied, if any
        # An extracted archive goes away with the Model: on close(), when it is garbage-collected, or at
        # interpreter exit, whichever comes first (weakref.finalize runs at most once).
        self._finalizer = weakref.finalize(self, shutil.rmtree, temp_dir, True) if temp_dir else None
        # The manifest's specs carry the calibrated scale/zero point; the interpreter's are the same numbers for
        # .tflite and absent for ONNX QDQ models whose I/O stays float, so prefer the interpreter's dtypes.
        self.inputs: List[TensorSpec] = session.inputs
        self.outputs: List[TensorSpec] = session.outputs
        pre = manifest.preprocessing if manifest is not None else Preprocessing()
        # None: every call takes the checked path. Raw pixels are scaled as the manifest says (as edgeport-run does
        # for images) unless the model takes standardized features, which predict_pixels refuses
        self._fast = fastio.plan(self.inputs, self.outputs, MAX_CHUNK,
                                 None if _standardized(pre) else (lambda raw: scale_raw(raw, pre)))

    @property
    def info(self) -> Dict[str, Any]:
        """Inputs, outputs, backend, threads, artifact name/recipe, and labels when the bundle has them."""
        d = {"path": self.path, "backend": self._session.backend, "threads": self.num_threads,
             "inputs": [vars(s) for s in self.inputs], "outputs": [vars(s) for s in self.outputs],
             "dynamic_batch": self._session.dynamic_batch}
        if self.artifact is not None:
            d.update(artifact=self.artifact.name, recipe=self.artifact.recipe, format=self.artifact.format,
                     quantization=self.artifact.quantization, sha256=self.artifact.sha256)
        if self.manifest is not None:
            d.update(task=self.manifest.task, labels=self.manifest.labels,
                     preprocessing=self.manifest.preprocessing.to_dict())
        if self.selection is not None:
            d["selection"] = self.selection
        return d

    @property
    def labels(self) -> List[str]:
        """Class labels from the manifest ([] for bare files)."""
        return list(self.manifest.labels) if self.manifest else []

    def _check(self, xs: List[np.ndarray], raw: bool, allow_nonfinite: bool) -> List[np.ndarray]:
        if len(xs) != len(self.inputs):
            raise InputError(f"the model has {len(self.inputs)} input(s) "
                             f"({', '.join(s.name for s in self.inputs)}), got {len(xs)} array(s).")
        out = []
        n = None
        for x, spec in zip(xs, self.inputs):
            x = np.asarray(x)
            want = ["N" if d is None else d for d in spec.shape]
            if raw:
                if x.dtype.name != spec.dtype:
                    raise InputError(f"input {spec.name!r}: predict_raw expects dtype {spec.dtype}, got {x.dtype}. "
                                     "Use predict() for float inputs.")
            elif x.dtype.kind not in "fiu":
                raise InputError(f"input {spec.name!r}: expected real numbers (float), got dtype {x.dtype}.")
            elif spec.quantized and x.dtype.name == spec.dtype:
                # int8 data for an int8 input is almost surely already quantized: predict() would quantize it
                # a second time and return confident wrong classes
                raise InputError(f"input {spec.name!r}: got {x.dtype} data for a quantized {spec.dtype} input; "
                                 "predict() takes floats and quantizes them itself. Pass already-quantized "
                                 "arrays to predict_raw(), or convert to float32 first.")
            if x.ndim != len(spec.shape):
                hint = " Add a batch dimension, e.g. x[None]." if x.ndim == len(spec.shape) - 1 else ""
                raise InputError(f"input {spec.name!r}: expected rank {len(spec.shape)} shape {want}, got rank "
                                 f"{x.ndim} shape {list(x.shape)}.{hint}")
            bad = [i for i, (d, g) in enumerate(zip(spec.shape, x.shape)) if i > 0 and d is not None and d != g]
            if bad:
                raise InputError(f"input {spec.name!r}: expected shape {want}, got {list(x.shape)} "
                                 f"(dimension {bad[0]} differs).")
            if len(x) == 0:
                raise InputError(f"input {spec.name!r}: empty batch; expected shape {want} with N >= 1.")
            if n is not None and len(x) != n:
                raise InputError(f"inputs have different batch sizes ({n} and {len(x)}).")
            n = len(x)
            if not raw:
                x = x.astype(np.float32, copy=False)
                if not allow_nonfinite and not np.all(np.isfinite(x)):
                    bad_n = int((~np.isfinite(x)).sum())
                    raise InputError(f"input {spec.name!r}: {bad_n} NaN/Inf value(s); an int8 model would turn them "
                                     "into silent garbage. Clean the input, or pass allow_nonfinite=True.")
                if spec.quantized:
                    if allow_nonfinite:  # integers have no NaN: NaN -> 0.0; +-Inf clamp to the ends of the range
                        x = np.where(np.isnan(x), np.float32(0), x)
                    x = quantize(x, spec.scale, spec.zero_point, spec.dtype)
                elif spec.dtype != "float32":
                    x = x.astype(spec.dtype)
            out.append(np.ascontiguousarray(x))
        return out

    def _run(self, xs: List[np.ndarray]) -> List[np.ndarray]:
        n = len(xs[0])
        results: List[List[np.ndarray]] = []
        with self._lock:
            session = self._open_session()
            try:
                for i in range(0, n, MAX_CHUNK):
                    results.append(session.run([x[i:i + MAX_CHUNK] for x in xs]))
            except EdgeportError:
                raise
            except Exception as e:  # XNNPACK RuntimeError, onnxruntime Fail, ...: a corrupt-but-loadable graph
                raise self._run_error(e) from None
        if len(results) == 1:
            return results[0]
        return [np.concatenate([r[j] for r in results]) for j in range(len(self.outputs))]

    def predict_raw(self, x: Union[ArrayLike, List[ArrayLike], Dict[str, ArrayLike]]):
        """Run with inputs already in the model's own dtypes (e.g. int8); return the raw outputs
        (one array, or a list / a dict by output name for several, as for :meth:`predict`)."""
        xs = self._check(arrange_inputs(x, self.inputs), raw=True, allow_nonfinite=True)
        return wrap_outputs(self._run(xs), self.outputs, isinstance(x, dict))

    def predict(self, x: Union[ArrayLike, List[ArrayLike], Dict[str, ArrayLike]], allow_nonfinite: bool = False
                ) -> Union[np.ndarray, List[np.ndarray], Dict[str, np.ndarray]]:
        """Float inputs (batch first, any batch size) -> float32 outputs, as the Keras model would give.

        Models with several inputs take a list (in :attr:`inputs` order, the Keras model's) or a dict keyed by
        input name; several outputs come back as a list, or as a dict keyed by output name when the inputs were
        a dict. One input and one output: an array in, an array out.

        Args:
            x: one array, a list (one per input) or a dict {input name: array}, each with a batch dimension.
            allow_nonfinite: accept NaN/Inf inputs instead of raising.

        Raises:
            InputError: wrong rank, shape or dtype (the message shows expected vs got), NaN/Inf, empty batch.
        """
        fast = self._fast
        if fast is not None and fast.accepts(x):
            y = self._predict_fast(x, fast)
            if y is not None:
                return y
        xs = self._check(arrange_inputs(x, self.inputs), raw=False, allow_nonfinite=allow_nonfinite)
        raw = self._run(xs)
        out = [dequantize(r, s.scale, s.zero_point) if s.quantized else r.astype(np.float32, copy=False)
               for r, s in zip(raw, self.outputs)]
        return wrap_outputs(out, self.outputs, isinstance(x, dict))

    def _predict_fast(self, x: np.ndarray, fast: "fastio.FastPath") -> Optional[np.ndarray]:
        """The checked path's arithmetic in fewer passes (see fastio); None: take the checked path."""
        with self._lock:  # the fast path's buffers are shared: quantize under the lock too
            q = fast.prepare(x)
            if q is None:
                return None
            raw = self._invoke_locked(q)
        return fast.finish(raw)

    def _invoke_locked(self, q: np.ndarray) -> np.ndarray:
        """One interpreter call with one input and output (call with the lock held)."""
        session = self._open_session()
        try:
            return session.run([q])[0]
        except EdgeportError:
            raise
        except Exception as e:  # see _run
            raise self._run_error(e) from None

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Raw 8-bit pixels (uint8, batch first, shaped like the model input) -> float32 outputs.

        The same as ``predict(pixels * input_scale + input_offset)`` with the manifest's preprocessing (what
        ``edgeport-run predict --input image.png`` feeds the model), bit for bit. For a quantized model the scaling
        and the quantization are one table lookup per value, computed at load, or a single integer addition when
        they amount to an offset (e.g. input_scale 1/255 and an input scale of 1/255).

        Raises:
            InputError: not uint8, or the shape errors of :meth:`predict`.
            UsageError: the bundle's model takes standardized features (feature_mean/feature_std), not pixels.
        """
        fast = self._fast
        if fast is not None and fast.accepts_pixels(pixels):
            with self._lock:
                raw = self._invoke_locked(fast.prepare_pixels(pixels))
            return fast.finish(raw)
        x = np.asarray(pixels)
        if x.dtype != np.uint8:
            raise InputError(f"predict_pixels takes uint8 pixel values, got dtype {x.dtype}; use predict() for "
                             "model-ready floats.")
        pre = self.manifest.preprocessing if self.manifest is not None else Preprocessing()
        if _standardized(pre):
            raise UsageError(f"{self.path}: this model takes standardized features (the manifest has feature_mean/"
                             "feature_std), not pixels; use predict().")
        # input_scale/input_offset are finite numbers: the manifest's Preprocessing section is checked at load
        return self.predict(scale_raw(x, pre))

    def _open_session(self):
        """The session, or a clear error once the model is closed (call with the lock held)."""
        session = self._session
        if session is None:
            raise UsageError(f"{self.path}: this model was closed; load it again with edgeport_runtime.load().")
        return session

    def _run_error(self, e: Exception) -> ModelRunError:
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        return ModelRunError(f"{self.path}: the interpreter failed to run the model ({type(e).__name__}: {msg}); "
                             "the file is corrupt or uses an operation this backend cannot run.")

    def close(self) -> None:
        """Release the interpreter and any extracted archive. Further predict() calls raise UsageError."""
        with self._lock:
            self._session = None
        if self._finalizer is not None:
            self._finalizer()
        self._temp_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load(path: Union[str, os.PathLike], backend: Optional[str] = None, num_threads: Optional[int] = None,
         artifact: Optional[str] = None, max_extract_bytes: Optional[int] = None, use_selection: bool = True
         ) -> Model:
    """Load a bundle directory, a bundle archive (.tar.gz/.zip) or a bare .tflite/.onnx file.

    A deployed release (``~/edgeport/current``, or its ``bundle/``) carries ``selected.json``, the configuration
    the device measured fastest among those that passed their gates (:mod:`edgeport_runtime.select`): its
    artifact, backend and threads fill in whatever is not given here (``model.selection`` says which file).

    Args:
        path: what to load.
        backend: ``litert``, ``tflite-runtime``, ``onnxruntime`` or ``numpy``; default: the best installed for the
            artifact (numpy, the pure-Python TFLite backend, only when nothing compiled is installed).
        num_threads: interpreter threads; default: the cores this process may use.
        artifact: which artifact of a bundle to run (see ``edgeport-run info``); default: the bundle's default,
            else the first one an installed backend can run.
        max_extract_bytes: most bytes an archive may inflate to (default: $EDGEPORT_MAX_EXTRACT_BYTES, else
            20x the archive's size, at least 1 MiB and at most 2 GiB).
        use_selection: False ignores a release's selected.json.

    Returns:
        A :class:`Model`; ``model.info["backend"]`` says which backend was chosen.

    Raises:
        ModelLoadError: missing, corrupt or truncated files, unsafe archives; IntegrityError: sha256 mismatch,
        unknown schema, a manifest path outside the bundle;
        BackendUnavailableError: no installed interpreter for the artifact (names the pip extra); UsageError:
        unknown backend or artifact name.
    """
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral)
                                    or num_threads < 1):
        raise UsageError(f"num_threads must be >= 1 (an integer), got {num_threads!r}.")
    res = resolve(path, max_extract_bytes)
    try:
        selection = None
        if use_selection and res.manifest is not None and res.temp_dir is None:
            # deferred: select.py measures with load(), so a top-level import would be circular
            from .select import apply_selection

            artifact, backend, num_threads, selection = apply_selection(res.directory, artifact, backend,
                                                                        num_threads)
        threads = int(num_threads or default_threads())
        if res.manifest is None:
            fmt = SUFFIX_FORMAT[res.bare_file.suffix.lower()]
            file_path, art = res.bare_file, None
        else:
            def runnable(a: Artifact) -> bool:
                if backend is None:
                    return bool(_backends.runnable_backends(a.format, a.quantization))
                return backend in _backends.BACKENDS and _backends.BACKENDS[backend].runs(a.format, a.quantization)

            art = pick_artifact(res.manifest, artifact, runnable)
            fmt = art.format
            file_path = verify_artifact(res.directory, art)  # hashes checked before any byte is interpreted
        chosen = _backends.choose_backend(fmt, backend, None if art is None else art.quantization)
        session = _backends.open_session(chosen, str(file_path), threads)
        log.info("loaded %s with backend %s (%d threads)", file_path, chosen.name, threads)
        try:
            model = Model(session, art, res.manifest, str(file_path), threads, res.temp_dir,
                          None if res.manifest is None else str(res.directory))
        except Exception as e:  # tensor types/shapes no edgeport artifact has (a crafted or corrupt file)
            msg = " ".join(str(e).split())[:200]
            raise ModelLoadError(f"{file_path}: unsupported model inputs/outputs ({type(e).__name__}: {msg}); "
                                 "expected a model written by `edgeport convert`.") from None
        if art is not None:
            _check_specs_agree(art, model)
        model.selection = selection.summary() if selection is not None else None
        return model
    except BaseException:
        if res.temp_dir:
            shutil.rmtree(res.temp_dir, ignore_errors=True)
        raise


def _check_specs_agree(art: Artifact, model: Model) -> None:
    """The manifest and the file must describe the same I/O; a mismatch means a mixed-up bundle."""
    from .errors import IntegrityError

    for kind, want, got in (("input", art.inputs, model.inputs), ("output", art.outputs, model.outputs)):
        if len(want) != len(got):
            raise IntegrityError(f"artifact {art.name}: manifest lists {len(want)} {kind}(s), the file has {len(got)}.")
        for w, g in zip(want, got):
            if w.dtype != g.dtype or w.quantized != g.quantized or (w.quantized and (abs(w.scale - g.scale) > 1e-12 * max(1, abs(w.scale))
                                                       or w.zero_point != g.zero_point)):
                raise IntegrityError(f"artifact {art.name}: {kind} {g.name!r} is {g.dtype} scale={g.scale} "
                                     f"zp={g.zero_point} in the file but {w.dtype} scale={w.scale} "
                                     f"zp={w.zero_point} in the manifest; the bundle is inconsistent.")
