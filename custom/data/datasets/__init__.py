"""Public EM datasets: one module each with its URL, checksums and ``get_*_paths`` / ``load_*``."""

from .drosophila_vnc import get_drosophila_vnc_paths, load_drosophila_vnc, load_drosophila_vnc_stack2
from .epfl_hippocampus import get_epfl_hippocampus_paths, load_epfl_hippocampus
from .fafb_mito import get_fafb_mito_paths, load_fafb_mito

__all__ = [
    "get_drosophila_vnc_paths",
    "get_epfl_hippocampus_paths",
    "get_fafb_mito_paths",
    "load_drosophila_vnc",
    "load_drosophila_vnc_stack2",
    "load_epfl_hippocampus",
    "load_fafb_mito",
]
