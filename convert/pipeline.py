"""`edgeport convert`: calibration data, one child process per recipe, artifact descriptions, the manifest.

The parent process never imports TensorFlow. It reads the run's data with numpy, runs each recipe in a fresh
child process, describes every artifact with edgeport-runtime (the code path devices use) and writes the bundle
to a staged directory that replaces ``out`` in one rename when everything succeeded.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import gzip
import multiprocessing as mp
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgeport_runtime import load as rt_load
from edgeport_runtime.errors import EdgeportError, InputError, ModelLoadError, unknown_name
from edgeport_runtime.manifest import Artifact, Manifest, sha256_file, write_manifest
from edgeport_runtime.sections import Calibration, Check, DataRecord, Preprocessing, Source

from ..core.fsutil import check_out_dir, remove_dead_temp_dirs, staged_dir, write_marker
from ..core.tfenv import package_versions
from ..data.datasets import skipped_summary
from ..data.run import RUN_FILES, TEST_FILE, Data, calibration_samples, is_run_dir
from ..data.unlabeled import InputOptions
from .modelshape import model_outputs
from .multiio import predict_packed
from .progress import ConvertProgress
from .sampledata import data_record, load_convert_data, shape_hint, split_fine_tuning
from . import worker
from .bridge import BridgeError
from .exporters import ConversionError
from .finetune import small_data_warning
from .recipes import Recipe, RecipeJob, RecipePlan, plan_recipes

WORK_PREFIX = "edgeport-convert-"  # temp work dirs (hold a copy of the training data; always removed)
CHECK_SAMPLES = 8  # held-out samples stored in the bundle for smoke checks on a device


# failures that mean "this recipe does not apply to this model" (skipped under an implicit "all")
_NOT_APPLICABLE = (BridgeError, ConversionError)


@dataclass
class ConvertConfig:
    """Everything `edgeport convert` accepts (TOML keys under [convert] are these names)."""

    model: str
    out: str
    plan: RecipePlan = field(default_factory=plan_recipes)  # the recipes, their options and gates
    calibration: int = 300
    data: Optional[str] = None
    seed: int = 0
    jobs: int = 1
    unsafe: bool = False
    force: bool = False
    verbose: bool = False
    eval: Optional[str] = None  # labelled set parity measures accuracy on (then all of --data calibrates)
    inputs: Optional[InputOptions] = None  # preprocessing of raw --data files (scale, offset, image size...)
    task: Optional[str] = None  # classification | regression | autoencoder (default: the run's, else classification)
    label_output: Optional[str] = None  # several outputs: the one labels belong to (default: the first)


@contextlib.contextmanager
def _pool(jobs: int) -> Iterator[cf.ProcessPoolExecutor]:
    """A process pool whose children die with this process and are killed, not awaited, on any error.

    ``ProcessPoolExecutor.__exit__`` waits for running recipes, so a Ctrl-C or SIGTERM would leave converters
    writing on for minutes; the initializer also asks the kernel to SIGKILL each child if we die (even SIGKILL).
    """
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1,
                                  initializer=worker.die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.join(10)
        raise
    pool.shutdown(wait=True)


def _describe(path: Path, spec, bundle_dir: Path, name: str, extra: Dict[str, Any], check_x: np.ndarray
              ) -> Artifact:
    """Describe an exported file through edgeport-runtime and store its outputs on the check inputs."""
    with rt_load(path, num_threads=1) as m:
        check_out = predict_packed(m, check_x)
    np.save(bundle_dir / f"check_{name}.npy", check_out)
    data = path.read_bytes()
    return Artifact(name=name, path=path.name, format=spec.format, recipe=spec.recipe.value,
                    sha256=sha256_file(path), bytes=len(data), gzip_bytes=len(gzip.compress(data, 9, mtime=0)),
                    inputs=m.inputs, outputs=m.outputs, quantization=spec.quantization,
                    sparsity=extra.pop("sparsity", None), check_outputs=f"check_{name}.npy", extra=extra)


def _inputs(model: Path, data: Optional[str]) -> List[Path]:
    """Paths `convert` reads (model, data, run files); --out may not be, hold or lie inside any of them.

    A run directory counts by its files, so a bundle may live inside the run (RUN/bundle) but never replace it.
    """
    paths = [model]
    run = model.parent if data is None else Path(data)
    if is_run_dir(run):
        paths += [run / f for f in RUN_FILES if (run / f).exists()]
    elif data is not None and run.exists():
        paths.append(run)
    return paths


def _data_record(cfg: ConvertConfig, data: Data) -> DataRecord:
    """--data / --eval as given (paths made absolute, or a built-in name), the seed, the preprocessing options,
    whether there are labels and how the held-out split was made."""
    if data.run_dir is not None:
        return DataRecord(str(data.run_dir.resolve()), cfg.seed, f"the training run's {TEST_FILE}")
    return DataRecord.from_dict(data_record(cfg.data, data, cfg.seed, cfg.inputs, cfg.eval), "source.data")


def convert(cfg: ConvertConfig, progress=print) -> Manifest:
    """Convert ``cfg.model`` with every recipe in ``cfg.plan`` into the bundle directory ``cfg.out``.

    Returns:
        The written :class:`Manifest`.

    Raises:
        UsageError / InputError / ModelLoadError: bad options, data or model (nothing is written).
        EdgeportError: one or more recipes failed; the message lists each failure and what still works.
    """
    model, inputs = _resolve_inputs(cfg)
    data, calib, check_x = _load_data(cfg, model, progress)
    jobs, no_labels = split_fine_tuning(cfg.plan.recipes, data, cfg.plan.explicit)
    for name, why in no_labels.items():
        progress(f"note: skipped {name}: it {why}")
    cfg = replace(cfg, plan=replace(cfg.plan, jobs=tuple(j for j in cfg.plan.jobs if j.recipe in jobs)))
    remove_dead_temp_dirs(WORK_PREFIX)  # data copies left by a convert that was SIGKILLed
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    try:
        setup = worker.ChildSetup(str(model.resolve()), unsafe=cfg.unsafe, verbose=cfg.verbose,
                                  threads=max(1, (os.cpu_count() or 1) // cfg.jobs))
        info = _load_source(setup, work, data, calib, check_x, shape_hint(cfg.data))
        for line in fine_tune_warnings(cfg.plan.jobs, data):
            progress(f"warning: {line}")
        with staged_dir(cfg.out, cfg.force, "convert", inputs) as tmp:
            results, failures = _run_jobs(cfg, setup, work, tmp, data.task, progress)
            skipped = {name: f"it {why}" for name, why in no_labels.items()}
            skipped.update(_settle_failures(cfg, results, failures, progress))
            manifest = _write_bundle(cfg, tmp, model, data, calib, check_x, info, results, skipped)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _resolve_inputs(cfg: ConvertConfig):
    """The source model's path and every path convert reads; refuses a missing model or an unusable --out."""
    model = Path(cfg.model)
    if not model.exists():
        raise ModelLoadError(f"{model}: no such file or directory; expected a .keras, a .h5 or a SavedModel dir.")
    inputs = _inputs(model, cfg.data)
    check_out_dir(cfg.out, cfg.force, inputs)
    return model, inputs


