"""``pixelwise predict``: image files to prediction files, resumable, across torchrun processes.

:func:`run_prediction_job` reads top to bottom:

1. **Plan.** The inputs (files, and the images of folders, ``recursive`` or not) in one stable
   order, their sorted absolute paths, each with its output files under ``out_dir``
   (:func:`output_stems` is the naming rule of docs/inference.md). Two inputs that would write
   one file are refused before anything is predicted.
2. **Share.** Inputs the manifest records as done with the same settings are skipped; of the
   rest, rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...``. An output that would replace
   an input, or a file this job did not write, is refused before anything is predicted.
3. **Predict.** A DataLoader with workers decodes the rank's images while the model runs. Each
   image is predicted on its own, so the files are the bytes one process writes, whatever the
   number of processes. Ranks step together: at every step a failure on one (an unreadable
   image without ``skip_bad``) stops all of them (:func:`~pixelwise.engine.distributed.
   fail_together`), instead of the others waiting for it until a timeout.
4. **Record.** Per input: a claim line, the outputs written atomically, a done line
   (:mod:`pixelwise.engine.manifest`); so a killed job re-run redoes only unfinished inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pixelwise.device import DistInfo, pick_device
from pixelwise.engine.data_setup import batches_of
from pixelwise.engine.distributed import (
    fail_together,
    process_group,
    reduce_over_ranks,
    same_on_every_rank,
)
from pixelwise.engine.manifest import (
    InputFile,
    Manifest,
    ManifestWriter,
    sha256_of,
    write_job_file,
)
from pixelwise.errors import CheckpointError, ConfigError, DataError, PixelwiseError
from pixelwise.outputs import (
    check_formats_for,
    georeference_for,
    output_paths,
    predicted,
    remove_partial_folders,
    save_prediction,
)

if TYPE_CHECKING:
    from pixelwise.inference.predict import Segmenter

log = logging.getLogger("pixelwise")


@dataclass(frozen=True)
class PredictionJob:
    """What ``pixelwise predict CHECKPOINT INPUT... --out DIR`` was asked to do."""

    checkpoint: str | Path
    inputs: Sequence[str | Path]  # image files and folders
    out_dir: str | Path
    formats: tuple[str, ...] = ("png", "overlay")
    device: str = "auto"
    tta_flips: tuple[str, ...] = ()
    tta_scales: tuple[float, ...] = (1.0,)
    min_area: int = 0  # geojson / coco
    simplify: float = 0.0  # geojson / coco
    background: tuple[int, ...] | None = None  # classes that are not objects; None: the checkpoint's
    coco_segmentation: str = "auto"  # "auto": polygons, RLE for objects with holes; "rle": all RLE
    backend: str | None = None  # Segmenter's backend (None: PyTorch fp32, or the ONNX file's)
    calibration: str | Path | None = None  # folder for onnx-int8 / auto; None: the first inputs
    skip_bad: bool = False  # skip unreadable inputs (reported, counted) instead of stopping
    recursive: bool = False  # folders: also the images of their subfolders
    workers: int | None = None  # decoding processes per rank; None: what the machine has
    progress: bool = False


@dataclass
class JobSummary:
    """What a job did: ``inputs`` planned, ``done_before`` (found done in the manifest),
    ``predicted`` and ``skipped`` (over all ranks), and this process's ``rank``."""

    inputs: int
    done_before: int
    predicted: int
    skipped: int
    rank: int = 0


@dataclass(frozen=True)
class Source:
    """An input image: the file, and its ``name`` (relative path under the folder given, or
    the file name of a file given) from which its output names are made."""

    path: Path
    name: PurePosixPath


@dataclass(frozen=True)
class Task:
    """One input and the files it is to be predicted into."""

    source: InputFile
    outputs: dict[str, Path]  # format -> file
    stem: Path


