"""Data layer: canonical types, dataset loaders, sample construction, Parquet I/O."""

from .io import load_dataset, save_dataset
from .types import DOMAINS, SPLITS, Catalog, Interactions, Sample, SplitDataset

__all__ = ["DOMAINS", "SPLITS", "Catalog", "Interactions", "Sample", "SplitDataset", "load_dataset", "save_dataset"]
