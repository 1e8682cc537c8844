"""Training state beside the weights: what ``--resume`` needs, written so a crash loses little.

A run folder holds::

    last.safetensors   last.state.pt        the newest epoch (weights + training state)
    previous.safetensors previous.state.pt  the epoch before, kept so a damaged `last` can fall back
    best.safetensors                        weights with the best validation metric

The weights files are the checkpoint format of :mod:`pixelwise.checkpoint`. The state file holds
only tensors and plain Python values (optimiser, scheduler, step, RNG) and is read with
``torch.load(weights_only=True)``: nothing is ever unpickled. Every file is written atomically
(:func:`pixelwise.checkpoint.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from pixelwise.checkpoint import (
    METADATA_KEY,
    ModelMeta,
    atomic_write_bytes,
    read_weights,
    save_weights,
)
from pixelwise.errors import CheckpointError

# What torch.load(weights_only=True) raises on truncated, bit-flipped or foreign files (found by
# fuzzing state files: the zip reader, the weights-only unpickler and the legacy format each
# fail in their own way; AssertionError comes from the legacy loader's storage table).
TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError,
                     IndexError, KeyError, TypeError, AssertionError, struct.error)


def check_same_model(saved: ModelMeta, wanted: ModelMeta, path: str | Path) -> None:
    """CheckpointError naming ``path`` and each field where the checkpoint's model (name,
    num_classes, options, classes) differs from the configuration's."""
    fields = ("name", "num_classes", "options", "classes")
    differ = [f"{key} {getattr(saved, key)!r} (config: {getattr(wanted, key)!r})"
              for key in fields if getattr(saved, key) != getattr(wanted, key)]
    if differ:
        raise CheckpointError(
            f"checkpoint {path} must hold the configured model and classes, got "
            f"{'; '.join(differ)}; try the run's own config.yaml, or a new train.out_dir"
        )


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch RNG states as weights-only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the training state dict atomically with ``torch.save``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_state(path: str | Path) -> dict[str, Any]:
    """Read a training state file with ``torch.load(weights_only=True)``; CheckpointError if bad."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state {path} must exist; try another run folder") from None
    except TORCH_LOAD_ERRORS as err:
        raise CheckpointError(
            f"training state {path} must be a whole pixelwise state file, got an unreadable one "
            f"({type(err).__name__}); try the previous checkpoint"
        ) from None


CHECKPOINT_FILES = ("last.safetensors", "last.state.pt", "previous.safetensors",
                    "previous.state.pt", "best.safetensors")


def start_fresh(run_dir: Path, overwrite: bool) -> None:
    """Prepare ``run_dir`` for a run that does not resume: refuse (CheckpointError) when it holds
    an earlier run's checkpoints, unless ``overwrite``, which deletes them. Without this, the
    earlier run's ``last`` would be rotated into ``previous`` and, having the higher step, be
    what a later ``--resume`` continues."""
    found = [name for name in CHECKPOINT_FILES if (run_dir / name).exists()]
    if found and not overwrite:
        raise CheckpointError(
            f"train.out_dir {run_dir} must be empty for a new run, got an earlier run's "
            f"{', '.join(found)}; try --resume {run_dir} to continue it, train.overwrite=true to "
            "replace it, or another train.out_dir"
        )
    for name in (*found, "metrics.csv", "training_curves.png"):  # a new run starts a new log
        (run_dir / name).unlink(missing_ok=True)


def save_last(run_dir: Path, model: nn.Module, meta: ModelMeta, state: dict[str, Any]) -> None:
    """Save the newest epoch as ``last.*``, keeping the one before as ``previous.*``.

    Order matters for crash safety: first ``previous.*`` becomes a copy of the current ``last.*``
    (a hard link where possible, so no data is copied), then the new weights and state replace
    ``last.*`` one after the other. Every pair carries its step, and :func:`newest_whole` only
    accepts a pair whose two files load and agree, so a crash at any point leaves one good pair.
    A ``last.*`` pair that does not agree (a run killed between its two writes, then resumed
    from ``previous.*``) is not rotated: it would overwrite the only good pair.
    """
    if _pair_steps_agree(run_dir, "last"):
        for suffix in (".safetensors", ".state.pt"):
            _atomic_link_or_copy(run_dir / f"last{suffix}", run_dir / f"previous{suffix}")
    save_weights(run_dir / "last.safetensors", model, meta)
    save_state(run_dir / "last.state.pt", state)


def _pair_steps_agree(run_dir: Path, stem: str) -> bool:
    """Whether ``stem.safetensors`` and ``stem.state.pt`` exist and carry the same step, read
    cheaply: the safetensors header and a memory-mapped, weights-only state."""
    try:
        with safe_open(str(run_dir / f"{stem}.safetensors"), framework="pt") as handle:
            step = json.loads((handle.metadata() or {})[METADATA_KEY])["step"]
        state = torch.load(run_dir / f"{stem}.state.pt", map_location="cpu", weights_only=True,
                           mmap=True)
    # Missing, truncated or foreign files all mean "not a whole pair": safetensors' error, a
    # metadata entry that is absent (KeyError), not JSON (ValueError) or not an object
    # (TypeError), and whatever torch.load raises.
    except (SafetensorError, *TORCH_LOAD_ERRORS):
        return False
    return isinstance(state, dict) and state.get("step") == step


def _atomic_link_or_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # filesystems without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


@dataclass
class Resumable:
    """A checkpoint pair that loaded whole: weights, metadata and training state."""

    weights: dict[str, torch.Tensor]
    meta: ModelMeta
    state: dict[str, Any]
    stem: Path


def check_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path; CheckpointError when no such folder exists (``--resume``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "a file" if run_dir.exists() else "no such folder"
        raise CheckpointError(
            f"--resume must name an existing run folder, got {str(run_dir)!r} ({what}); try "
            "the train.out_dir of an earlier run, e.g. --resume runs/exp"
        )
    return run_dir


def newest_whole(run_dir: str | Path) -> Resumable:
    """The newest checkpoint pair in ``run_dir`` whose two files load and agree on the step."""
    run_dir = check_run_folder(run_dir)
    found, problems = [], []
    for stem in ("last", "previous"):
        weights_path, state_path = run_dir / f"{stem}.safetensors", run_dir / f"{stem}.state.pt"
        if not weights_path.exists() and not state_path.exists():
            continue
        try:
            weights, meta = read_weights(weights_path)
            state = read_state(state_path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if state.get("step") != meta.step:
            problems.append(f"{stem}: weights are from step {meta.step}, state from {state.get('step')}")
            continue
        found.append(Resumable(weights, meta, state, run_dir / stem))
    if not found:
        detail = "; ".join(problems) or "no last.safetensors / last.state.pt"
        raise CheckpointError(f"run folder {run_dir} must hold a whole checkpoint, got: {detail}")
    return max(found, key=lambda item: item.meta.step)
