"""ImageNet weights for the backbones: torchvision's weights API, timm's, or a local file.

``pretrained_backbone=True`` takes the model's default ImageNet weights through its library's own
API. torchvision downloads each file once into the torch hub cache (``torch.hub.get_dir()/
checkpoints``, moved by ``TORCH_HOME``) and reads it from there afterwards; timm does the same in
the Hugging Face hub cache (``HF_HOME``). So a machine without internet works once the file is in
place; when it is not, we raise :class:`WeightsNotFoundError` naming the file and the folder to
put it in. ``pretrained_backbone="path/to/weights.safetensors"`` (or ``.pth`` / ``.pt``, read with
``weights_only=True``) takes a local file instead: the state dict of the torchvision (or timm)
classifier of that name, as ``model.state_dict()`` saves it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from safetensors import SafetensorError
from torchvision.models import WeightsEnum

from pixelwise.errors import CheckpointError, ConfigError, WeightsNotFoundError

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt")
Pretrained = bool | str | os.PathLike  # what pretrained_backbone accepts


def check_pretrained(value: Any) -> None:
    """Raise ConfigError unless ``value`` is True, False or a path to a weights file."""
    if isinstance(value, bool):
        return
    if isinstance(value, (str, os.PathLike)) and Path(value).suffix in WEIGHTS_SUFFIXES:
        return
    raise ConfigError(
        f"pretrained_backbone must be True, False or a path ending in {list(WEIGHTS_SUFFIXES)}, "
        f"got {value!r}; try pretrained_backbone='resnet18.safetensors'"
    )


def imagenet_weights(name: str) -> WeightsEnum:
    """torchvision's default ImageNet weights of classifier ``name`` (VGG16: the only ones with
    the fc6/fc7 classifier FCN convolutionalizes)."""
    return torchvision.models.get_model_weights(name).DEFAULT


def cached_weights_path(backbone: str) -> Path:
    """Where torchvision looks for ``backbone``'s ImageNet weights file before downloading it."""
    filename = os.path.basename(urlparse(imagenet_weights(backbone).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet classifier's state dict for ``backbone`` (cache, else download).

    Raises:
        WeightsNotFoundError: the file is not cached and cannot be downloaded.
    """
    weights = imagenet_weights(backbone)
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except (URLError, ConnectionError, TimeoutError) as error:
        path = cached_weights_path(backbone)
        raise WeightsNotFoundError(
            f"ImageNet weights for backbone {backbone!r} must be in the torch hub cache, got no "
            f"file {path} and the download of {weights.url} failed ({error}); try downloading "
            f"that URL elsewhere and copying it to {path} (TORCH_HOME moves the cache), or "
            "pretrained_backbone=False"
        ) from error


def require_file(path: Path, name: str) -> Path:
    """``path``, or WeightsNotFoundError when there is no such file (``name``: the backbone)."""
    if not path.is_file():
        raise WeightsNotFoundError(
            f"pretrained_backbone file for backbone {name!r} must exist, got no file {path}; try "
            "saving the classifier's model.state_dict() there"
        )
    return path


def load_local_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (safetensors, or a ``torch.save`` file read weights-only).

    Raises:
        WeightsNotFoundError: no such file.
        CheckpointError: the file is not a state dict of tensors.
    """
    require_file(path, name)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError,
            ValueError) as error:  # what safetensors and a weights-only torch.load raise
        raise CheckpointError(
            f"pretrained_backbone file {path} must be a readable state dict, got "
            f"{type(error).__name__}: {error}; try re-saving it with torch.save(model.state_dict())"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"pretrained_backbone file {path} must hold a dict of tensors (a state dict), got "
            f"{type(state).__name__}; try torch.save(model.state_dict(), {str(path)!r})"
        )
    return state


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """``model.load_state_dict(state)`` for torchvision classifier ``name``, with a
    CheckpointError naming the first missing / unexpected / mis-shaped keys instead of torch's
    multi-line RuntimeError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"pretrained_backbone weights must match torchvision.models.{name}, got "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected "
            f"{unexpected[:3]}, {len(shapes)} of another shape {shapes[:3]}; try a state dict "
            "saved from the same model"
        )
    # a model built on the meta device (no memory, no random init) takes the tensors themselves
    model.load_state_dict(state, assign=any(t.is_meta for t in own.values()))


def timm_weights_files(name: str) -> list[Path]:
    """Where timm looks for model ``name``'s default pretrained weights (Hugging Face hub cache,
    or the torch hub cache for the few without a hub copy); empty when it has none."""
    import timm
    from huggingface_hub.constants import HF_HUB_CACHE

    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        return []
    if config.hf_hub_id:
        folder = Path(HF_HUB_CACHE) / f"models--{config.hf_hub_id.replace('/', '--')}"
        return [folder / "snapshots" / "*" / f for f in ("model.safetensors", "pytorch_model.bin")]
    if config.url:
        return [Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(config.url).path)]
    return []


def is_cached(path: Path) -> bool:
    """Whether ``path`` (which may have a ``*`` folder, as a hub snapshot does) exists."""
    return any(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