def run_prediction_job(job: PredictionJob) -> JobSummary:
    """Run ``job`` in this process, one of a torchrun job's when torchrun started it."""
    from pixelwise.inference.predict import CALIBRATION_IMAGES, Segmenter

    if not Path(job.checkpoint).is_file():  # before the inputs are listed: said first
        raise CheckpointError(f"checkpoint {job.checkpoint} must be an existing file, got none "
                              "there; try a run's best.safetensors or an exported .onnx file")
    cuda = pick_device(job.device).type == "cuda"
    with process_group(cuda) as info:
        out_dir = Path(job.out_dir)
        manifest = Manifest(out_dir)
        tasks = plan(find_sources(job.inputs, job.recursive, manifest.output_files()), out_dir,
                     job.formats)
        calibration = job.calibration or [t.source.path for t in tasks[:CALIBRATION_IMAGES]]
        segmenter = Segmenter.from_checkpoint(
            job.checkpoint, device=pick_device(job.device, info), tta_flips=job.tta_flips,
            tta_scales=job.tta_scales, progress=job.progress and info.is_main,
            backend=job.backend, calibration=calibration)
        check_formats_for(segmenter.meta.num_classes, job.formats)
        settings = job_settings(job)
        key = settings_key(settings)
        todo = [t for t in tasks if not manifest.is_done(t.source, t.outputs, key)]
        mine = todo[info.rank::info.world_size]
        disagreement = agreement(todo, info)  # collective: called by every rank
        problem = disagreement or check_destinations(mine, manifest, tasks)
        if info.is_main:  # before any rank writes: the others wait in fail_together
            for folder in sorted({t.stem.parent for t in tasks}):
                remove_partial_folders(folder)
        fail_together(problem, info)
        if info.is_main:
            write_job_file(out_dir, settings, key, len(tasks))
        skipped = int(reduce_over_ranks(predict_share(segmenter, mine, job, key, info), info))
        return JobSummary(inputs=len(tasks), done_before=len(tasks) - len(todo),
                          predicted=len(todo) - skipped, skipped=skipped, rank=info.rank)


# ---- plan ------------------------------------------------------------------------------------


def find_sources(inputs: Sequence[str | Path], recursive: bool = False,
                 exclude: set[str] = frozenset()) -> list[Source]:
    """The image files of ``inputs`` sorted by absolute path, each once. Folders give their
    images (with ``recursive`` those of every subfolder too; hidden files and folders left
    out); files in ``exclude`` (absolute paths: a job's own outputs) are no inputs."""
    from pixelwise.data.io import IMAGE_SUFFIXES

    found: dict[str, Source] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            files = item.rglob("*") if recursive else item.iterdir()
            sources = [Source(p, PurePosixPath(p.relative_to(item).as_posix())) for p in files
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(item).parts)]
        elif item.is_file():
            sources = [Source(item, PurePosixPath(item.name))]
        else:
            raise DataError(f"input must be an image file or a folder, got {str(item)!r}")
        for source in sources:
            key = os.path.abspath(source.path)
            if key not in exclude:
                found.setdefault(key, source)
    if not found:
        raise DataError(f"inputs must contain images ({', '.join(IMAGE_SUFFIXES)}), got none in "
                        f"{[str(i) for i in inputs]}")
    return [found[key] for key in sorted(found)]


def output_stems(sources: Sequence[Source], out_dir: Path) -> list[Path]:
    """The naming rule: an input's outputs are named by its name without the suffix
    (``sub/a.png`` -> ``OUT/sub/a``, then ``a.png``, ``a_overlay.png``, ...), except that inputs
    whose stems coincide (``a.png`` and ``a.tif``, compared ignoring case) keep their suffix
    (``OUT/a.png``, ``OUT/a.tif`` -> ``a.png.png``, ``a.tif.png``, ``a.tif_overlay.png``, ...)."""
    stems = [source.name.with_suffix("") for source in sources]
    count = Counter(str(stem).casefold() for stem in stems)
    return [out_dir / (stem if count[str(stem).casefold()] == 1 else source.name)
            for stem, source in zip(stems, sources, strict=True)]


def plan(sources: Sequence[Source], out_dir: Path, formats: Sequence[str]) -> list[Task]:
    """A task per source; ConfigError when two inputs would write the same file."""
    tasks, writer_of = [], {}
    for source, stem in zip(sources, output_stems(sources, out_dir), strict=True):
        task = Task(InputFile.of(source.path), output_paths(stem, formats), stem)
        for path in task.outputs.values():
            other = writer_of.setdefault(str(path).casefold(), source.path)
            if other != source.path:
                raise ConfigError(
                    f"every input must have its own output files, got {other} and "
                    f"{source.path} both writing {path}; try renaming one, or predicting them "
                    "into separate --out folders")
        tasks.append(task)
    return tasks


def check_destinations(tasks: Sequence[Task], manifest: Manifest,
                       every_task: Sequence[Task]) -> PixelwiseError | None:
    """The first reason not to write ``tasks``' outputs, or None: an output that exists and is
    an input of the job (``every_task``), or a file no pixelwise job claimed or wrote."""
    inputs = {t.source.file_id: t.source.path for t in every_task}
    for task in tasks:
        for path in task.outputs.values():
            try:
                found = path.stat()
            except FileNotFoundError:
                continue
            replaced = inputs.get((found.st_dev, found.st_ino))
            if replaced is not None:
                return ConfigError(
                    f"outputs must not replace input files, got {path} for the input "
                    f"{replaced}; try another --out folder")
            if not manifest.owns(path):
                return ConfigError(
                    f"outputs must not replace files pixelwise did not write, got {path} (not "
                    f"in {manifest.out_dir / 'manifest.jsonl'}); try another --out folder, or "
                    "move the file away")
    return None


