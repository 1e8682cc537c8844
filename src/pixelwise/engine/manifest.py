"""The record a prediction job keeps in its output folder: what is done, and which files are its.

``pixelwise predict ... --out DIR`` appends one JSON line per event to ``DIR/manifest.jsonl``
(the only process, or rank 0 under torchrun) or ``DIR/manifest.rank<R>.jsonl`` (rank R > 0),
so that no two processes, on one machine or several, append to one file. Reading merges every
``manifest*.jsonl`` of the folder, ordered by the lines' times. The lines:

- claim, before an input's outputs are moved into place (from then on the names are the job's
  own, and a re-run may replace them):
  ``{"input": ABS_PATH, "claim": [OUT, ...], "time": T}``
- done, once every output is in place:
  ``{"input": ABS_PATH, "size": BYTES, "mtime_ns": NS, "settings": KEY,
  "outputs": {FORMAT: {"path": OUT, "bytes": N, "sha256": HEX}}, "time": T}``
- skipped, an unreadable input under ``--skip-bad``:
  ``{"input": ABS_PATH, "skipped": REASON, "time": T}``

``OUT`` paths are relative to ``DIR`` (POSIX separators), so the folder can be moved. ``KEY``
stands for the settings that shape the outputs (checkpoint contents, formats, TTA, vector
options): an input done with other settings is done again. Each line goes out in one ``write``
to a file opened for appending, then is flushed and fsynced; a line torn by a kill (the last of
its file) is ignored when read, and the next append starts on a fresh line.

``DIR/job.json`` (written by rank 0 at each start, atomically) holds the settings and the number
of inputs, for :func:`progress_report` (``pixelwise predict --manifest DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelwise.checkpoint import atomic_write_bytes
from pixelwise.errors import DataError

JOB_FILE = "job.json"


def manifest_name(rank: int) -> str:
    """``manifest.jsonl`` for rank 0 (and a single process), ``manifest.rank<R>.jsonl`` else."""
    return "manifest.jsonl" if rank == 0 else f"manifest.rank{rank}.jsonl"


@dataclass(frozen=True)
class InputFile:
    """An input file as the manifest knows it: ``key`` (its absolute path), size and time of
    last change; ``file_id`` (device, inode) recognises it under another name."""

    path: Path
    key: str
    size: int
    mtime_ns: int
    file_id: tuple[int, int]

    @classmethod
    def of(cls, path: Path) -> InputFile:
        found = path.stat()
        return cls(path, os.path.abspath(path), found.st_size, found.st_mtime_ns,
                   (found.st_dev, found.st_ino))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """What the manifest files of ``out_dir`` say, merged; a later line about an input replaces
    what earlier ones said about it."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.done: dict[str, dict[str, Any]] = {}  # input key -> its done line
        self.skipped: dict[str, str] = {}  # input key -> why
        self.owned: set[str] = set()  # output paths (relative) that a job claimed or wrote
        self.last_time: float | None = None
        records = [r for path in sorted(self.out_dir.glob("manifest*.jsonl"))
                   for r in _records(path)]
        for record in sorted(records, key=lambda r: r.get("time", 0.0)):
            self._add(record)

    def _add(self, record: dict[str, Any]) -> None:
        key = record.get("input")
        if not isinstance(key, str):
            return
        self.last_time = record.get("time", self.last_time)
        if "claim" in record:  # outputs about to be (re)written: not done until a done line
            self.owned.update(record["claim"])
            self.done.pop(key, None)
        elif "outputs" in record:
            self.owned.update(output["path"] for output in record["outputs"].values())
            self.done[key] = record
            self.skipped.pop(key, None)
        elif "skipped" in record:
            self.skipped[key] = record["skipped"]
            self.done.pop(key, None)

    def owns(self, path: Path) -> bool:
        """Whether ``path`` (under the output folder) was claimed or written by a job."""
        return relative(path, self.out_dir) in self.owned

    def output_files(self) -> set[str]:
        """Absolute paths of every file a job claimed or wrote: never inputs of a later job."""
        return {os.path.abspath(self.out_dir / path) for path in self.owned}

    def is_done(self, source: InputFile, outputs: dict[str, Path], settings: str) -> bool:
        """Whether ``source`` (unchanged since) was done with ``settings`` into exactly
        ``outputs``, each still there with its recorded size."""
        record = self.done.get(source.key)
        if record is None or (record["settings"], record["size"], record["mtime_ns"]) != (
                settings, source.size, source.mtime_ns):
            return False
        recorded = {fmt: output["path"] for fmt, output in record["outputs"].items()}
        if recorded != {fmt: relative(path, self.out_dir) for fmt, path in outputs.items()}:
            return False
        return all(_size(self.out_dir / o["path"]) == o["bytes"]
                   for o in record["outputs"].values())

    def done_with(self, settings: str) -> list[dict[str, Any]]:
        """The done lines of ``settings`` whose outputs are all still there, whole."""
        return [record for record in self.done.values() if record["settings"] == settings and all(
            _size(self.out_dir / o["path"]) == o["bytes"] for o in record["outputs"].values())]


