"""The whole configuration of a run, validated, with every default written out.

A run's ``config.yaml`` is the full resolved configuration, saved next to its results, so that any
result can be traced to exactly what produced it and rerun with ``phenossl run config.yaml``.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from phenossl.augment.specs import Composition, load_composition
from phenossl.errors import ConfigError
from phenossl.methods.params import MethodParams
from phenossl.methods.registry import method_spec
from phenossl.models.registry import encoder_spec

#: what a run's embedding is: a self-supervised encoder (ssl), CellProfiler measurements of each cell
#: (cellprofiler, no training) or the chosen encoder untrained (random-init, the baseline training must beat)
REPRESENTATIONS = ("ssl", "cellprofiler", "random-init")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Section):
    """Where the images come from and what their channels are."""

    kind: Literal["plate", "crops"] = "plate"
    paths: list[Path] = Field(default_factory=list, description="files or folders (plate) / one stack (crops)")
    channel_names: list[str] | dict[str, str] | None = Field(
        None, description="names in channel order, or a map from file-name channel tag (w1) to name"
    )
    nuclear_channel: str | int = Field(0, description="name or index of the nuclear stain")
    channel_axis: int | Literal["auto"] = Field("auto", description="for single multichannel files: its index, "
                                                "or auto (detect; null in older configurations)")
    filename_pattern: str = Field("auto", description="auto, bbbc021, imagexpress or a regex")
    plate: str | None = Field(None, description="plate name when it is not in the folder name")
    metadata: Path | None = Field(None, description="CSV joining plate/well/site to treatments")
    metadata_join: str | list[str] = "auto"
    crops_csv: Path | None = Field(None, description="per-cell table for pre-cropped cells")

    @field_validator("channel_axis", mode="before")
    @classmethod
    def _null_axis_is_auto(cls, value: Any) -> Any:
        return "auto" if value is None else value


class SegmentConfig(_Section):
    """Nuclei segmentation."""

    backend: Literal["classical", "cellpose"] = "classical"
    diameter: float | None = Field(None, gt=0, description="expected nucleus diameter in px; None = estimate")
    model: str = Field("cpsam_v2", description="cellpose model name (must be in the local cellpose models folder)")
    weights: Path | None = Field(None, description="a local cellpose weights file (overrides model)")
    device: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict, description="extra backend options")


class TileConfig(_Section):
    """Single-cell tiles."""

    size: int = Field(196, ge=16, le=1024)
    border: Literal["skip", "pad"] = "skip"
    percentiles: tuple[float, float] = (0.5, 99.5)

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {value}")
        return value


class TrainConfig(_Section):
    """Self-supervised training: method, encoder, the two compositions and their loss weighting."""

    method: str = Field("mocov2", description="a registered training method (phenossl.methods.registry): an SSL "
                        "method, or gandl: a GAN whose discriminator is the encoder (GAN-DL)")
    encoder: str = Field("resnet18", description="a registered encoder (phenossl.models.registry)")
    stem: Literal["imagenet", "small"] = Field(
        "imagenet", description="small: ResNet18 with a 3x3 stride-1 first convolution and no max-pool, for "
        "small cells (16x the compute); imagenet: torchvision's"
    )
    composition_a: Composition = Field("morphology", validate_default=True, description="preset name, YAML file or inline")
    composition_b: Composition = Field("context", validate_default=True)
    weight_a: float = Field(1.0, ge=0.0, le=1.0, description="total loss = w * L_A + (1 - w) * L_B")
    cassle: bool = Field(False, description="condition the projector on augmentation parameters (CASSLE)")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=2)
    resolution: int = Field(32, ge=16, le=512, description="training resolution in px (the views: a centre crop "
                            "of about three nucleus diameters, at about 10 px per diameter)")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    device: str = "auto"
    amp: bool = Field(True, description="mixed precision on CUDA")
    channels_last: bool = True
    cache_on_device: Literal["auto", "always", "never"] = "auto"
    method_params: MethodParams = Field(default_factory=MethodParams)
    label_column: str | None = Field(
        None, description="a numeric column of the cell table (e.g. concentration) for the methods that train on "
        "a label (yaware); only cells whose value is known are trained on, every cell is embedded"
    )
    encoder_weights: Path | None = Field(None, description="local ImageNet weights to start from")
    init_from: Path | None = Field(None, description="a previous run's checkpoint to start from")
    log_every: int = Field(0, ge=0, description="steps between progress reports; 0 = auto")
    collapse_threshold: float = Field(1e-3, ge=0)

    @field_validator("composition_a", "composition_b", mode="before")
    @classmethod
    def _load_composition(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            return load_composition(value)
        return value

    @field_validator("method", "encoder")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        """A name of the method / encoder registry (the message lists the registered ones)."""
        try:
            (method_spec if info.field_name == "method" else encoder_spec)(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _weights_need_their_stem(self) -> TrainConfig:
        if self.stem == "small" and self.encoder_weights is not None:
            raise ValueError("ImageNet weights fit the imagenet stem only (their first convolution is 7x7): "
                             "use stem: imagenet, or train the small stem from scratch")
        return self

    @model_validator(mode="after")
    def _cassle_needs_an_ssl_projector(self) -> TrainConfig:
        if self.cassle and not method_spec(self.method).conditionable:
            raise ValueError(f"cassle conditions an SSL projector; {self.method} has none (use another method or "
                             "cassle: false)")
        return self

    def compositions(self) -> dict[str, Composition]:
        """The compositions that take part in the loss (a weight of 0 drops a branch entirely)."""
        branches = {}
        if self.weight_a > 0:
            branches["a"] = self.composition_a
        if self.weight_a < 1:
            branches["b"] = self.composition_b
        return branches

    def branch_weights(self) -> dict[str, float]:
        return {"a": self.weight_a, "b": 1.0 - self.weight_a}

    def main_composition(self) -> Composition:
        """The composition whose deterministic view (e.g. its centre crop) embeds the cells: the heavier one."""
        return self.composition_a if self.weight_a >= 0.5 else self.composition_b


class EmbedConfig(_Section):
    """Embedding every cell after training."""

    batch_size: int = Field(256, ge=1)
    view: Literal["auto", "full"] = Field(
        "auto", description="auto: the deterministic geometry (centre crop) of the main composition"
    )
    average: str = Field(
        "none", description="average each cell's features over orientations: none, d4 (the 8 rotations by "
        "multiples of 90 degrees and their mirrors) or rot-N (N evenly spaced angles)"
    )

    @field_validator("average")
    @classmethod
    def _known_average(cls, value: str) -> str:
        from phenossl.augment.pipeline import orientations

        try:
            orientations(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("embed.average ")) from None
        return value


class MeasureConfig(_Section):
    """CellProfiler measurements (``representation: cellprofiler``)."""

    workers: int = Field(0, ge=0, description="processes measuring cells; 0 = every core but one")


class UmapConfig(_Section):
    n_neighbors: int = Field(15, ge=2)
    min_dist: float = Field(0.1, ge=0)


class GmmConfig(_Section):
    """The Gaussian mixture's parameters (``cluster.algorithm: gmm``)."""

    covariance_type: Literal["diag", "spherical", "full", "tied"] = Field(
        "diag", description="diag: one variance per dimension and component (full needs many cells per component)"
    )


