"""Shared by bench/isbi2012.py and bench/camvid.py: every system trained for the same budget,
one after another, scored by one piece of code, and reported as a table and JSON lines.

- pixelwise trains through ``pixelwise.train`` from a shipped recipe (``configs/*_cpu.yaml``)
  with ``train.time_budget`` (or ``train.max_steps``), and is scored by ``pixelwise.evaluate``
  on the checkpoint it wrote, with the recipe's test-time augmentation (``Task.tta``: the 8
  rotations and mirrors for EM, the mirror for street scenes; ``Task.tta_scales``: EM also at
  1.25x; ``--tta`` and ``--tta-scales`` change them), as a user runs ``pixelwise evaluate
  --tta-views --tta-scales``. ``pixelwise-realtime`` is the same recipe with the
  model of the ``realtime`` preset (``pixelwise.models.presets``: FCN-8s on MobileNetV3-Large),
  the counterpart of torchvision's LR-ASPP MobileNetV3.
- Peers use their own libraries' models, no pretrained weights (as pixelwise):
  ``smp.Unet("resnet34", encoder_weights=None)`` and torchvision's
  ``lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)``, trained by
  :func:`train_peer`, a plain loop: cross-entropy (the ignore index skipped), AdamW at a
  constant learning rate, random crops and flips. The clock runs from building the model to the
  last step, data loading included. They are scored by ``validate(detailed=True)``, the pass
  ``pixelwise.evaluate`` itself runs, without test-time augmentation (``--peer-tta``: with
  pixelwise's, wrapped around their models).
A peer whose library is not installed is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import pixelwise
from pixelwise.config import load_config
from pixelwise.data import open_dataset
from pixelwise.data.transforms import RECOMMENDED, eval_preset, train_preset
from pixelwise.engine.evaluate import json_safe, validate
from pixelwise.inference.tta import tta_views, with_tta
from pixelwise.metrics import SIZE_BINS

HONESTY = ("A time budget is honest only when nothing else runs on this machine: run the "
           "benchmark alone (--steps N compares at equal steps, independent of the load).")
PEERS = ("smp-unet-r34", "tv-lraspp-mbv3")
# pixelwise's systems: the model preset each trains in the task's recipe (None: the recipe's own)
PIXELWISE = {"pixelwise": None, "pixelwise-realtime": "realtime"}
SYSTEMS = (*PIXELWISE, *PEERS)
DEFAULT_SYSTEMS = ("pixelwise", *PEERS)  # CamVid's recipe already trains the realtime model
PEER_LR, PEER_WEIGHT_DECAY = 1e-3, 1e-4


@dataclass
class Task:
    """One benchmark: its data, pixelwise's recipe, the peers' crops, the row's scores."""

    kind: str  # dataset kind: isbi2012 | camvid
    config: str  # pixelwise's recipe
    train_root: str
    eval_root: str
    eval_split: str
    crop: int | tuple[int, int]
    batch_size: int
    vflip: float  # EM slices have no up and down; street scenes do
    scores: Callable[[dict], dict[str, Any]]  # the task's row fields from evaluate's scores
    options: dict[str, Any] = field(default_factory=dict)  # dataset options (both splits)
    eval_options: dict[str, Any] = field(default_factory=dict)  # dataset options (eval only)
    tta: str = "none"  # pixelwise's evaluation views: none, h (mirror) or d4 (rotations too)
    tta_scales: tuple[float, ...] = (1.0,)  # and the input scales each view also runs at


@dataclass(frozen=True)
class Limit:
    """The same budget for every system: seconds of wall clock, or optimiser steps."""

    seconds: float | None = None
    steps: int | None = None

    def reached(self, steps: int, seconds: float) -> bool:
        return (self.steps is not None and steps >= self.steps) or (
            self.seconds is not None and seconds >= self.seconds)

    def pixelwise_overrides(self) -> list[str]:
        if self.steps is not None:
            return ["train.time_budget=null", f"train.max_steps={self.steps}"]
        return [f"train.time_budget={self.seconds}s", "train.max_steps=0"]

    def describe(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds:.0f} s"