def relative(path: Path, out_dir: Path) -> str:
    """``path`` as the manifest records it: relative to ``out_dir``, with ``/``."""
    return Path(os.path.relpath(path, out_dir)).as_posix()


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn by a kill while being written: its input is not done
        if isinstance(record, dict):
            records.append(record)
    return records


class ManifestWriter:
    """Appends this rank's lines to its manifest file (a context manager)."""

    def __init__(self, out_dir: str | Path, rank: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / manifest_name(rank)
        torn = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if torn:
            self._write(b"\n")

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        os.close(self._fd)

    def claim(self, source: InputFile, outputs: dict[str, Path]) -> None:
        self._append({"input": source.key,
                      "claim": [relative(path, self.out_dir) for path in outputs.values()]})

    def done(self, source: InputFile, settings: str, written: dict[str, Path]) -> None:
        outputs = {fmt: {"path": relative(path, self.out_dir), "bytes": path.stat().st_size,
                         "sha256": sha256_of(path)} for fmt, path in written.items()}
        self._append({"input": source.key, "size": source.size, "mtime_ns": source.mtime_ns,
                      "settings": settings, "outputs": outputs})

    def skipped(self, source: InputFile, reason: str) -> None:
        self._append({"input": source.key, "skipped": reason})

    def _append(self, record: dict[str, Any]) -> None:
        self._write((json.dumps({**record, "time": time.time()}) + "\n").encode())

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)


def write_job_file(out_dir: Path, settings: dict[str, Any], key: str, inputs: int) -> None:
    """``job.json``: the settings (and their key) and how many inputs the job has."""
    record = {"settings": settings, "key": key, "inputs": inputs,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_bytes(out_dir / JOB_FILE, json.dumps(record, indent=2).encode())


def progress_report(out_dir: str | Path) -> str:
    """How far the prediction job in ``out_dir`` has got, from its files alone (a few lines)."""
    out_dir = Path(out_dir)
    job_path = out_dir / JOB_FILE
    if not job_path.is_file():
        raise DataError(f"{out_dir} must hold a prediction job (job.json, manifest.jsonl), got "
                        f"none; try pixelwise predict CHECKPOINT INPUT... --out {out_dir} first")
    job = json.loads(job_path.read_text())
    manifest = Manifest(out_dir)
    done = manifest.done_with(job["key"])
    total, skipped = job["inputs"], len(manifest.skipped)
    to_do = max(total - len(done) - skipped, 0)
    files = [o for record in done for o in record["outputs"].values()]
    settings = job["settings"]
    lines = [
        f"prediction job in {out_dir}: {len(done)} of {total} inputs done "
        f"({100 * len(done) / max(total, 1):.0f} %), {skipped} skipped, {to_do} to do",
        f"  {len(files)} output files ({_megabytes(sum(o['bytes'] for o in files))}), formats "
        f"{', '.join(settings['formats'])}, checkpoint {settings['checkpoint']}, "
        f"started {job['started']}",
    ]
    if manifest.last_time is not None:
        lines.append(f"  last entry {time.time() - manifest.last_time:.0f} s ago"
                     + ("; run the same command again to finish" if to_do else ""))
    lines += [f"  skipped {reason}" for _, reason in sorted(manifest.skipped.items())]
    return "\n".join(lines)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"
