"""`pixelwise predict` on folders of files, as users met it (issue 15 items 1, 2, 4, 15; issue
12's resumable manifest): never replacing what it did not write, one set of outputs per input,
bad files stopped at or skipped, progress bars, and a killed job finished by running it again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_images
from PIL import Image
from predict_kill_driver import killed_at

from pixelwise.cli import main
from pixelwise.inference.predict import Segmenter


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def done_lines(out: Path) -> list[dict]:
    lines = [json.loads(line) for path in sorted(out.glob("manifest*.jsonl"))
             for line in path.read_text().splitlines()]
    return [line for line in lines if "outputs" in line]


def test_predicting_into_the_input_folder_is_refused_before_anything_is_written(
        tiny_checkpoint, images, capsys):
    before = files_under(images)
    assert main(["predict", str(tiny_checkpoint), str(images), "--out", str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: outputs must not replace input files, got ")
    assert str(images / "img00.png") in err and "\n" not in err
    assert files_under(images) == before  # not one byte changed, nothing added


def test_a_file_pixelwise_did_not_write_is_never_replaced(tiny_checkpoint, images, tmp_path,
                                                          capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img03_overlay.png").write_bytes(b"the user's own file")
    assert main(["predict", str(tiny_checkpoint), str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "must not replace files pixelwise did not write" in err
    assert str(out / "img03_overlay.png") in err
    assert files_under(out) == {"img03_overlay.png": b"the user's own file"}


def test_its_own_earlier_outputs_are_replaced_when_the_settings_change(tiny_checkpoint, images,
                                                                       tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(images), "--out", str(out)]) == 0
    assert main(["predict", str(tiny_checkpoint), str(images), "--out", str(out), "--tta"]) == 0
    assert "wrote png, overlay for 13 images" in capsys.readouterr().out  # all redone
    mirrored = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", tta_flips=("h",))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "img04.png")),
                                  mirrored.predict(images / "img04.png"))


def test_inputs_sharing_a_stem_keep_their_suffix_in_their_output_names(tiny_checkpoint,
                                                                       tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    pixels = {name: rng.integers(0, 256, (32, 36, 3), dtype=np.uint8) for name in "abc"}
    Image.fromarray(pixels["a"]).save(folder / "a.png")
    tifffile.imwrite(folder / "a.tif", pixels["b"])
    Image.fromarray(pixels["c"]).save(folder / "c.png")
    out = tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(folder), "--out", str(out)]) == 0
    names = sorted(n for n in files_under(out) if not n.startswith(("job", "manifest")))
    assert names == ["a.png.png", "a.png_legend.png", "a.png_overlay.png", "a.tif.png",
                     "a.tif_legend.png", "a.tif_overlay.png", "c.png", "c_legend.png",
                     "c_overlay.png"]
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    for source, label in (("a.png", "a.png.png"), ("a.tif", "a.tif.png"), ("c.png", "c.png")):
        np.testing.assert_array_equal(np.asarray(Image.open(out / label)),
                                      segmenter.predict(folder / source))


def test_two_inputs_that_would_write_one_file_are_refused(tiny_checkpoint, tmp_path, capsys):
    write_images(tmp_path / "x", count=1)
    write_images(tmp_path / "y", count=1)
    argv = ["predict", str(tiny_checkpoint), str(tmp_path / "x"), str(tmp_path / "y"), "--out",
            str(tmp_path / "out")]
    assert main(argv) == 2
    assert (f"error: every input must have its own output files, got {tmp_path / 'x/img00.png'} "
            f"and {tmp_path / 'y/img00.png'} both writing") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_recursive_takes_subfolders_and_mirrors_them_in_the_output(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    write_images(folder, count=1)
    write_images(folder / "day2", count=2)
    out = tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(folder), "--out", str(out / "flat"),
                 "--format", "png"]) == 0
    assert main(["predict", str(tiny_checkpoint), str(folder), "--out", str(out / "deep"),
                 "--format", "png", "--recursive"]) == 0
    assert sorted(p.name for p in (out / "flat").glob("*.png")) == ["img00.png"]
    assert sorted(p.relative_to(out / "deep").as_posix() for p in (out / "deep").rglob("*.png")) \
        == ["day2/img00.png", "day2/img01.png", "img00.png"]


@pytest.fixture
def one_bad_image(images) -> Path:
    """The 13 images, the second of which (img01.png) is not an image."""
    (images / "img01.png").write_text("not an image")
    return images


def test_predict_stops_at_the_first_unreadable_image(tiny_checkpoint, one_bad_image, tmp_path,
                                                     capsys):
    out = tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(one_bad_image), "--out", str(out),
                 "--format", "png", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {one_bad_image / 'img01.png'}: the file must be a readable")
    assert sorted(p.name for p in out.glob("img*")) == ["img00.png"]  # nothing after it


def test_skip_bad_reports_each_skipped_file_and_exits_1(tiny_checkpoint, one_bad_image,
                                                        tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(one_bad_image), "--out", str(out),
                 "--format", "png", "--skip-bad"]) == 1
    assert f"skipped {one_bad_image / 'img01.png'}: the file must be a readable" in caplog.text
    assert "error: skipped 1 of 13 inputs" in capsys.readouterr().err
    assert len(list(out.glob("img*.png"))) == 12
    assert main(["predict", "--manifest", str(out)]) == 0
    report = capsys.readouterr().out
    assert "12 of 13 inputs done (92 %), 1 skipped, 0 to do" in report
    assert "img01.png: the file must be a readable" in report


def test_progress_bars_are_off_when_stderr_is_not_a_terminal(tiny_checkpoint, tmp_path, capsys):
    image = tmp_path / "big.png"
    Image.fromarray(np.zeros((1030, 40, 3), np.uint8)).save(image)
    argv = ["predict", str(tiny_checkpoint), str(image), "--format", "npy"]
    assert main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal
    assert main([*argv, "--out", str(tmp_path / "asked"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "tiles of a 1030x40 image" in err and "predict" in err


def test_a_killed_job_run_again_redoes_only_what_was_not_finished(tiny_checkpoint, images,
                                                                  tmp_path, capsys):
    out, whole = tmp_path / "out", tmp_path / "whole"
    argv = ["predict", str(tiny_checkpoint), str(images), "--format", "png", "overlay", "npy"]
    assert killed_at(6, [*argv, "--out", str(out), "--workers", "0"]) == -9
    done = {Path(line["input"]).name for line in done_lines(out)}
    assert done == {f"img{i:02d}.png" for i in range(5)}  # the sixth was half-written
    assert not (out / "img05.png").exists() and list(out.glob(".pixelwise-partial-*"))
    assert main(["predict", "--manifest", str(out)]) == 0
    assert "5 of 13 inputs done (38 %), 0 skipped, 8 to do" in capsys.readouterr().out
    times = {p.name: p.stat().st_mtime_ns for p in out.glob("img0[0-4]*")}

    assert main([*argv, "--out", str(out)]) == 0
    assert "for 8 images" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("img0[0-4]*")} == times
    assert len(done_lines(out)) == 13 and not list(out.glob(".pixelwise-partial-*"))
    assert main([*argv, "--out", str(whole)]) == 0
    outputs = {k: v for k, v in files_under(out).items() if k.startswith("img")}
    assert outputs == {k: v for k, v in files_under(whole).items() if k.startswith("img")}
    assert main([*argv, "--out", str(out)]) == 0  # nothing left: nothing done again
    assert "for 0 images" in capsys.readouterr().out and len(done_lines(out)) == 13
