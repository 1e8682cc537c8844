"""bench/data_loading.py runs on a tiny CamVid folder and prints one row per epoch (a smoke
test: the timings themselves are not checked)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_data_loading_bench_prints_a_row_per_epoch(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):
        for folder, array in (("train", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)),
                              ("trainannot", rng.integers(0, 12, (20, 24), dtype=np.uint8))):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(tmp_path / folder / f"{i}.png")
    spec = importlib.util.spec_from_file_location("bench_data_loading",
                                                  REPO / "bench" / "data_loading.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(REPO / "configs" / "camvid_cpu.yaml"), f"data.root={tmp_path}",
                 "data.crop_size=[8,8]", "--epochs", "3", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if re.fullmatch(r"\| \d \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2", "3"]
