"""Standardization on user CSV data, for the README: scikit-learn's wine as a CSV (label first, unscaled features),
mlp trained with defaults, without and with feature standardization, over a few seeds.

Usage: .venv/bin/python benchmarks/bench_wine.py [SEED ...]   (default seeds 0 1 2)
"""
import sys
import tempfile
from pathlib import Path

from sklearn.datasets import load_wine

from edgeport.train.trainer import TrainConfig, train


def write_wine_csv(path: Path) -> Path:
    """Wine with the class label in the first column and the 13 raw features after it."""
    d = load_wine()
    cols = ["class"] + [n.replace("/", "_") for n in d.feature_names]
    lines = [",".join(cols)] + [",".join([str(int(t))] + [repr(float(v)) for v in x])
                                for x, t in zip(d.data, d.target)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(seeds):
    print(f"{'standardize':<12} {'seed':>4} {'test acc':>8} {'epochs':>6}")
    with tempfile.TemporaryDirectory() as d:
        csv = write_wine_csv(Path(d) / "wine.csv")
        for standardize in (False, True):
            accs = []
            for seed in seeds:
                rec = train(TrainConfig(dataset=str(csv), label_column="class", model="mlp", seed=seed,
                                        standardize=standardize, cache=False, quiet=True,
                                        out=str(Path(d) / f"run-{standardize}-{seed}")))
                accs.append(rec["test_accuracy"])
                print(f"{str(standardize):<12} {seed:>4} {rec['test_accuracy']:>8.4f} {rec['epochs_run']:>6}")
            print(f"{str(standardize):<12} mean {sum(accs) / len(accs):>8.4f}")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2])
