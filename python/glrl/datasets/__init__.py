"""Datasets: the registry (names, folders, checksummed file lists), verification and download."""
from __future__ import annotations

from glrl.datasets.registry import (
    DATASETS,
    STANDARD_DATASETS,
    TEST_DATASETS,
    Dataset,
    checksums,
    datasets_named,
    get_dataset,
)
from glrl.datasets.download import ArchiveSource, default_source, download_datasets
from glrl.datasets.verify import Verification, require_datasets, verify_dataset

__all__ = [
    "DATASETS", "STANDARD_DATASETS", "TEST_DATASETS", "Dataset", "checksums", "datasets_named", "get_dataset",
    "Verification", "require_datasets", "verify_dataset",
    "ArchiveSource", "default_source", "download_datasets",
]
