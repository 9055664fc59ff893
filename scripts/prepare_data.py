"""Fetch public EM datasets and convert them into the prepared layout the bundles read.

    python scripts/prepare_data.py download --root data/raw
    python scripts/prepare_data.py from_dir ../shared/data data/prepared
    python scripts/prepare_data.py membranes ../shared/data data/prepared_membranes
    python scripts/prepare_data.py nuclei ../shared/data data/prepared_nuclei
    python scripts/prepare_data.py mito_instances ../shared/data data/prepared_mito_instances
    python scripts/prepare_data.py pair --source src.tif --source-labels src_mask.tif --target tgt.tif --out-dir data/my_pair
    python scripts/prepare_data.py reimage --image vnc/raw --labels vnc/membranes --spacing 50,4.6,4.6 --out-dir data/vnc_reimaged --pixel-size-factor 1.5 --gamma 1.4

``from_dir`` writes ``volumes/<domain>/`` (whole volumes and x-splits with spacing) and one folder
per adaptation direction (``vnc_to_fafb/``, ``fafb_to_vnc/``) holding ``datalist.json``; pass that
folder as the bundle's ``--dataset_dir``. ``membranes`` does the same for the membrane bundle:
VNC stack 1 membranes as the labelled source, the unlabelled VNC stack 2 (or, with
``--target isbi2012``, the ISBI 2012 training volume, labelled) as the target. ``nuclei`` and
``mito_instances`` write 2D instance datasets (``custom.data.instance_data``) for the
``nuclei_instances`` bundle. ``pair`` prepares any two volumes of your own (a labelled source and a
target, labelled or not) the same way. ``reimage`` writes a real volume as another microscope might
image it (``custom.data.reimage``): a development target with real content and known labels.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import fire
import numpy as np

from custom.data import Reimaging, em_instance_samples, write_direction_datalist, write_domain, write_instance_dataset, write_volume, zscore
from custom.data import reimage as reimage_volume
from custom.data.datasets import (
    dsb2018_ids,
    get_dsb2018_folder,
    get_duke_dme_paths,
    get_drosophila_vnc_paths,
    get_epfl_hippocampus_paths,
    get_fafb_mito_paths,
    get_isbi2012_paths,
    load_drosophila_vnc,
    load_drosophila_vnc_stack2,
    load_dsb2018_nuclei,
    load_fafb_mito,
    load_isbi2012,
    mito_pair_spacing_nm,
    split_ids,
)
from custom.data.readers import EMDataError, check_spacing, read_label, read_volume
from custom.utils.io import atomic_path, check_distinct_from_inputs

DOWNLOADERS = {
    "drosophila_vnc": get_drosophila_vnc_paths,
    "fafb_mito": get_fafb_mito_paths,
    "epfl_hippocampus": get_epfl_hippocampus_paths,
    "isbi2012": get_isbi2012_paths,
    "dsb2018_nuclei": lambda root, download: {"stage1_train": get_dsb2018_folder(root, download)},
    "duke_dme": lambda root, download: {p.stem: p for p in get_duke_dme_paths(root, download)},
}
# Sections of each EM volume for the mitochondria-instance task: (training, validation, test).
MITO_INSTANCE_SECTIONS = {"vnc": (range(0, 14), range(14, 16), range(16, 20)), "fafb": (range(0, 5), range(5, 6), range(6, 8))}
MARKER = "prepared.json"


def download(root: str = "data/raw", datasets: str | tuple = ("drosophila_vnc", "fafb_mito")) -> dict:
    """Download datasets (checksummed) into ``root/<name>``; names: see ``DOWNLOADERS``."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    unknown = sorted(set(names) - set(DOWNLOADERS))
    if unknown:
        raise EMDataError(f"unknown dataset(s) {unknown}; choose from {sorted(DOWNLOADERS)}.")
    return {name: {k: str(v) for k, v in DOWNLOADERS[name](root, download=True).items()} for name in names}


