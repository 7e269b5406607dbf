"""Loaders for the papers' public datasets (their release layouts), the leakage audit, group-aware splits and
tf.data pipelines. Each loader returns a list of :class:`Record` and raises :class:`DatasetError` naming the file
and what was expected when a dataset is malformed."""

from .brain_mri import brain_mri_records
from .busi import busi_records, load_mask
from .chest_xray import chest4_records, kermany_patient_id, kermany_records
from .core import DatasetError, Record, read_image
from .covid_radiography import covid_radiography_records
from .medmnist import load_medmnist
from .mias import load_rois, mias_records, random_patches, sliding_windows
from .oct2017 import oct_records
from .splits import check_no_leak, dedup_indices, holdout_split, kfold_split, merge_groups, validation_part
from .tb_chest import tb_records

__all__ = [
    "DatasetError",
    "Record",
    "brain_mri_records",
    "busi_records",
    "check_no_leak",
    "chest4_records",
    "covid_radiography_records",
    "dedup_indices",
    "holdout_split",
    "validation_part",
    "kermany_patient_id",
    "kermany_records",
    "kfold_split",
    "load_mask",
    "load_medmnist",
    "load_rois",
    "merge_groups",
    "mias_records",
    "oct_records",
    "random_patches",
    "read_image",
    "sliding_windows",
    "tb_records",
]
