"""bench/isbi2012.py and bench/camvid.py run end to end in --steps mode (a smoke test, no
accuracy claim): every installed system trains a few steps on a small piece of the real data and
gets one JSON row; the rows and pixelwise's checkpoint are written under --out. Peers whose
library is missing are skipped by the scripts themselves; without ../shared/data this is
skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.config import load_config
from pixelwise.inference.tta import DIHEDRAL
from pixelwise.models import preset

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PIXELWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
pytestmark = pytest.mark.shared_data
TINY = ["--steps", "2", "--crop", "32", "--batch-size", "2", "--threads", "1"]
# the ISBI recipe's U-Net on an encoder, shrunk: a ResNet-18 and narrow decoder widths
TINY_UNET = [*TINY, "--set", "model.options.encoder=resnet18",
             "--set", "model.options.decoder_channels=[16,8,8,8,8]"]


def installed_systems() -> list[str]:
    peers = ["smp-unet-r34"] if importlib.util.find_spec("segmentation_models_pytorch") else []
    return ["pixelwise", *peers, "tv-lraspp-mbv3"]


def bench_script(name: str, data: str | None = None):
    """bench/NAME.py as a module; skips the test when ../shared/data/DATA (default NAME) is absent."""
    if not (SHARED / (data or name)).is_dir():
        pytest.skip(f"real data {SHARED / (data or name)} is absent")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    return module


def small_isbi(root: Path) -> Path:
    """The 30 labelled slices, each cut to its top-left 64x64 (the layout the script reads)."""
    for part in ("image", "label"):
        (root / "train" / part).mkdir(parents=True)
        for i in range(30):
            pixels = np.asarray(Image.open(SHARED / "isbi2012" / "train" / part / f"{i}.png"))
            Image.fromarray(pixels[:64, :64]).save(root / "train" / part / f"{i}.png")
    return root


def small_camvid(root: Path) -> Path:
    """Four train and two val pairs of the real CamVid, in its SegNet layout."""
    for split, count in (("train", 4), ("val", 2)):
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True)
        for path in sorted((SHARED / "camvid" / split).glob("*.png"))[:count]:
            shutil.copy(path, root / split / path.name)
            shutil.copy(SHARED / "camvid" / f"{split}annot" / path.name,
                        root / f"{split}annot" / path.name)
    return root


def json_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_isbi2012_bench_trains_and_scores_every_installed_system(tmp_path, capsys):
    script = bench_script("isbi2012")
    root = small_isbi(tmp_path / "isbi2012")
    assert script.main(["--root", str(root), "--out", str(tmp_path / "out"), *TINY_UNET]) == 0
    rows = json_rows(capsys.readouterr().out)
    assert [row["system"] for row in rows] == installed_systems()
    for row in rows:
        assert row["steps"] == 2 and row["seconds"] > 0
        assert {"pixel_error", "challenge_pixel_error", "challenge_rand_error", "membrane_iou",
                "adapted_rand_error", "watershed_rand_error", "object_recall"} <= set(row)
        assert len(row["object_recall"]["all"]) == 2  # membrane, cell
    # pixelwise is scored with the EM recipe's 8 rotations and mirrors, each also at 1.25x; the
    # peers' loop with none
    assert [row["tta"] for row in rows] == ["d4 x1,1.25"] + ["none"] * (len(rows) - 1)
    scored = json.loads((tmp_path / "out" / "pixelwise" / "eval-val" / "metrics.json").read_text())
    assert scored["evaluated"]["tta"] == {"flips": list(DIHEDRAL), "scales": [1.0, 1.25]}
    assert json_rows((tmp_path / "out" / "results.jsonl").read_text()) == rows
    checkpoint = tmp_path / "out" / "pixelwise" / "last.safetensors"
    # bench/isbi2012_errors.py reads that checkpoint and scores the same slices alike
    assert bench_script("isbi2012_errors", "isbi2012").main([str(checkpoint), "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    pooled = float(printed.splitlines()[0].rsplit(" ", 1)[1])
    assert pooled == pytest.approx(rows[0]["pixel_error"], abs=1e-4)
    assert "| 0.5 |" in printed and "| 3 px |" in printed
    # bench/watershed_seeds.py reads it with the same views and scales by default
    seeds = bench_script("watershed_seeds", "isbi2012")
    assert seeds.main([str(checkpoint), "--root", str(root), "--slices", "25-29",
                       "--thresholds", "0.9", "0.95", "--threads", "1"]) == 0
    chosen = json_rows(capsys.readouterr().out)[0]
    assert (chosen["tta"], chosen["tta_scales"]) == ("d4", [1.0, 1.25])
    assert set(chosen["watershed"]) == {"0.9", "0.95"} and chosen["best"] in (0.9, 0.95)
    # the label map's components alike the benchmark's score of the same slices
    assert chosen["components"] == pytest.approx(rows[0]["adapted_rand_error"], abs=1e-6)


def test_the_realtime_system_trains_the_presets_model_in_the_tasks_recipe(tmp_path, capsys):
    script = bench_script("isbi2012")
    root = small_isbi(tmp_path / "isbi2012")
    out = tmp_path / "out"
    # the recipe's U-Net options (--set model.options.*) do not leak into the preset's model
    assert script.main(["--root", str(root), "--out", str(out), "--systems",
                        "pixelwise-realtime", *TINY_UNET]) == 0
    rows = json_rows(capsys.readouterr().out)
    assert [(row["system"], row["steps"], row["tta"]) for row in rows] == [
        ("pixelwise-realtime", 2, "d4 x1,1.25")]
    config = load_config(out / "pixelwise-realtime" / "config.yaml")
    assert (config.model.name, config.model.options) == preset("realtime")
    recipe = load_config(REPO / "configs" / "isbi2012_cpu.yaml")
    assert (config.optim.loss, config.optim.loss_options) == (recipe.optim.loss,
                                                              recipe.optim.loss_options)


def test_camvid_bench_scores_on_another_root_and_split(tmp_path, capsys):
    script = bench_script("camvid")
    root = small_camvid(tmp_path / "camvid")
    (root / "val").rename(root / "check")  # an eval split of another name, as a test split
    (root / "valannot").rename(root / "checkannot")
    shutil.copytree(root / "check", root / "val")  # pixelwise validates on val while training
    shutil.copytree(root / "checkannot", root / "valannot")
    out = tmp_path / "out"
    assert script.main(["--train-root", str(root), "--eval-root", str(root), "--eval-split",
                        "check", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    rows = json_rows(printed)
    assert [row["system"] for row in rows] == installed_systems()
    for row in rows:
        assert row["steps"] == 2
        assert len(row["iou"]) == 11 and {"mean_iou", "pixel_accuracy"} <= set(row)
        assert len(row["object_recall"]["small"]) == 11
    assert "| Pole |" in printed  # the per-class IoU table
    scored = json.loads((out / "pixelwise" / "eval-check" / "metrics.json").read_text())
    assert scored["num_images"] == 2 and scored["num_pixels"] <= 2 * 180 * 240  # at half size
    assert rows[0]["tta"] == "h"  # pixelwise scored with the street-scene recipe's mirror


def test_first_seed_starts_the_seeds_there(tmp_path, capsys):
    script = bench_script("isbi2012")
    root = small_isbi(tmp_path / "isbi2012")
    assert script.main(["--root", str(root), "--out", str(tmp_path / "out"), *TINY_UNET,
                        "--systems", "pixelwise", "--first-seed", "1"]) == 0
    out = capsys.readouterr().out
    rows = json_rows(out)
    assert [(row["system"], row["seed"]) for row in rows] == [("pixelwise", 1)]
    assert f"and {tmp_path / 'out' / 'pixelwise-seed1'}/last.safetensors" in out
    assert (tmp_path / "out" / "pixelwise-seed1" / "last.safetensors").is_file()
    assert not (tmp_path / "out" / "pixelwise").exists()
