"""Training configuration: one flat set of dataclasses, YAML files and ``key=value`` overrides.

The defaults below are the whole schema (nanoGPT style: config values are plain data). A YAML
file overrides some of them and command-line ``key=value`` strings override the file, e.g.
``optim.lr=0.01 data.root=../shared/data/isbi2012``. Unknown keys and values of the wrong type
raise :class:`~pixelwise.errors.ConfigError` naming the valid keys. omegaconf does the parsing
and type checks; the result is converted back to these plain dataclasses.

Naming another model (``model.name=fcn8s``), dataset kind (``data.dataset=camvid``) or loss
(``optim.loss=ce``) on the command line drops the file's ``model.options`` (``data.options``,
``optim.loss_options``): they belong to the file's model, data or loss. A whole mapping value
(``"model.options={backbone: resnet18}"``) replaces the mapping instead of merging into it.
:func:`validate` checks every name that can be checked before training (metric, loss, device,
dataset kind, root and options, augmentation keys, model name and options), each against the
one place that defines it.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pixelwise.errors import ConfigError
from pixelwise.options import Spelling, check_choice, check_options, is_integer

log = logging.getLogger("pixelwise")

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "linear", "poly", "cosine")
PRECISE_BN = ("auto", "always", "never")
# data.class_weights by name: "auto" median-frequency balancing (SegNet), "sqrt" its square
# root (a softer balance); pixelwise.engine.data_setup.class_weights_for computes them
CLASS_WEIGHTINGS = ("auto", "sqrt")
# A key naming what the options under the other key belong to: naming another one on the
# command line drops the file's options.
OWNERS = {"model.name": "model.options", "data.dataset": "data.options",
          "optim.loss": "optim.loss_options"}
# Free-form keyword options: a whole mapping given on the command line replaces the file's.
MAPPINGS = ("model.options", "data.options", "data.augment", "optim.loss_options")


@dataclass
class ModelConfig:
    name: str = "unet"  # a name from `pixelwise models`
    num_classes: int = 0  # 0: take it from the dataset
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the builder
    init_from: str | None = None  # .safetensors to start from (FCN staged training, §4.2)


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # synthetic | folder | voc | camvid | isbi2012 | cityscapes
    root: str = ""  # dataset folder (unused for synthetic)
    train_split: str = "train"
    val_split: str = "val"
    crop_size: Any = None  # training crop: pixels, or [height, width]; None: the kind's default
    batch_size: int = 8
    val_batch_size: int = 1  # 1 works for images of different sizes (VOC); raise it when equal
    workers: Any = "auto"  # DataLoader worker processes; auto: the CPU cores this process may
    # use (shared among torchrun processes), less one for the training loop, at most 8
    mean: list[float] | None = None  # per channel; None: the dataset's own statistics
    std: list[float] | None = None
    ignore_index: int | None = None  # None: the dataset's own ignore index
    class_weights: Any = None  # None | a CLASS_WEIGHTINGS name | list of K floats
    augment: dict[str, Any] = field(default_factory=dict)  # train_preset options (scale, hflip,
    # vflip, rotation, elastic, colour_jitter) over the kind's RECOMMENDED settings
    options: dict[str, Any] = field(default_factory=dict)  # extra open_dataset keywords
    cache: bool = False  # read the decoded (and scaled) pairs into memory before training, so
    # no epoch reads the files again; refused when it would take over half the free RAM
    quick_check: bool = True  # run the data quick check before training


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "poly"  # constant | linear | poly | cosine, over all steps (or the budget)
    poly_power: float = 0.9
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    loss: str = "ce"  # ce | dice | ce_dice | focal | unet_weighted_ce (pixelwise.losses)
    # the loss's own options, e.g. {w0: 10, sigma: 5} for unet_weighted_ce (U-Net §3's weight map)
    loss_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 10  # not a limit when train.time_budget or train.max_steps is set
    time_budget: str | None = None  # e.g. 600s, 20m, 2h, 1h30m: stop when spent and decay the LR
    # over it (linear/poly to 0 by elapsed time, Li et al. "Budgeted Training", ICLR 2020); None
    max_steps: int = 0  # stop after this many optimiser steps (the LR decays over them); 0: off
    accumulate: int = 1  # optimiser step every `accumulate` batches
    amp: bool | str = True  # true: autocast on CUDA (bf16, else fp16) and on CPUs with bf16
    # units when a measured step of the model is faster; "bf16": bf16 autocast on any device; false: off
    channels_last: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms: a CPU run repeats bit for bit
    val_every: int = 1  # validate every N epochs (and after the last)
    metric: str = "mean_iou"  # key of the metrics dict that picks the best checkpoint
    early_stop_patience: int = 0  # stop after N validations without improvement; 0: never
    skip_nonfinite: bool = False  # skip a batch with NaN/inf loss instead of stopping
    zero_recall_warn_after: int = 3  # warn when a class's recall is 0 this many validations
    out_dir: str = "runs/exp"  # checkpoints, config.yaml, run.json, metrics.csv
    # write the `last` checkpoint at an epoch's end only once this long (e.g. 2m) has passed
    # since the one before; the run's final epoch is always saved. None: after every epoch
    checkpoint_interval: str | None = None
    # validate, save and export a moving average of the weights (e.g. 0.999, its decay per step,
    # warmed up as min(ema, (1 + n) / (10 + n)); pixelwise.engine.ema). None: the trained weights
    ema: float | None = None
    overwrite: bool = False  # a new run may delete an earlier run's checkpoints in out_dir
    progress: bool = True  # tqdm progress bars
    figures: bool = True  # redraw training_curves.png beside metrics.csv at each validation
    precise_bn: str = "auto"  # recompute batch-norm statistics over training batches before
    # validating: auto (while running statistics have not settled: a short run), always, never


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _schema() -> DictConfig:
    schema = OmegaConf.structured(Config)
    # Builder and dataset options are free-form: validate() checks them against their owner.
    for key in MAPPINGS:
        OmegaConf.set_struct(OmegaConf.select(schema, key), False)
    return schema


def _valid_keys(section: str) -> list[str]:
    """The keys allowed in ``section`` ("" for the top level, "optim" for the optimiser...)."""
    node = OmegaConf.select(_schema(), section) if section else _schema()
    if not isinstance(node, DictConfig):
        node = _schema()
        section = ""
    prefix = f"{section}." if section else ""
    return [f"{prefix}{key}" for key in node]


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as err:
        section = str(err.full_key).rpartition(".")[0]
        valid = ", ".join(_valid_keys(section))
        raise ConfigError(
            f"config key must be one of the known keys, got {err.full_key!r} in {source}; "
            f"valid keys: {valid}"
        ) from None
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"config value for {err.full_key!r} in {source} has the wrong type: {reason}; "
            f"try a value like the default {OmegaConf.select(_schema(), str(err.full_key))!r}"
        ) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from defaults, an optional YAML file, then ``key=value`` strings."""
    cfg = _schema()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file must exist, got {str(path)!r}; try one from configs/")
        cfg = _merge(cfg, _read_yaml(path), str(path))
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override must look like key=value, got {item!r}; try e.g. optim.lr=0.01"
            )
        parsed.append((item, _from_dotlist([item], f"override {item!r}")))
    for owner, options in OWNERS.items():  # before any override: `model.options.x=1` may follow
        named = [OmegaConf.select(o, owner) for _, o in parsed if OmegaConf.select(o, owner)]
        if named and named[-1] != OmegaConf.select(cfg, owner) and OmegaConf.select(cfg, options):
            log.info("%s=%s: dropping the file's %s %s (they belong to %s)", owner, named[-1],
                     options, OmegaConf.to_container(OmegaConf.select(cfg, options)),
                     OmegaConf.select(cfg, owner))
            _clear(cfg, options)
    for item, other in parsed:
        key = item.partition("=")[0].strip()
        if key in MAPPINGS and isinstance(OmegaConf.select(other, key), DictConfig):
            _clear(cfg, key)  # a whole mapping replaces the mapping
        cfg = _merge(cfg, other, f"override {item!r}")
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:  # e.g. an interpolation ${...} naming no key
        raise ConfigError(
            f"config value for {err.full_key!r} must resolve to a value, got: "
            f"{str(err).splitlines()[0]}; try a plain value"
        ) from None
    validate(config)
    return config