def _load_data(cfg: ConvertConfig, model: Path, progress):
    """The run's (or dataset's) splits, the calibration samples (random, stratified when labelled) and the
    bundle's check inputs."""
    data = load_convert_data(model, cfg.data, cfg.seed, cfg.inputs, cfg.eval, cfg.task)
    outputs = model_outputs(model)
    if cfg.label_output is not None and outputs is not None and cfg.label_output not in outputs:
        raise unknown_name("--label-output", cfg.label_output, outputs)
    skipped = skipped_summary(data.notes)
    if skipped:  # on screen: a folder of mostly unreadable files should not pass silently
        progress(skipped)
    calib = calibration_samples(data.x_train, data.y_train, cfg.calibration, cfg.seed)
    check_x = data.x_test[:CHECK_SAMPLES].astype(np.float32)
    return data, calib, check_x


def _load_source(setup: worker.ChildSetup, work: Path, data: Data, calib: np.ndarray, check_x: np.ndarray,
                 hint: str = "") -> Dict[str, Any]:
    """Stage the data for the children in ``work``; load the model in a child (kind, shapes, check outputs).

    Fails fast, before any recipe runs, on a model that does not load or takes inputs of another shape.
    """
    write_marker(work, "convert")
    np.savez(work / "data.npz", calibration=calib, x_train=data.x_train,
             **({"y_train": data.y_train} if data.y_train is not None else {}),
             **({"x_val": data.x_val, "y_val": data.y_val} if data.x_val is not None else {}))
    np.save(work / "check_inputs.npy", check_x)
    with _pool(1) as pool:
        info = pool.submit(worker.probe, setup, str(work / "check_inputs.npy")).result()
    if tuple(info["input_shape"]) != tuple(calib.shape[1:]):
        raise InputError(f"calibration data has samples of shape {tuple(calib.shape[1:])} but the model takes "
                         f"{tuple(info['input_shape'])} ({data.source}); pass --data with matching data."
                         + hint)
    return info


_FINE_TUNE_KIND = {Recipe.TFLITE_INT8_QAT: "qat", Recipe.TFLITE_INT8_PRUNED: "prune"}


def fine_tune_warnings(jobs: Sequence[RecipeJob], data: Data) -> List[str]:
    """Warnings, before anything runs, for fine-tuning recipes whose labelled data is too small (with numbers)."""
    n_val = len(data.x_val) if data.x_val is not None else None
    out = []
    for job in jobs:
        if job.recipe in _FINE_TUNE_KIND:
            w = small_data_warning(job.name, _FINE_TUNE_KIND[job.recipe], len(data.x_train), n_val, job.options)
            if w:
                out.append(w)
    return out