def from_dir(data_dir: str = "../shared/data", out_dir: str = "data/prepared", force: bool = False) -> str:
    """Convert a local copy of the VNC and FAFB data into the prepared layout and datalists.

    Idempotent: a complete earlier result is kept and reported; an incomplete or foreign folder is
    refused unless ``force``, which rebuilds it.
    """
    out = Path(out_dir)
    spacing_nm = mito_pair_spacing_nm()
    directions = ["vnc_to_fafb", "fafb_to_vnc"]
    with _building(out, data_dir, force, directions, spacing_nm) as tmp:
        if tmp is None:
            return str(out)
        volumes = tmp / "volumes"
        image, label, spacing = load_drosophila_vnc(data_dir)
        write_domain(volumes / "vnc", image, label, spacing)
        stack2, spacing2 = load_drosophila_vnc_stack2(data_dir)
        write_domain(volumes / "vnc_stack2", stack2, None, spacing2)
        image, label, spacing = load_fafb_mito(data_dir)
        write_domain(volumes / "fafb", image, label, spacing)
        stack2_path = volumes / "vnc_stack2" / "vnc_stack2.tif"
        write_direction_datalist(tmp / "vnc_to_fafb", volumes / "vnc", volumes / "fafb", "vnc_to_fafb")
        write_direction_datalist(tmp / "fafb_to_vnc", volumes / "fafb", volumes / "vnc", "fafb_to_vnc", [stack2_path])
    return _report(out, directions)


def membranes(
    data_dir: str = "../shared/data",
    out_dir: str = "data/prepared_membranes",
    target: str = "vnc_stack2",
    target_dir: str | None = None,
    target_spacing: str | None = None,
    force: bool = False,
) -> str:
    """Prepare the membrane task: VNC stack 1 membranes (source) adapted to ``target``.

    ``target`` is "vnc_stack2" (unlabelled, from ``data_dir``) or "isbi2012" (labelled; read from
    ``data_dir/isbi2012``, see ``custom.data.datasets.isbi2012``), whose target-test region then
    gives target scores. ``target_dir`` takes an unlabelled target volume of your own instead (a
    folder of sections or a volume file; ``--target-spacing z,y,x`` nm when it has no spacing).
    Writes the direction folder ``vnc_membranes_to_<target>/``.
    """
    if target_dir is None and target not in ("vnc_stack2", "isbi2012"):
        raise EMDataError(f"unknown membrane target {target!r}; choose 'vnc_stack2' or 'isbi2012', or pass --target-dir.")
    name = re.sub(r"[^A-Za-z0-9_]+", "_", Path(target_dir).name.split(".")[0]) if target_dir else target
    out = Path(out_dir)
    direction = f"vnc_membranes_to_{name}"
    with _building(out, [data_dir, target_dir] if target_dir else data_dir, force, [direction], options={"target_spacing": target_spacing} if target_dir else None) as tmp:
        if tmp is None:
            return str(out)
        volumes = tmp / "volumes"
        image, label, spacing = load_drosophila_vnc(data_dir, target="membranes")
        write_domain(volumes / "vnc_membranes", image, label, spacing)
        if target_dir:
            image, _, spacing = _read_domain(target_dir, None, target_spacing, "target")
            write_domain(volumes / "target", image, None, spacing)
        elif target == "isbi2012":
            image, label, spacing = load_isbi2012(data_dir)
            write_domain(volumes / "isbi2012", image, label, spacing)
        else:
            stack2, spacing = load_drosophila_vnc_stack2(data_dir)
            write_domain(volumes / "vnc_stack2", stack2, None, spacing)
        write_direction_datalist(tmp / direction, volumes / "vnc_membranes", volumes / ("target" if target_dir else target), direction)
    return _report(out, [direction])


def _spacing(text: str | tuple | None, option: str) -> tuple[float, float, float] | None:
    """A ``z,y,x`` option (nm) as three positive numbers, None when not given."""
    if text is None:
        return None
    values = text.split(",") if isinstance(text, str) else list(text)
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3:
        raise EMDataError(f"--{option} must be three positive numbers z,y,x in nm (e.g. 50,4.6,4.6), got {text!r}.")
    return check_spacing(spacing, f"--{option}")  # the readers' rule: finite and positive


def _read_domain(image: str, labels: str | None, spacing: str | tuple | None, role: str, threshold: float | None = None):
    """(image, binary labels or None, spacing) of one domain; a spacing neither in the file nor given is an error."""
    given = _spacing(spacing, f"{role}-spacing")
    volume, file_spacing = read_volume(image, spacing=given)
    if file_spacing is None:
        raise EMDataError(f"{image}: the {role} volume has no spacing metadata; pass --{role}-spacing z,y,x (nm).")
    mask = read_label(labels, threshold=threshold, spacing=file_spacing)[0] if labels else None
    return volume, mask, file_spacing


