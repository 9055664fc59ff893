"""Adaptation recipes as data, and the one code path that trains and evaluates them.

A recipe (``bundles/em_mitochondria/configs/pipelines/<name>.json``) says which override configs
(``configs/da/*.json``) and overrides train it, which recipe's last checkpoint it starts from
(``start_from``), and which test-time configs its evaluation and deployment merge over
``inference.json`` (AdaBN, TENT, test-time augmentation). Following ``start_from`` gives the whole
pipeline, e.g. ``tent_balanced_consistency``: source-only -> balanced consistency with an AdaBN
teacher -> AdaBN + TENT at test time. ``scripts/adapt.py`` and ``scripts/benchmark_da.py`` both
read the recipes and run them through ``RecipeRun``, so a benchmark cell and a user's adaptation of
the same recipe, seed and budget train and evaluate identically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark_common import REPO, train_once

from custom.handlers import snapshot_checkpoint
from custom.utils import run_bundle_logged

MITO_BUNDLE = REPO / "bundles" / "em_mitochondria"
OVERLAYS = MITO_BUNDLE / "configs"  # where recipes' configs (da/*.json, tta.json) live, for every task's bundle
PIPELINES = OVERLAYS / "pipelines"
SCALE_MATCH_CONFIG = "da/scale_match.json"
SCALE_MATCH_FILE = "scale_match.json"  # written into a scale-matching evaluation's folder
THREE_D_CONFIG = "train_3d.json"

# Training budgets: pixel size (nm), square patch (px), batch, epochs x iterations, validation interval.
BUDGETS = {
    "cpu": {"pixel_size_nm": 10.0, "patch": 128, "batch_size": 4, "max_epochs": 20, "iterations_per_epoch": 20, "val_interval": 5},
    "gpu": {"pixel_size_nm": 5.0, "patch": 256, "batch_size": 8, "max_epochs": 60, "iterations_per_epoch": 50, "val_interval": 5},
    "quick": {
        "pixel_size_nm": 10.0, "patch": 128, "batch_size": 2, "max_epochs": 1, "iterations_per_epoch": 5, "val_interval": 1,
        "scale_match_factors": [0.5, 1.0, 2.0],  # three candidate target pixel sizes keep the smoke run short
    },
    "synthetic": {"pixel_size_nm": 5.0, "patch": 128, "batch_size": 4, "max_epochs": 6, "iterations_per_epoch": 25, "val_interval": 3},
    # 3D recipes (``train_3d.json``): patches of ``patch_z`` sections; as many training voxels as ``cpu``
    # (200 iterations of 1 x 8 x 128^2 = 400 of 4 x 128^2)
    "cpu_3d": {"pixel_size_nm": 10.0, "patch": 128, "patch_z": 8, "batch_size": 1, "max_epochs": 10, "iterations_per_epoch": 20, "val_interval": 5},
}
# Equal total training (#28): every unsupervised recipe that would train from scratch starts from the
# same seed's source-only model instead, so each adaptation row has source-only's 400 iterations and
# its own 400, like the rows that always started from source-only
BUDGETS["cpu_fair"] = {**BUDGETS["cpu"], "adapt_from": "source_only"}
# The longer budget (#28): 5 x the cpu iterations (2000 of 4 x 128^2 at 10 nm, the same field of view),
# equal total training as in cpu_fair
BUDGETS["cpu_long"] = {**BUDGETS["cpu_fair"], "max_epochs": 5 * BUDGETS["cpu"]["max_epochs"], "val_interval": 25}
# The CPU budget's training length on the synthetic pair: a label-free choice made at the length the
# benchmark trains (``synthetic`` trains 150 iterations, where source-only finds almost nothing)
BUDGETS["development"] = {**BUDGETS["cpu"], "pixel_size_nm": BUDGETS["synthetic"]["pixel_size_nm"]}

_KEYS = {"description", "kind", "train", "start_from", "test_time", "revision", "exploratory", "adapt_candidate"}
_TRAIN_KEYS = {"configs", "overrides", "epochs_factor"}
_KINDS = ("bound", "uda", "ssda")


class RecipeError(ValueError):
    """A recipe file that cannot be run as written."""


@dataclass(frozen=True)
class Recipe:
    """One recipe: training override configs and overrides (``train`` False: none, the ``pretrained``
    recipe's model is used as is), the recipe it starts from, and its test-time configs."""

    name: str
    kind: str  # "bound", "uda" or "ssda"
    description: str = ""
    configs: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)
    pretrained: str | None = None  # recipe whose last checkpoint initialises (or, without training, is) this one
    eval_configs: tuple[str, ...] = ()
    train: bool = True
    epochs_factor: int = 1  # trains this many times the budget's epochs
    exploratory: bool = False  # beyond the benchmark's main grid: run only when named, reported apart
    revision: int = 1  # raised when the method's code changes: cells and trained models of other revisions are not reused
    adapt_candidate: bool = False  # tried by ``adapt.py`` unless ``--candidates`` says otherwise

    def epochs(self, budget: dict) -> int:
        """Epochs this recipe trains for under ``budget``."""
        return budget["max_epochs"] * self.epochs_factor

    @property
    def uses_target_labels(self) -> bool:
        """Whether training reads target labels (oracle, fine-tuning): never an unsupervised candidate."""
        return self.kind != "uda" and self.name != "source_only"


