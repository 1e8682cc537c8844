"""The checkpoint format: model weights and their metadata in one ``.safetensors`` file.

The file's safetensors metadata carries, as JSON under :data:`METADATA_KEY`, everything needed to
rebuild and run the model from that one file (model name/num_classes/options, class names,
palette, background classes, ignore index, mean/std, in_channels, pixelwise version):
:class:`ModelMeta`. So :func:`load_model` needs nothing else, and prediction, evaluation and
export read checkpoints without the training package. Exported ONNX and TorchScript files carry the same JSON under the
same key.

Files are written atomically (:func:`atomic_write_bytes`): a temporary file in the same folder,
flushed and fsynced, then ``os.replace``-d over the target, so a crash leaves either the old or
the new file, never half. The training state beside the weights (``last.state.pt``, rotation,
resume) is the training package's: :mod:`pixelwise.engine.checkpoint`.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from pixelwise.data.info import background_by_name, check_background
from pixelwise.errors import CheckpointError

METADATA_KEY = "pixelwise"  # the metadata entry of .safetensors, .onnx and TorchScript files
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


@dataclass
class ModelMeta:
    """What a weights file says about its model (stored as JSON in the safetensors metadata).

    `background`: ids of the classes that are not objects (the training data's
    `DatasetInfo.background`), which instance outputs skip and overlays leave untinted.
    """

    name: str
    num_classes: int
    options: dict[str, Any]
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int
    in_channels: int
    mean: list[float]
    std: list[float]
    version: str = ""
    epoch: int = 0
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    background: tuple[int, ...] | None = None  # None: the classes named "background"

    def __post_init__(self) -> None:
        # Checkpoints written before `background` was recorded (and metadata built without it)
        # take the classes named "background", as a folder dataset does: `background_by_name`.
        stated = background_by_name(self.classes) if self.background is None else self.background
        self.background = check_background(stated, self.num_classes)

    @classmethod
    def from_json(cls, text: str, path: Path) -> ModelMeta:
        try:
            data = json.loads(text)
            data["palette"] = [tuple(colour) for colour in data["palette"]]
            return cls(**data)
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(
                f"checkpoint metadata in {path} must be pixelwise model metadata, got {err}; "
                "try a .safetensors file written by pixelwise train"
            ) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes from every key."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned


def save_weights(path: Path, model: nn.Module, meta: ModelMeta) -> None:
    """Write the model's weights and ``meta`` to one ``.safetensors`` file, atomically."""
    state = strip_wrapper_prefixes(model.state_dict())
    # safetensors refuses shared or non-contiguous storage; a plain CPU copy of each is safe.
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    data = safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(asdict(meta))})
    atomic_write_bytes(Path(path), data)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Read a pixelwise ``.safetensors`` file: ``(state_dict, meta)``; raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint must be an existing .safetensors file, got {str(path)!r}; "
            "try runs/<name>/best.safetensors"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        kind = other_format(path)
        if kind is not None:
            raise CheckpointError(
                f"checkpoint {path} must be a .safetensors weights file written by pixelwise "
                f"train, got {kind}; try the best.safetensors or last.safetensors of its run "
                "(predict also takes an .onnx file from pixelwise export)"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} must be a whole safetensors file, got an unreadable one ({err}); "
            "try the previous or best checkpoint"
        ) from None
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"checkpoint {path} must carry pixelwise metadata, got keys {sorted(metadata)}; "
            "try a file written by pixelwise train"
        )
    return strip_wrapper_prefixes(state), ModelMeta.from_json(metadata[METADATA_KEY], path)


def other_format(path: Path) -> str | None:
    """What a file that is not safetensors is, when it is a format a user may mistake for a
    checkpoint: "an ONNX model", "a TorchScript module", "a training state file (...)", or
    None for anything else (then it is taken as damaged). Only the file's suffix and, for a zip
    archive, its member names are read: nothing is unpickled."""
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (from pixelwise export)"
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
        return "a TorchScript module (from pixelwise export)"
    if any(name.endswith("/data.pkl") for name in names):
        if path.name.endswith(".state.pt"):
            return ("a training state file (optimiser, schedule and RNG for --resume; the "
                    "weights are in the .safetensors file beside it)")
        return "a torch.save pickle (pixelwise never unpickles one)"
    return None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)`` with a CheckpointError naming the file on mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"weights in {path} must match the model, got: {first}; "
            "try the model name/options the checkpoint was trained with"
        ) from None


def load_model(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model described by one ``.safetensors`` file and load its weights (CPU, eval)."""
    from pixelwise.models import build

    state, meta = read_weights(path)
    model = build(meta.name, meta.num_classes, **meta.options)
    load_state_into(model, state, path)
    return model.eval(), meta
