"""Training numbers for the README: default model on the default dataset (and optional others), wall time.

Usage: .venv/bin/python benchmarks/bench_train.py [DATASET:MODEL ...]   (default digits:tiny_cnn)
Each run trains with the defaults into a temporary directory and prints accuracy, epochs, fit and wall seconds.
"""
import sys
import tempfile
import time
from pathlib import Path

from edgeport.train.trainer import TrainConfig, train


def main(pairs):
    print(f"{'dataset':<10} {'model':<13} {'test acc':>8} {'params':>8} {'epochs':>6} {'fit s':>7} {'wall s':>7}")
    for pair in pairs:
        dataset, model = pair.split(":")
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            rec = train(TrainConfig(dataset=dataset, model=model, out=str(Path(d) / "run"), quiet=True))
            wall = time.perf_counter() - t0
        print(f"{dataset:<10} {model:<13} {rec.get('test_accuracy', float('nan')):>8.4f} {rec['params']:>8,} "
              f"{rec['epochs_run']:>6} {rec['fit_seconds']:>7.1f} {wall:>7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits:tiny_cnn"])