def _recipe(path: Path) -> Recipe:
    """The recipe in ``path``, its keys checked."""
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise RecipeError(f"{path}: not valid JSON ({err}).") from None
    unknown = set(data) - _KEYS
    train = data.get("train")
    if isinstance(train, dict):
        unknown |= {f"train.{k}" for k in set(train) - _TRAIN_KEYS}
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; a recipe has {sorted(_KEYS)} and train has {sorted(_TRAIN_KEYS)}.")
    if data.get("kind") not in _KINDS:
        raise RecipeError(f"{path}: kind must be one of {_KINDS}, got {data.get('kind')!r}.")
    if train is None and not data.get("start_from"):
        raise RecipeError(f"{path}: a recipe without training must name the recipe whose model it uses (start_from).")
    train = train or {}
    return Recipe(
        name=path.stem,
        kind=data["kind"],
        description=data.get("description", ""),
        configs=tuple(train.get("configs", ())),
        overrides=dict(train.get("overrides", {})),
        pretrained=data.get("start_from"),
        eval_configs=tuple(data.get("test_time", ())),
        train=data.get("train") is not None,
        epochs_factor=int(train.get("epochs_factor", 1)),
        exploratory=bool(data.get("exploratory", False)),
        revision=int(data.get("revision", 1)),
        adapt_candidate=bool(data.get("adapt_candidate", False)),
    )


def load_recipes(folder: str | Path = PIPELINES) -> dict[str, Recipe]:
    """Every recipe in ``folder`` by name; refuses unknown keys, missing configs, unknown or circular ``start_from``."""
    recipes = {p.stem: _recipe(p) for p in sorted(Path(folder).glob("*.json"))}
    for recipe in recipes.values():
        missing = [c for c in (*recipe.configs, *recipe.eval_configs) if not (OVERLAYS / c).exists()]
        if missing:
            raise RecipeError(f"recipe {recipe.name}: configs {missing} not found under {OVERLAYS}.")
        seen = [recipe.name]
        step = recipe
        while step.pretrained:
            if step.pretrained not in recipes:
                raise RecipeError(f"recipe {step.name} starts from {step.pretrained!r}, which is no recipe in {folder}.")
            if step.pretrained in seen:
                raise RecipeError(f"recipes {' -> '.join([*seen, step.pretrained])} start from each other in a circle.")
            seen.append(step.pretrained)
            step = recipes[step.pretrained]
    return recipes


def chain(recipes: dict[str, Recipe], name: str) -> list[Recipe]:
    """The recipes ``name`` builds on, first the one that starts from scratch, ``name`` last."""
    steps = [recipes[name]]
    while steps[-1].pretrained:
        steps.append(recipes[steps[-1].pretrained])
    return steps[::-1]


def starts_from(recipe: Recipe, budget: dict) -> str | None:
    """The recipe whose last checkpoint ``recipe``'s training starts from under ``budget``: its own
    ``start_from``, or for an unsupervised recipe that trains from scratch the budget's ``adapt_from``."""
    if recipe.pretrained or recipe.kind != "uda" or not recipe.train:
        return recipe.pretrained
    return budget.get("adapt_from")


def upstream(recipes: dict[str, Recipe], recipe: Recipe, budget: dict) -> list[Recipe]:
    """The recipes whose models ``recipe``'s model builds on under ``budget``, nearest first: the one
    its training starts from (``starts_from``) or, for a recipe that does not train, the one whose
    model it uses; then theirs."""
    found, name = [], starts_from(recipe, budget)
    while name:
        found.append(recipes[name])
        name = starts_from(recipes[name], budget)
    return found


def is_three_d(recipes: dict[str, Recipe], name: str) -> bool:
    """Whether ``name``'s model is the 3D variant (``train_3d.json`` somewhere in its chain)."""
    return any(THREE_D_CONFIG in r.configs for r in chain(recipes, name))


def revisions(recipes: dict[str, Recipe], name: str) -> dict[str, int]:
    """The revisions, other than 1, of ``name`` and the recipes it builds on (what a cached result must match)."""
    return {r.name: r.revision for r in chain(recipes, name) if r.revision != 1}