def agreement(todo: Sequence[Task], info: DistInfo) -> PixelwiseError | None:
    """ConfigError unless every rank found the same inputs left to do (each lists and sorts them
    itself; files added or removed while the ranks start would give them different shares)."""
    digest = hashlib.sha256("\n".join(t.source.key for t in todo).encode()).hexdigest()
    if same_on_every_rank(int(digest[:12], 16), info):
        return None
    return ConfigError(
        f"every torchrun process must find the same inputs to do, got {len(todo)} on rank "
        f"{info.rank} and another list on another rank; try again once no files are being added "
        "to or removed from the inputs (or the manifest)")


def job_settings(job: PredictionJob) -> dict:
    """Everything that shapes the output files (the checkpoint by its contents)."""
    return {"checkpoint": str(job.checkpoint), "checkpoint_sha256": sha256_of(Path(job.checkpoint)),
            "formats": list(job.formats), "tta_flips": list(job.tta_flips),
            "tta_scales": list(job.tta_scales), "min_area": job.min_area,
            "simplify": job.simplify,
            "background": None if job.background is None else list(job.background),
            "coco_segmentation": job.coco_segmentation, "backend": job.backend}


def settings_key(settings: dict) -> str:
    """A short digest of ``settings`` without the checkpoint's path (the same file moved is
    the same model)."""
    shaping = {k: v for k, v in settings.items() if k != "checkpoint"}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


# ---- predict ---------------------------------------------------------------------------------


class DecodedImages(Dataset):
    """``(index, image (C, H, W) float or None, georeference or None, why unreadable or None)``
    per task, decoded in a DataLoader worker: an unreadable file is data, not an exception,
    so that the job decides (stop every rank, or skip it)."""

    def __init__(self, tasks: Sequence[Task], in_channels: int, formats: Sequence[str]) -> None:
        self.tasks, self.in_channels, self.formats = tasks, in_channels, formats

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int):
        from pixelwise.data.io import to_float_chw

        path = self.tasks[index].source.path
        try:
            return index, to_float_chw(path, self.in_channels), \
                georeference_for(path, self.formats), None
        except DataError as err:
            return index, None, None, str(err)


def _as_is(item):
    return item


def default_workers(info: DistInfo) -> int:
    """Decoding processes per rank: the CPUs this rank's share of the machine has, less one
    for the rank itself, between 1 and 4."""
    per_rank = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    return min(4, max(1, per_rank - 1))


def predict_share(segmenter: Segmenter, tasks: Sequence[Task], job: PredictionJob, key: str,
                  info: DistInfo) -> int:
    """Predict this rank's ``tasks`` into their files, in lockstep with the other ranks (every
    rank takes as many steps as the largest share); return how many inputs were skipped."""
    from pixelwise.data.info import check_background

    background = (None if job.background is None
                  else check_background(job.background, segmenter.meta.num_classes))
    workers = min(default_workers(info) if job.workers is None else job.workers, len(tasks))
    loader = DataLoader(DecodedImages(tasks, segmenter.meta.in_channels, job.formats),
                        batch_size=None, num_workers=workers, collate_fn=_as_is)
    steps = int(reduce_over_ranks(len(tasks), info, op="max"))
    bar = tqdm(total=len(tasks), unit="image", disable=not job.progress or not info.is_main,
               desc="predict" if not info.enabled else f"predict (rank 0 of {info.world_size})")
    skipped = 0
    with batches_of(loader) as items, ManifestWriter(job.out_dir, info.rank) as manifest:
        for step in range(steps):
            error = None
            if step < len(tasks):
                index, chw, georef, unreadable = next(items)
                task = tasks[index]
                if unreadable is None:
                    manifest.claim(task.source, task.outputs)
                    label, cells = predicted(segmenter, chw, job.formats)
                    written = save_prediction(
                        segmenter, label, chw, task.stem, job.formats,
                        georef=georef, source_name=task.source.path.name,
                        min_area=job.min_area, simplify=job.simplify,
                        background=background, coco_segmentation=job.coco_segmentation,
                        cells=cells)
                    manifest.done(task.source, key, written)
                elif job.skip_bad:
                    log.warning("skipped %s", unreadable)
                    manifest.skipped(task.source, unreadable)
                    skipped += 1
                else:
                    error = DataError(unreadable)
                bar.update()
            fail_together(error, info)
    bar.close()
    return skipped

