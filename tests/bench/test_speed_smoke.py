"""bench/speed.py runs end to end at --quick sizes and writes the figures it prints."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "speed.py"


def load_speed(monkeypatch):
    """bench/speed.py as a module (registered: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_speed", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.heavy
def test_quick_run_writes_every_figure_and_the_ratio_to_the_peer(tmp_path, monkeypatch, capsys):
    out = tmp_path / "speed.json"
    # torchvision (a dependency) provides the peer, so this pair never needs smp. In this
    # process (its imports already paid), as `python bench/speed.py ...` would run.
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--quick", "--threads", "1", "--models",
                                      "fcn8s_mobilenet_v3_large,tv_lraspp", "--json", str(out)])
    threads = torch.get_num_threads()
    try:
        load_speed(monkeypatch).main()
    finally:
        torch.set_num_threads(threads)
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {row["label"]: row for row in result["models"]}
    assert sorted(rows) == ["fcn8s_mobilenet_v3_large", "tv_lraspp_mobilenet_v3"]
    for row in rows.values():
        assert row["parameters"] > 1e6
        assert row["gflop"]["step"] > row["gflop"]["frame"] > 0  # backward costs more than forward
        assert {"frame", "square", "step_fp32"} <= set(row["seconds"])
        assert row["rss_mib"]["train"] >= row["rss_mib"]["forward"] > 0
    assert result["matmul_gflops"]["fp32"] > 0
    [pair] = result["pairs"]
    assert (pair["pixelwise"], pair["peer"]) == ("fcn8s_mobilenet_v3_large",
                                                 "tv_lraspp_mobilenet_v3")
    assert pair["frame"] > 0 and pair["step_fp32"] > 0
    assert "ratio pixelwise / peer" in stdout


@pytest.mark.heavy
def test_realtime_fps_times_every_system_frame_to_full_size_label_map(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))  # the onnx export
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as `python bench/realtime_fps.py` runs
    spec = importlib.util.spec_from_file_location("bench_realtime_fps", SCRIPT.parent / "realtime_fps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:  # main() asserts each system's label map is 360x480 before timing it
        assert module.main(["--rounds", "1", "--threads", "1", "--json", str(tmp_path / "fps.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = {row["system"]: row for row in json.loads((tmp_path / "fps.json").read_text())}
    assert sorted(rows) == ["lraspp torch", "lraspp torch, half size", "realtime onnx",
                            "realtime onnx, half size", "realtime torch",
                            "realtime torch, half size"]
    assert rows["lraspp torch"]["time_over_lraspp"] == 1.0
    assert all(row["ms"] > 0 and row["fps"] > 0 for row in rows.values())
    assert "realtime torch, half size" in capsys.readouterr().out