def pair(
    source: str | None,
    target: str,
    out_dir: str,
    source_labels: str | None = None,
    target_labels: str | None = None,
    source_spacing: str | None = None,
    target_spacing: str | None = None,
    source_label_threshold: float | None = None,
    target_label_threshold: float | None = None,
    force: bool = False,
) -> str:
    """Prepare your own pair: a labelled ``source`` volume and a ``target`` volume from another microscope.

    Any format the readers take (TIFF stack, folder of sections, NIfTI, MHA/NRRD, zarr). Labels are
    binarised (any non-zero value is foreground). ``--*-spacing z,y,x`` (nm) gives a pixel size the
    file lacks (or replaces a wrong one). ``--*-label-threshold t`` makes foreground = value > t, for
    anti-aliased masks (e.g. 127). ``target_labels`` are optional and only ever give the target
    test region's scores; an unlabelled target gets no label entries, so evaluation refuses to run
    on it. Writes ``out_dir/source_to_target/datalist.json`` (the bundle's ``--dataset_dir``).
    ``source`` None (from Python: ``adapt.py --source-model``) prepares the target alone.
    """
    if source is not None and not source_labels:
        raise EMDataError("--source-labels is required: the source volume's labels are what the model learns from.")
    inputs = [p for p in (source, source_labels, target, target_labels) if p]
    out = Path(out_dir)
    direction = "source_to_target"
    options = {"spacing": [source_spacing, target_spacing], "label_threshold": [source_label_threshold, target_label_threshold]}
    with _building(out, inputs, force, [direction], options=options) as tmp:
        if tmp is None:
            return str(out)
        volumes = tmp / "volumes"
        if source is not None:
            image, label, spacing = _read_domain(source, source_labels, source_spacing, "source", source_label_threshold)
            write_domain(volumes / "source", image, label, spacing)
        target_image, target_label, target_spacing_nm = _read_domain(target, target_labels, target_spacing, "target", target_label_threshold)
        write_domain(volumes / "target", target_image, target_label, target_spacing_nm)
        write_direction_datalist(tmp / direction, volumes / "source" if source is not None else None, volumes / "target", direction)
    return _report(out, [direction])


def reimage(
    image: str,
    out_dir: str,
    labels: str | None = None,
    spacing: str | None = None,
    label_threshold: float | None = None,
    pixel_size_factor: float = 1.0,
    blur_nm: float = 0.0,
    contrast: float = 1.0,
    gamma: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
    force: bool = False,
) -> str:
    """Write ``out_dir/image.tif`` (and ``label.tif``) with spacing: ``image`` re-imaged by
    ``custom.data.Reimaging`` (pixel size x ``pixel_size_factor``, blur, contrast, gamma, noise)."""
    change = Reimaging(pixel_size_factor, blur_nm, contrast, gamma, noise)
    out = Path(out_dir)
    options = {"spacing": spacing, "label_threshold": label_threshold, "seed": seed, "change": vars(change)}
    with _building(out, [p for p in (image, labels) if p], force, ["."], options=options) as tmp:
        if tmp is None:
            return str(out)
        volume, mask, file_spacing = _read_domain(image, labels, spacing, "image", label_threshold)
        new_image, new_mask, new_spacing = reimage_volume(volume, mask, file_spacing, change, seed)
        write_volume(tmp / "image.tif", new_image, new_spacing)
        if new_mask is not None:
            write_volume(tmp / "label.tif", new_mask.astype(np.uint8), new_spacing)
        print(f"re-imaged {image} into {out}: {new_image.shape} voxels of {[round(s, 2) for s in new_spacing]} nm")
    return str(out)


def nuclei(data_dir: str = "../shared/data", out_dir: str = "data/prepared_nuclei", force: bool = False) -> str:
    """DSB 2018 nuclei as a 2D instance dataset: 80/20 train/test split by id (seed 0), 10 % of the
    training ids held out for validation (seed 1)."""
    out = Path(out_dir)
    with _building(out, data_dir, force, ["."]) as tmp:
        if tmp is None:
            return str(out)
        train_ids, test_ids = split_ids(dsb2018_ids(data_dir), 0.8, seed=0)
        train_ids, val_ids = split_ids(train_ids, 0.9, seed=1)

        def samples(ids: list[str]):
            for image_id in ids:
                image, labels = load_dsb2018_nuclei(data_dir, image_id)
                yield image_id, zscore(image), labels

        write_instance_dataset(tmp, {"training": samples(train_ids), "validation": samples(val_ids), "test": samples(test_ids)}, "dsb2018_nuclei")
    return _report(out, ["."])


