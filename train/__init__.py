"""Train stage: datasets, the model zoo and CPU training. Public API re-exported here."""
from ..data.datasets import DATASETS, Dataset, load_dataset
from .trainer import train
from .zoo import MODELS, build_model, count_macs

__all__ = ["DATASETS", "Dataset", "load_dataset", "MODELS", "build_model", "count_macs", "train"]