@dataclass
class RecipeRun:
    """Trains (once) and evaluates recipes on one prepared dataset, seed and budget.

    ``root_of(name)`` is the bundle root of a recipe's training; ``bundle`` the task's bundle whose
    ``train.json``/``inference.json``/``evaluate.json`` the recipes' configs are merged over.
    """

    recipes: dict[str, Recipe]
    dataset_dir: Path
    budget: dict
    seed: int
    root_of: Callable[[str], Path]
    bundle: Path = MITO_BUNDLE
    env: dict | None = None
    progress_every_s: float | None = None
    unrecorded_epochs: int | None = None  # epochs a finished training without a recorded count had (old benchmark runs)
    given: dict[str, Path] = field(default_factory=dict)  # recipes whose model is given, never trained (adapt.py --source-model)

    @property
    def window(self) -> list[int]:
        """The training patch and evaluation window of the budget: (Y, X), or (Z, Y, X) for a 3D budget."""
        b = self.budget
        return ([b["patch_z"]] if "patch_z" in b else []) + [b["patch"], b["patch"]]

    def last_model(self, name: str) -> Path:
        """Where ``name``'s training writes its last checkpoint (it may not exist yet)."""
        return self.root_of(name) / "models" / "model_final.pt"

    def snapshot(self, recipe: Recipe) -> Path | None:
        """The checkpoint the training ``recipe`` uses (its own, or its ``pretrained``'s if it does not train)
        kept at 3/4 of its epochs (``custom.handlers.snapshot_epoch``), or None: a given model, a training
        too short to keep one or made before snapshots were kept. For ``checkpoint_agreement``; call after
        ``checkpoint(recipe)``."""
        trained = recipe if recipe.train else self.recipes[recipe.pretrained]
        if trained.name in self.given:
            return None
        return snapshot_checkpoint(self.root_of(trained.name) / "models", trained.epochs(self.budget))

    def checkpoint(self, recipe: Recipe) -> Path:
        """The last checkpoint of ``recipe`` (of the recipe it uses, if it does not train), training it
        and every recipe it starts from first unless finished (``train_once``)."""
        trained = recipe if recipe.train else self.recipes[recipe.pretrained]
        if trained.name in self.given:
            return self.given[trained.name]
        train_once(
            self.root_of(trained.name), trained.name, trained.epochs(self.budget), lambda: self._train(trained),
            unrecorded_epochs=self.unrecorded_epochs, revision=trained.revision,
        )
        return self.last_model(trained.name)

    def _train(self, recipe: Recipe) -> None:
        b, root = self.budget, self.root_of(recipe.name)
        overrides = {
            "pixel_size_nm": b["pixel_size_nm"],
            "seed": self.seed,
            "dataset_dir": str(self.dataset_dir),
            "patch_size": self.window,
            "batch_size": b["batch_size"],
            "max_epochs": recipe.epochs(b),
            "iterations_per_epoch": b["iterations_per_epoch"],
            "val_interval": b["val_interval"],
            "resume": True,  # an interrupted run continues from its newest training checkpoint
            **recipe.overrides,
        }
        start = starts_from(recipe, self.budget)
        if start:
            overrides["pretrained_checkpoint"] = str(self.checkpoint(self.recipes[start]))
        configs = [self.bundle / "configs" / "train.json", *(OVERLAYS / c for c in recipe.configs)]
        print(f"  train {recipe.name} (seed {self.seed}) into {root}", flush=True)
        run_bundle_logged(configs, root, root / "logs" / "train.log", env=self.env, progress_every_s=self.progress_every_s, **overrides)

    def evaluate(self, recipe: Recipe, checkpoint: Path, eval_dir: Path, log_name: str) -> dict:
        """Target-test metrics of ``checkpoint`` under ``recipe``'s test-time configs (``evaluate.json``), written to ``eval_dir``."""
        root = self.root_of(recipe.name)
        configs = [self.bundle / "configs" / "inference.json", self.bundle / "configs" / "evaluate.json", *(OVERLAYS / c for c in recipe.eval_configs)]
        extra = {}
        if SCALE_MATCH_CONFIG in recipe.eval_configs:
            extra = {"scale_match_file": str(eval_dir / SCALE_MATCH_FILE)}
            if "scale_match_factors" in self.budget:
                extra["scale_match_factors"] = self.budget["scale_match_factors"]
        run_bundle_logged(
            configs, root, root / "logs" / f"{log_name}.log", env=self.env, progress_every_s=self.progress_every_s,
            pixel_size_nm=self.budget["pixel_size_nm"], dataset_dir=str(self.dataset_dir), checkpoint=str(checkpoint),
            eval_dir=str(eval_dir), roi_size=self.window, **extra,
        )
        return json.loads((eval_dir / "metrics.json").read_text())["metrics"]
