"""Data: raw files -> canonical sequences -> leakage-free splits.

`load_dataset({"name": "ml-100k"})` reads a built-in or config-described dataset
(docs/data_formats.md); `make_split` splits it.
"""
from recjax.data.canonical import InteractionData, Sequences
from recjax.data.readers import DataFormatError, MissingDataError
from recjax.data.registry import (BUILTIN_SPECS, FORMATS, FilterReport, drop_duplicates,
                                  filter_interactions, list_datasets, load_dataset,
                                  load_dataset_with_report, resolve_spec)
from recjax.data.splits import Split, leave_one_out, make_split, temporal
from recjax.data.synthetic import make_synthetic

__all__ = [
    "BUILTIN_SPECS", "DataFormatError", "FORMATS", "FilterReport", "InteractionData",
    "MissingDataError", "Sequences", "Split", "drop_duplicates", "filter_interactions",
    "leave_one_out", "list_datasets", "load_dataset", "load_dataset_with_report", "make_split",
    "make_synthetic", "resolve_spec", "temporal",
]
