"""Data shared by the stages: dataset loading (built-in and user files), preprocessing statistics and the
stratified split. Depends on core and the runtime only; train and convert both read data through it."""
from .datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