class HdbscanConfig(_Section):
    """HDBSCAN's parameters (``cluster.algorithm: hdbscan``; it finds the number of clusters itself)."""

    min_cluster_size: int = Field(25, ge=2, description="the smallest group of cells called a cluster")
    min_samples: int | None = Field(None, ge=1, description="how conservative: more = more cells called noise; "
                                    "null = min_cluster_size")
    max_fit: int = Field(10_000, ge=4, description="fit on at most this many seeded cells (HDBSCAN is O(n^2)-ish); "
                         "the others join the cluster of their nearest fitted cell")


class ClusterConfig(_Section):
    """The clustering algorithm on the embeddings, UMAP, and what to compare the clusters with."""

    algorithm: str = Field("kmeans", description="kmeans, gmm (a Gaussian mixture with k components) or hdbscan "
                           "(finds the number of clusters itself; cells in no cluster are noise, -1)")
    k: int = Field(4, ge=2, description="clusters (kmeans) / components (gmm); not used by hdbscan")
    gmm: GmmConfig = Field(default_factory=GmmConfig)
    hdbscan: HdbscanConfig = Field(default_factory=HdbscanConfig)
    n_nearest: int = Field(8, ge=1, description="cells shown per cluster (nearest the centroid)")
    preprocessing: Literal["cosine", "standardize", "l2", "none"] = Field(
        "cosine", description="cosine: z-score each dimension, then compare cells by direction (see "
        "phenossl.cluster.space); standardize: z-score; l2: unit-length rows; none: as embedded"
    )
    controls: str | None = Field(
        None, description="the negative-control cells, e.g. 'compound=DMSO': each plate is standardised to its own "
        "controls before clustering (pycytominer's normalize), removing plate-to-plate staining shifts"
    )
    control_batch: str | None = Field(
        "plate", description="column whose groups (plates) are normalised to their own controls; none = all cells"
    )
    umap: UmapConfig = Field(default_factory=UmapConfig)
    label_columns: list[str] | None = Field(None, description="columns to report AMI against")

    @field_validator("algorithm")
    @classmethod
    def _registered_algorithm(cls, value: str) -> str:
        from phenossl.cluster.algorithms import algorithm_spec

        try:
            algorithm_spec(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    def algorithm_params(self) -> dict[str, Any]:
        """The chosen algorithm's parameters, as ``phenossl.cluster.algorithms.cluster_with`` takes them."""
        if self.algorithm == "gmm":
            return self.gmm.model_dump()
        if self.algorithm == "hdbscan":
            return self.hdbscan.model_dump()
        return {}

    @field_validator("controls")
    @classmethod
    def _controls_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            from phenossl.perturbation import parse_selector

            try:
                parse_selector(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class OutputConfig(_Section):
    dir: Path | None = Field(None, description="run folder; default runs/<name>")
    overwrite: bool = False


class RunConfig(_Section):
    """Everything one run needs, from images to exported clusters."""

    name: str = "run"
    seed: int = 0
    representation: Literal["ssl", "cellprofiler", "random-init"] = Field(
        "ssl", description="ssl: train a self-supervised encoder; cellprofiler: measure each cell (cp_measure), "
        "no training; random-init: the chosen encoder untrained (a baseline)"
    )
    input: InputConfig = Field(default_factory=InputConfig)
    segmentation: SegmentConfig = Field(default_factory=SegmentConfig)
    tiles: TileConfig = Field(default_factory=TileConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _labelled_methods_need_their_column(self) -> RunConfig:
        if (self.representation == "ssl" and method_spec(self.train.method).needs_label
                and self.train.label_column is None):
            raise ValueError(f"train.method {self.train.method} trains on a label: set train.label_column to a "
                             "numeric column of the cell table (e.g. concentration, from the metadata)")
        return self

    def run_dir(self) -> Path:
        return self.output.dir if self.output.dir is not None else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _format_errors(error: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key{_suggestion(item['loc'], model)}")
        else:
            lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def _suggestion(loc: tuple, model: type[BaseModel]) -> str:
    """' (did you mean ...?)' for a misspelt key, found by walking the model along ``loc``."""
    fields = model.model_fields
    for part in loc[:-1]:
        if part not in fields:
            return ""
        annotation = fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        fields = annotation.model_fields
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(fields)})"


def setting_differences(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, value before, value after) for every setting that differs between two configurations as
    dicts (``RunConfig.to_dict()``), in configuration order; a setting one side lacks is None there."""

    def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict) and value:
            return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    flat_before, flat_after = flatten(before), flatten(after)
    return [(key, flat_before.get(key), flat_after.get(key)) for key in dict.fromkeys([*flat_before, *flat_after])
            if flat_before.get(key) != flat_after.get(key)]


def config_from_dict(data: dict[str, Any], model: type[BaseModel] = RunConfig) -> Any:
    """Validate a plain dict as ``model``; errors become one readable ConfigError."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration:\n{_format_errors(exc, model)}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run configuration. Relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (input, train, ...), not {type(data).__name__}")
    config = config_from_dict(data or {})
    config = resolve_paths(config, path.parent)
    return _in_its_own_run_folder(config, path)


def _in_its_own_run_folder(config: RunConfig, path: Path) -> RunConfig:
    """A run folder's own config.yaml names the folder it was made in; when the folder has been moved or copied
    since, the run is where the file is now (so ``run moved/config.yaml --resume`` continues *that* run, not the
    old path)."""
    folder = path.resolve().parent
    is_run_folder = path.name == "config.yaml" and ((folder / "store").exists() or (folder / "checkpoint.pt").exists())
    if is_run_folder and config.output.dir is not None and Path(config.output.dir).resolve() != folder:
        import logging

        logging.getLogger(__name__).info("run folder %s was moved from %s: using it where it is", folder,
                                         config.output.dir)
        config.output.dir = folder
    return config


def resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    """Make the configuration's relative paths absolute against ``base`` (the config file's folder)."""

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    update = config.model_copy(deep=True)
    update.input.paths = [fix(p) for p in update.input.paths]
    for section, key in (("input", "metadata"), ("input", "crops_csv"), ("segmentation", "weights"),
                         ("train", "encoder_weights"), ("train", "init_from"), ("output", "dir")):
        obj = getattr(update, section)
        value = getattr(obj, key)
        if value is not None:
            setattr(obj, key, fix(value))
    return update


def save_config(config: RunConfig, path: str | Path, overwrite: bool = True) -> Path:
    """Write the full resolved configuration as YAML, atomically."""
    from phenossl.atomic import atomic_write_text

    return atomic_write_text(path, config.to_yaml(), overwrite=overwrite)


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML), validating the result."""
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.epochs=5)")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node[part]
        node[leaf] = yaml.safe_load(raw)
    return config_from_dict(data)