def _clear(cfg: DictConfig, key: str) -> None:
    """Empty the free-form mapping at ``key`` (one of :data:`MAPPINGS`)."""
    OmegaConf.update(cfg, key, {}, merge=False)
    OmegaConf.set_struct(OmegaConf.select(cfg, key), False)


def _read_yaml(path: Path) -> DictConfig:
    """The sections of a YAML config file; ConfigError naming the file when it cannot be one."""
    try:
        content = OmegaConf.load(path)
    # PyYAML's parser errors, a file that is not text, and (omegaconf's OSError) a top level
    # that is a plain value instead of a mapping or a list.
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"config file {path} must be valid YAML: {err}") from None
    if not isinstance(content, DictConfig):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (model, data, optim, train), "
            "got a list; try e.g. `train: {epochs: 1}`"
        )
    return content


def _from_dotlist(items: list[str], source: str) -> DictConfig:
    """``key=value`` strings as a config, values typed as YAML types them."""
    try:
        return OmegaConf.from_dotlist(items)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"the value of {source} must be valid YAML, got: {str(err).splitlines()[0]}; "
            "try e.g. [1, 2] for a list, or quotes around text"
        ) from None


def validate(config: Config) -> None:
    """Check the ranges and choices that types alone do not express."""
    checks = [
        (config.optim.name in OPTIMIZERS, "optim.name", f"one of {OPTIMIZERS}", config.optim.name),
        (config.optim.schedule in SCHEDULES, "optim.schedule", f"one of {SCHEDULES}",
         config.optim.schedule),
        (config.optim.lr > 0, "optim.lr", "positive", config.optim.lr),
        (config.train.epochs >= 1, "train.epochs", "at least 1", config.train.epochs),
        (config.train.accumulate >= 1, "train.accumulate", "at least 1", config.train.accumulate),
        (config.train.val_every >= 1, "train.val_every", "at least 1", config.train.val_every),
        (config.data.batch_size >= 1, "data.batch_size", "at least 1", config.data.batch_size),
        (config.data.val_batch_size >= 1, "data.val_batch_size", "at least 1",
         config.data.val_batch_size),
        (config.model.num_classes >= 0, "model.num_classes", "0 (from the dataset) or more",
         config.model.num_classes),
        (config.train.amp in (True, False, "bf16"), "train.amp", "true, false or 'bf16'",
         config.train.amp),
    ]
    for ok, key, expected, got in checks:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {got!r}")
    budget_seconds(config.train.time_budget)  # raises ConfigError when malformed
    duration_seconds(config.train.checkpoint_interval, "train.checkpoint_interval", "every epoch")
    ema = config.train.ema
    if ema is not None and not 0 < ema < 1:
        raise ConfigError(f"train.ema must be null (off) or a decay between 0 and 1, got {ema!r}; "
                          "try train.ema=0.999")
    if config.train.max_steps < 0:
        raise ConfigError(f"train.max_steps must be 0 (off) or more, got {config.train.max_steps}")
    crop = config.data.crop_size
    crop_ok = crop is None or (isinstance(crop, int) and crop > 0) or (
        isinstance(crop, list) and len(crop) == 2 and all(isinstance(c, int) and c > 0 for c in crop))
    if not crop_ok:
        raise ConfigError(
            f"data.crop_size must be null, a positive int or [height, width], got {crop!r}"
        )
    weights = config.data.class_weights
    if not (weights is None or weights in CLASS_WEIGHTINGS or isinstance(weights, list)):
        raise ConfigError(
            f"data.class_weights must be null, one of {list(CLASS_WEIGHTINGS)} or a list of "
            f"floats, got {weights!r}; try auto (median frequency) or sqrt (its square root)"
        )
    if (config.data.mean is None) != (config.data.std is None):
        raise ConfigError("data.mean and data.std must be given together or both left null")
    workers = config.data.workers
    if workers != "auto" and not (is_integer(workers) and workers >= 0):
        raise ConfigError(f"data.workers must be 'auto' or an integer >= 0, got {workers!r}; "
                          "try auto (the CPU cores this process may use)")
    check_choice("train.precise_bn", config.train.precise_bn, PRECISE_BN)
    check_names(config)