def _run_jobs(cfg: ConvertConfig, setup: worker.ChildSetup, work: Path, tmp: Path, task: str, progress):
    """Run every job of the plan in the pool, writing into ``tmp``; report each as it finishes.

    Returns ``(results, failures)``: extra metadata per converted recipe, and (message, exception) per failure.
    """
    futures = {}
    results: Dict[Recipe, Dict[str, Any]] = {}
    failures: Dict[Recipe, Tuple[str, BaseException]] = {}
    with _pool(cfg.jobs) as pool:
        for job in cfg.plan.jobs:
            futures[job.recipe] = pool.submit(worker.run_recipe, setup, job, str(work / "data.npz"), task,
                                              cfg.seed, str(tmp / job.filename))
        shown = ConvertProgress([r.value for r in futures], emit=progress, live=None if progress is print else False)
        try:
            for fut in cf.as_completed(futures.values()):  # report in the order they finish
                r = next(k for k, v in futures.items() if v is fut)
                try:
                    results[r] = fut.result()
                    shown.done(r.value)
                    for line in results[r].get("warnings", []):  # e.g. QAT ending below plain int8
                        progress(f"warning: {r.value}: {line}")
                except EdgeportError as e:
                    msg = str(e)
                    if msg.startswith(f"{r.value}: "):  # exporters name their recipe; the list does too
                        msg = msg[len(r.value) + 2:]
                    failures[r] = (msg, e)
                    if not cfg.plan.explicit and isinstance(e, _NOT_APPLICABLE):
                        shown.skipped(r.value)
                    else:
                        shown.failed(r.value, msg)
                except cf.process.BrokenProcessPool as e:
                    failures[r] = ("the converter process crashed (killed or out of memory)", e)
                    shown.failed(r.value, failures[r][0])
        finally:
            shown.close()
    return results, failures


def _settle_failures(cfg: ConvertConfig, results, failures, progress) -> Dict[str, str]:
    """Recipes skipped as not applicable (recipe -> why); raises if any other failure remains.

    The default "all" means all that apply: a recipe this model cannot take is skipped, said loudly and recorded
    in the manifest; crashes and bad input still fail the run, and so does any failure of a named recipe.
    """
    skipped = {}
    if failures and not cfg.plan.explicit and results:
        for r in list(failures):
            if isinstance(failures[r][1], _NOT_APPLICABLE):
                skipped[r.value] = failures.pop(r)[0]
                progress(f"warning: skipped {r.value}: {skipped[r.value]}")
    if failures:
        ok = [r.value for r in results]
        lines = "; ".join(f"{r.value}: {msg}" for r, (msg, _) in failures.items())
        raise EdgeportError(f"{len(failures)} recipe(s) failed, nothing was written. {lines} "
                            f"Converted fine: {', '.join(ok) or 'none'}; re-run with --recipes "
                            "listing only those, or fix the model.")
    return skipped


def _write_bundle(cfg: ConvertConfig, tmp: Path, model: Path, data: Data, calib: np.ndarray, check_x: np.ndarray,
                  info: Dict[str, Any], results, skipped: Dict[str, str]) -> Manifest:
    """Check inputs and outputs, one described artifact per converted recipe, and the manifest, into ``tmp``."""
    done = [job for job in cfg.plan.jobs if job.recipe in results]
    np.save(tmp / "check_inputs.npy", check_x)
    np.save(tmp / "check_keras.npy", info["check_outputs"])
    artifacts = [_describe(tmp / job.filename, job.spec, tmp, job.name, results[job.recipe], check_x)
                 for job in done]
    default = next((a.name for a in artifacts if a.recipe == Recipe.TFLITE_INT8.value), artifacts[0].name)
    manifest = Manifest(
        artifacts=artifacts, task=data.task, labels=data.labels,
        # the run's preprocessing, type-checked here as a device will read it
        preprocessing=Preprocessing.from_dict(data.preprocessing, f"{data.source}: preprocessing"),
        # absolute paths: parity and bench find the Keras original from any working directory
        source=Source(path=str(model.resolve()), sha256=sha256_file(model) if model.is_file() else None,
                      kind=info["kind"], input_shape=info["input_shape"],
                      run_dir=str(data.run_dir.resolve()) if data.run_dir else None,
                      # what parity needs to re-create the held-out split without the user repeating --data
                      data=_data_record(cfg, data),
                      # several inputs/outputs: every tensor in the Keras order, and the labelled output
                      inputs=info["inputs"] or None, outputs=info["outputs"] or None,
                      label_output=cfg.label_output if info["inputs"] else None),
        calibration=Calibration(source=f"training split of {data.source}", count=int(len(calib)), seed=cfg.seed,
                                stratified=data.labelled, extra={"random": True}),
        toolchain=package_versions(), check=Check(inputs="check_inputs.npy", keras_outputs="check_keras.npy"),
        default_artifact=default, skipped=skipped,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_manifest(tmp, manifest)
    return manifest