def add_common_arguments(parser: argparse.ArgumentParser, budget: float, crop: str,
                         batch_size: int) -> None:
    parser.add_argument("--budget", type=float, default=budget,
                        help="seconds of training per system (default %(default)s)")
    parser.add_argument("--steps", type=int, help="optimiser steps per system instead of --budget")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help="comma-separated, among " + ", ".join(SYSTEMS) +
                             " (default %(default)s)")
    parser.add_argument("--out", default=None, help="folder for the rows and pixelwise's run")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for every system")
    parser.add_argument("--crop", default=crop, help="training crop HxW or N, every system")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="every system")
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="change pixelwise's recipe, e.g. optim.loss=ce (ablations); "
                             "pixelwise-realtime keeps its preset's model.*")
    parser.add_argument("--tta", choices=("none", "h", "d4"), default=None,
                        help="pixelwise's test-time augmentation (default: the recipe's, "
                             "d4 on ISBI 2012, h on CamVid); the peers' plain loop has none")
    parser.add_argument("--tta-scales", type=positive_scale, nargs="+", default=None, metavar="S",
                        help="the input scales pixelwise's views also run at (default: the "
                             "recipe's, 1 1.25 on ISBI 2012, 1 on CamVid), as pixelwise "
                             "evaluate --tta-scales")
    parser.add_argument("--peer-tta", action="store_true",
                        help="score the peers with pixelwise's test-time augmentation too "
                             "(pixelwise.inference.tta around their models; default: none, "
                             "as their plain loop)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every system this many times (seeds 0, 1, ...; seed-major, "
                             "so that machine load falls on all systems alike) and print the "
                             "mean and range over seeds")
    parser.add_argument("--first-seed", type=int, default=0, metavar="S",
                        help="the first seed (default 0): --first-seed 1 adds seed 1 to an "
                             "earlier run of seed 0")


