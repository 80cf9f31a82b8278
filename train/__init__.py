"""Train stage: datasets, the model zoo and CPU training. Public API re-exported here."""
from ..data.datasets import DATASETS, Dataset, load_dataset
from .zoo import MODELS, build_model, count_macs

__all__ = ["DATASETS", "Dataset", "load_dataset", "MODELS", "build_model", "count_macs", "train"]


def train(config):
    """Train per ``config`` (a :class:`edgeport.train.trainer.TrainConfig`); see trainer.train."""
    from .trainer import train as _train

    return _train(config)