def check_names(config: Config) -> None:
    """Check each name a config gives against the one place that defines it, so that a typo
    fails at load, not after an epoch: the metric against the scores validation produces, the
    loss, the device's spelling, the dataset kind, root and options, the augmentation keys, the
    model name and options. The values of options are checked where they are used, at set-up."""
    from pixelwise.data import check_request
    from pixelwise.data.transforms import augment_options
    from pixelwise.device import check_device_name
    from pixelwise.losses import LOSS_SPELLING, LOSSES, loss_options
    from pixelwise.metrics import SCALAR_SCORES
    from pixelwise.models import model_options

    check_choice("train.metric", config.train.metric, SCALAR_SCORES)
    check_choice("optim.loss", config.optim.loss, LOSSES)
    check_options(f"loss {config.optim.loss!r}", config.optim.loss_options,
                  loss_options(config.optim.loss), LOSS_SPELLING)
    check_device_name(config.train.device, "train.device={value}")
    check_request(config.data.dataset, config.data.root, config.data.options,
                  Spelling("data.options.{name}={value}", "data.root={value}"))
    check_options("data.augment", config.data.augment, augment_options(),
                  Spelling("data.augment.{name}={value}"))
    check_options(f"model {config.model.name!r}", config.model.options,
                  model_options(config.model.name), Spelling("model.options.{name}={value}"))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def budget_seconds(text: str | None) -> float | None:
    """``train.time_budget`` in seconds: ``"600s"`` -> 600, ``"20m"`` -> 1200, ``"1h30m"`` ->
    5400, a bare number is seconds; None (no budget) stays None."""
    return duration_seconds(text, "train.time_budget", "no budget")