def positive_scale(text: str) -> float:
    """A ``--tta-scales`` value, refused at parsing, not after the budget's training."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text}; try 1 1.25")
    return value


def parse_crop(text: str) -> int | tuple[int, int]:
    height, _, width = text.partition("x")
    return (int(height), int(width)) if width else int(height)


def limit_of(args: argparse.Namespace) -> Limit:
    return Limit(steps=args.steps) if args.steps is not None else Limit(seconds=args.budget)


def systems_of(args: argparse.Namespace) -> list[str]:
    names = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"--systems must be among {', '.join(SYSTEMS)}, got {unknown}")
    return names


# ---- peers -------------------------------------------------------------------------------------


class PeerLogits(nn.Module):
    """A peer model as pixelwise's code expects it: ``(N, C, H, W)`` in, logits out; grey
    images repeated to the three channels torchvision's MobileNetV3 takes; ``{"out": ...}``
    unwrapped."""

    def __init__(self, model: nn.Module, repeat_grey: bool) -> None:
        super().__init__()
        self.model, self.repeat_grey = model, repeat_grey

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_grey and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out


def peer_builder(name: str, in_channels: int, num_classes: int) -> Callable[[], nn.Module] | None:
    """A function building peer ``name``, or None (with a line saying why) when its library
    is missing."""
    if name == "smp-unet-r34":
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            print("smp-unet-r34 skipped: segmentation_models_pytorch is not installed "
                  "(pip install 'pixelwise[bench]')")
            return None
        return lambda: PeerLogits(smp.Unet("resnet34", encoder_weights=None,
                                           in_channels=in_channels, classes=num_classes), False)
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lambda: PeerLogits(lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes), True)


def train_peer(build: Callable[[], nn.Module], task: Task, limit: Limit,
               device: torch.device, seed: int = 0) -> tuple[nn.Module, int, float]:
    """The plain loop; returns (model, steps, seconds from building the model to the last step)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = build().to(device)
    mean, std = RECOMMENDED[task.kind]["mean"], RECOMMENDED[task.kind]["std"]
    data = open_dataset(task.kind, task.train_root, "train", **task.options)
    data.transforms = train_preset(task.crop, mean=mean, std=std, ignore_index=data.info.ignore_index,
                                   scale=None, hflip=0.5, vflip=task.vflip)
    loader = DataLoader(data, batch_size=task.batch_size, shuffle=True,
                        drop_last=len(data) > task.batch_size,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEER_LR, weight_decay=PEER_WEIGHT_DECAY)
    model.train()
    steps = 0
    while not limit.reached(steps, time.perf_counter() - started):
        for image, target in loader:
            logits = model(image.to(device))
            loss = F.cross_entropy(logits, target.to(device), ignore_index=data.info.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if limit.reached(steps, time.perf_counter() - started):
                break
    return model, steps, time.perf_counter() - started


def score_peer(model: nn.Module, task: Task, device: torch.device, views: str = "none",
               scales: tuple[float, ...] = (1.0,)) -> dict[str, Any]:
    """``validate(detailed=True)`` on the evaluation split, as ``pixelwise.evaluate`` scores;
    with test-time augmentation (``views``, ``scales``) when ``--peer-tta`` asks for it."""
    model = with_tta(model, tta_views(False if views == "none" else views), scales)
    mean, std = RECOMMENDED[task.kind]["mean"], RECOMMENDED[task.kind]["std"]
    data = open_dataset(task.kind, task.eval_root, task.eval_split,
                        transforms=eval_preset(mean, std), **task.options, **task.eval_options)
    loader = DataLoader(data, batch_size=1, shuffle=False)
    return validate(model, loader, data.info.num_classes, data.info.ignore_index, device,
                    progress=False, detailed=True)


# ---- pixelwise ---------------------------------------------------------------------------------


def scoring_tta(system: str, task: Task, args: argparse.Namespace) -> tuple[str, tuple[float, ...]]:
    """The views and scales ``system`` is scored with. pixelwise: ``--tta`` and ``--tta-scales``,
    else the recipe's (``Task.tta``, ``Task.tta_scales``); the peers: none, or pixelwise's under
    ``--peer-tta``."""
    if system not in PIXELWISE and not args.peer_tta:
        return "none", (1.0,)
    return args.tta or task.tta, tuple(args.tta_scales) if args.tta_scales else task.tta_scales


def tta_label(views: str, scales: tuple[float, ...]) -> str:
    """Test-time augmentation in a table cell: ``d4``, or ``d4 x1,1.25`` with scales."""
    return views if scales == (1.0,) else f"{views} x{','.join(f'{s:g}' for s in scales)}"


def preset_overrides(name: str | None) -> list[str]:
    """Config overrides that make a recipe train model preset ``name`` (none for None); the
    whole ``model.options`` mapping is replaced, so ``--set model.options.x`` of the recipe's
    own model cannot leak into the preset's."""
    if name is None:
        return []
    from pixelwise.models.presets import preset

    model, options = preset(name)
    mapping = ", ".join(f"{key}: {value}" for key, value in options.items())
    return [f"model.name={model}", f"model.options={{{mapping}}}"]


def run_dir_of(out: Path, system: str, seed: int) -> Path:
    """Where a pixelwise system's run of ``seed`` goes: ``out/SYSTEM``, ``out/SYSTEM-seedS``."""
    return out / (system if seed == 0 else f"{system}-seed{seed}")


def run_pixelwise(task: Task, limit: Limit, args: argparse.Namespace, out: Path,
                  seed: int = 0, system: str = "pixelwise") -> tuple[int, float, dict[str, Any]]:
    """Train the recipe (with ``system``'s model preset) for ``limit`` into ``out/SYSTEM``
    (``out/SYSTEM-seedS`` for a seed other than 0), then ``pixelwise.evaluate`` its checkpoint;
    returns (steps, seconds, scores)."""
    run_dir = run_dir_of(out, system, seed)
    crop = f"[{task.crop[0]},{task.crop[1]}]" if isinstance(task.crop, tuple) else task.crop
    overrides = [f"data.root={task.train_root}", f"train.out_dir={run_dir}",
                 "train.overwrite=true", "train.progress=false", f"train.device={args.device}",
                 f"data.batch_size={args.batch_size}", f"data.crop_size={crop}",
                 f"train.seed={seed}", *limit.pixelwise_overrides(), *args.set,
                 *preset_overrides(PIXELWISE[system])]
    result = pixelwise.train(load_config(task.config, overrides))
    tta, scales = scoring_tta(system, task, args)
    scores = pixelwise.evaluate(run_dir / "last.safetensors", task.kind, task.eval_root,
                                task.eval_split, out_dir=run_dir / f"eval-{task.eval_split}",
                                device=args.device, progress=False,
                                tta=False if tta == "none" else tta,
                                tta_scales=scales,
                                **task.options, **task.eval_options)
    return result["step"], result["seconds"], scores


# ---- the run and the report --------------------------------------------------------------------


def run_all(task: Task, args: argparse.Namespace, default_out: str) -> list[dict[str, Any]]:
    """Every system of ``--systems`` in turn; print the table and one JSON line per system, and
    write the rows to ``OUT/results.jsonl``."""
    torch.set_num_threads(args.threads)
    limit, device = limit_of(args), torch.device(args.device)
    out = Path(args.out or default_out)
    out.mkdir(parents=True, exist_ok=True)
    ours = tta_label(*scoring_tta("pixelwise", task, args))
    print(f"{task.kind}: {limit.describe()} per system, {args.threads} threads, {args.device}, "
          f"crop {args.crop}, batch {args.batch_size}; pixelwise TTA {ours}; "
          f"torch {torch.__version__}")
    if limit.seconds is not None:
        print(HONESTY)
    info = open_dataset(task.kind, task.train_root, "train", **task.options).info
    rows, classes = [], list(info.classes)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for system in systems_of(args):
            if system in PIXELWISE:
                steps, seconds, scores = run_pixelwise(task, limit, args, out, seed, system)
            else:
                build = peer_builder(system, info.in_channels, info.num_classes)
                if build is None:
                    continue
                model, steps, seconds = train_peer(build, task, limit, device, seed)
                scores = score_peer(model, task, device, *scoring_tta(system, task, args))
            rows.append({**row_of(system, steps, seconds, limit, task, scores), "seed": seed,
                         "tta": tta_label(*scoring_tta(system, task, args))})
            print(json.dumps(rows[-1]), flush=True)
    print(format_rows(rows, classes))
    if args.seeds > 1:
        print(format_seed_summary(rows))
    with (out / "results.jsonl").open("w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    ours = [run_dir_of(out, row["system"], row["seed"]) for row in rows
            if row["system"] in PIXELWISE]
    print(f"wrote {out / 'results.jsonl'}" + "".join(f" and {run}/last.safetensors"
                                                     for run in ours))
    return rows


def row_of(system: str, steps: int, seconds: float, limit: Limit, task: Task,
           scores: dict[str, Any]) -> dict[str, Any]:
    recall = scores["object_recall"]
    row = {"system": system, "steps": steps, "seconds": round(seconds, 1),
           "budget_s": limit.seconds, "budget_steps": limit.steps, **task.scores(scores),
           "object_recall": recall["recall"], "object_recall_mean": recall["mean"]}
    return json_safe(row)


def format_rows(rows: list[dict[str, Any]], classes: list[str]) -> str:
    """A Markdown table: steps, seconds, TTA, the task's scalar scores, mean object recall by
    size; then, when the rows have per-class IoU, a table of it."""
    scalars = [key for key in rows[0] if isinstance(rows[0][key], float | int | None)
               and key not in ("steps", "seconds", "budget_s", "budget_steps", "seed")
               ] if rows else []
    head = ["system", "steps", "seconds", "TTA", *scalars,
            *(f"recall {size}" for size in SIZE_BINS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [label_of(row, rows), str(row["steps"]), f"{row['seconds']:.0f}",
                 row.get("tta", "none"),
                 *(_number(row[key]) for key in scalars),
                 *(_number(row["object_recall_mean"][size]) for size in SIZE_BINS)]
        lines.append("| " + " | ".join(cells) + " |")
    if rows and "iou" in rows[0]:
        lines += ["", "| class | " + " | ".join(label_of(row, rows) for row in rows) + " |",
                  "|" + "---|" * (len(rows) + 1)]
        for i, name in enumerate(classes):
            lines.append(f"| {name} | " + " | ".join(_number(row["iou"][i]) for row in rows) + " |")
    return "\n".join(lines)


def label_of(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The row's system, with its seed when the rows have several."""
    several = len({r.get("seed", 0) for r in rows}) > 1
    return f"{row['system']} seed {row.get('seed', 0)}" if several else row["system"]


def seed_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """``{system: {score: (mean, min, max) over its seeds}}`` for every scalar score (steps
    included), from rows of several seeds; a score that is None in some seed is left out."""
    summary: dict[str, dict[str, tuple[float, float, float]]] = {}
    for system in dict.fromkeys(row["system"] for row in rows):
        mine = [row for row in rows if row["system"] == system]
        keys = [key for key, value in mine[0].items() if isinstance(value, int | float)
                and not isinstance(value, bool) and key not in ("seed", "budget_s", "budget_steps")]
        summary[system] = {
            key: (statistics.fmean(values), min(values), max(values))
            for key in keys
            if None not in (values := [row[key] for row in mine])
        }
    return summary


def format_seed_summary(rows: list[dict[str, Any]]) -> str:
    """`seed_summary` as a Markdown table: one row per system, "mean (min-max)" per score."""
    summary = seed_summary(rows)
    keys = list(dict.fromkeys(key for scores in summary.values() for key in scores))
    seeds = len({row["seed"] for row in rows})
    lines = [f"mean (min-max) over {seeds} seeds", "| system | " + " | ".join(keys) + " |",
             "|" + "---|" * (len(keys) + 1)]
    for system, scores in summary.items():
        cells = [f"{scores[key][0]:.4g} ({scores[key][1]:.4g}-{scores[key][2]:.4g})"
                 if key in scores else "-" for key in keys]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
