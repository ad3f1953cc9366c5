"""Data layer: canonical tables, readers, sequences, leave-one-out split, long-tail tagging."""

from llm_i2i.data.longtail import long_tail_mask
from llm_i2i.data.dataset import Dataset
from llm_i2i.data.readers import load_dataset, read_canonical, save_dataset
from llm_i2i.data.schema import DataError
from llm_i2i.data.sequences import Sequences, sequences_from_interactions
from llm_i2i.data.split import LeaveOneOut, leave_one_out

__all__ = [
    "DataError",
    "Dataset",
    "LeaveOneOut",
    "Sequences",
    "leave_one_out",
    "load_dataset",
    "long_tail_mask",
    "read_canonical",
    "save_dataset",
    "sequences_from_interactions",
]