def duration_seconds(text: str | None, key: str, none_means: str) -> float | None:
    """The duration option ``key`` in seconds (see :func:`budget_seconds`); None stays None, and
    anything but a positive duration is a ConfigError saying that null means ``none_means``."""
    if text is None:
        return None
    spaced = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", spaced):
        seconds = float(spaced)
    elif re.fullmatch(rf"(?:{_DURATION.pattern}\s*)+", spaced):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(spaced))
    else:
        seconds = math.nan
    if not seconds > 0:
        raise ConfigError(
            f"{key} must be a positive duration like 600s, 20m, 2h or 1h30m, got {text!r}; try "
            f"{key}=20m, or null for {none_means}"
        )
    return seconds


def to_yaml(config: Config) -> str:
    """The resolved configuration as YAML (saved as ``config.yaml`` beside the checkpoints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(_plain(config)))


def to_dict(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data."""
    return OmegaConf.to_container(OmegaConf.structured(_plain(config)))


def _plain(config: Config) -> Config:
    """``config`` with a Python-API colour map (``{(r, g, b): id}``, keys YAML cannot hold) in
    its YAML form."""
    if config.data.options.get("colour_map") is None:
        return config
    from pixelwise.data.io import colour_map_to_yaml

    options = {**config.data.options,
               "colour_map": colour_map_to_yaml(config.data.options["colour_map"])}
    return replace(config, data=replace(config.data, options=options))


def parse_options(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["n=32", "size=64"]`` -> ``{"n": 32, "size": 64}`` (values typed as YAML types them)."""
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ConfigError(f"options must look like key=value, got {bad}; try n=32")
    return OmegaConf.to_container(_from_dotlist(list(items), f"options {list(items)}"))
