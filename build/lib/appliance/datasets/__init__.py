"""Datasets: NNC dataset CSVs, creation from folders and the MVTec AD layout, sample datasets."""

from appliance.datasets.create import CreateError, ImageFormat, create_image_dataset, create_sample, import_mvtec
from appliance.datasets.nnc import DatasetError, NNCDataset, Problem, check_dataset, write_csv

__all__ = [
    "CreateError",
    "DatasetError",
    "ImageFormat",
    "NNCDataset",
    "Problem",
    "check_dataset",
    "create_image_dataset",
    "create_sample",
    "import_mvtec",
    "write_csv",
]
