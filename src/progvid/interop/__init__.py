"""Interoperability with other VideoMAE implementations (transformers, official checkpoints)."""

from .hf import export_hf, from_transformers, read_transformers_folder, to_transformers
from .official import load_official_state_dict, read_official

__all__ = ["export_hf", "from_transformers", "load_official_state_dict", "read_official",
           "read_transformers_folder", "to_transformers"]
