"""Public EM (and nuclei) datasets: one module each with its URL, checksums and ``get_*_paths`` / ``load_*``."""

from . import drosophila_vnc, fafb_mito
from .drosophila_vnc import get_drosophila_vnc_paths, load_drosophila_vnc, load_drosophila_vnc_stack2
from .dsb2018_nuclei import dsb2018_ids, get_dsb2018_folder, load_dsb2018_nuclei, split_ids
from .duke_dme import get_duke_dme_paths, load_duke_dme
from .epfl_hippocampus import get_epfl_hippocampus_paths, load_epfl_hippocampus
from .fafb_mito import get_fafb_mito_paths, load_fafb_mito
from .isbi2012 import get_isbi2012_paths, load_isbi2012


def mito_pair_spacing_nm() -> dict[str, list[float]]:
    """(z, y, x) pixel sizes in nm that the VNC and FAFB loaders give: what the prepared
    mitochondria pair, and every model and result made from it, depend on."""
    return {"vnc": list(drosophila_vnc.SPACING_NM), "fafb": list(fafb_mito.SPACING_NM)}


__all__ = [
    "dsb2018_ids",
    "get_dsb2018_folder",
    "load_dsb2018_nuclei",
    "split_ids",
    "get_drosophila_vnc_paths",
    "get_duke_dme_paths",
    "get_epfl_hippocampus_paths",
    "get_fafb_mito_paths",
    "get_isbi2012_paths",
    "load_drosophila_vnc",
    "load_drosophila_vnc_stack2",
    "load_duke_dme",
    "load_epfl_hippocampus",
    "load_fafb_mito",
    "load_isbi2012",
    "mito_pair_spacing_nm",
]