def mito_instances(data_dir: str = "../shared/data", out_dir: str = "data/prepared_mito_instances", scale: float = 0.5, force: bool = False) -> str:
    """VNC and FAFB mitochondria as 2D instance datasets (``out/vnc``, ``out/fafb``): one sample per
    section, connected components of the mask as instances, sections split as in
    ``MITO_INSTANCE_SECTIONS``; ``scale`` downsamples in-plane (0.5: ~9 nm VNC, ~16 nm FAFB pixels)."""
    out = Path(out_dir)
    with _building(out, data_dir, force, list(MITO_INSTANCE_SECTIONS)) as tmp:
        if tmp is None:
            return str(out)
        for name, loader in (("vnc", load_drosophila_vnc), ("fafb", load_fafb_mito)):
            image, label, _ = loader(data_dir)
            sections = em_instance_samples(image, label, name, scale)
            splits = MITO_INSTANCE_SECTIONS[name]
            write_instance_dataset(tmp / name, {k: [sections[z] for z in r] for k, r in zip(("training", "validation", "test"), splits)}, f"{name}_mito_instances")
    return _report(out, list(MITO_INSTANCE_SECTIONS))


@contextlib.contextmanager
def _building(
    out: Path, data_dir: str | list[str], force: bool, directions: list[str], spacing_nm: dict | None = None, options: dict | None = None
) -> Iterator[Path | None]:
    """Yield a temporary folder beside ``out`` to build the prepared dataset in, or None to keep ``out``.

    Refuses, before anything is written, an ``out`` that is, holds or lies inside ``data_dir`` and an
    ``out`` that is a file. A complete earlier result (its ``prepared.json`` marker) is kept unless
    ``force``; a result prepared with other pixel sizes (``spacing_nm``), from other input files or
    with other ``options`` (recorded beside them), or an incomplete or foreign folder is refused unless ``force``. The new result, marker included, replaces ``out`` only when
    complete: a failed (or forced) build never leaves a partial folder or costs the old one.
    """
    inputs = [data_dir] if isinstance(data_dir, str) else list(data_dir)
    check_distinct_from_inputs(out, inputs)
    if out.exists() and not out.is_dir():
        raise EMDataError(f"{out}: is a file, not a folder; choose another out_dir for the prepared dataset.")
    marker = out / MARKER
    record = {"data_dir": [str(Path(d).resolve()) for d in inputs] if len(inputs) > 1 else str(Path(inputs[0]).resolve()), "directions": directions}
    if options is not None:
        record["options"] = json.loads(json.dumps(options))  # as recorded: tuples become lists
    if marker.exists() and not force:
        previous = json.loads(marker.read_text())
        changed = [k for k in ("data_dir", "options") if k in record and previous.get(k, record[k]) != record[k]]
        if changed:
            raise FileExistsError(f"{out} was prepared from other inputs or options ({', '.join(f'{k}: {previous[k]}' for k in changed)}); pass --force to rebuild it, or choose another out_dir.")
        recorded = previous.get("spacing_nm")
        if spacing_nm is None or recorded == spacing_nm:
            print(f"{out} is already prepared ({MARKER} present); pass --force to rebuild it.")
            yield None
            return
        raise FileExistsError(f"{out} was prepared with pixel sizes {recorded} (nm, z/y/x per domain), the loaders now give {spacing_nm}; pass --force to rebuild it.")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not a complete prepared dataset; pass --force to overwrite it.")
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        yield tmp
        if spacing_nm is not None:
            record["spacing_nm"] = spacing_nm
        (tmp / MARKER).write_text(json.dumps(record))


def _report(out: Path, directions: list[str]) -> str:
    print(f"prepared {out}: use --dataset_dir " + " or ".join(str(out / d) for d in directions))
    return str(out)


def main() -> None:
    try:
        commands = {"download": download, "from_dir": from_dir, "from-dir": from_dir, "membranes": membranes, "nuclei": nuclei, "mito_instances": mito_instances, "pair": pair, "reimage": reimage}
        fire.Fire(commands, serialize=lambda _: None)  # each command prints what it did; its return value is for Python callers
    except (EMDataError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
