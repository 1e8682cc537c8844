"""The HTML evaluation report: its sections, its gallery of lowest-IoU images, and the per-image
IoU it is sorted by (hand-checked on a 2x2 example)."""

from __future__ import annotations

import base64
import io
import math
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.checkpoint import ModelMeta, save_weights
from pixelwise.data import open_dataset
from pixelwise.report import WorstImages, error_map, write_report

SECTIONS = ["what-was-evaluated", "metrics", "per-class-iou", "confusion-matrix",
            "object-recall-by-size", "lowest-iou-images"]  # evaluate always scores object recall


class ReportParser(HTMLParser):
    """Section ids, gallery samples and the decoded images of each sample."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.samples: list[list[Image.Image]] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "div" and attrs.get("class") == "sample":
            self.samples.append([])
        elif tag == "img" and self.samples:
            header, data = attrs["src"].split(",", 1)
            assert header == "data:image/png;base64"
            self.samples[-1].append(Image.open(io.BytesIO(base64.b64decode(data))))
        self._in_title = tag == "h3"

    def handle_data(self, data):
        if self._in_title:
            self.titles.append(data)
            self._in_title = False


def parse(path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text())
    return parser


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory):
    """An untrained tiny U-Net with the synthetic data's classes (its IoU is low: a gallery)."""
    from pixelwise.models import build

    info = open_dataset("synthetic", None, "val", n=1, size=32).info
    torch.manual_seed(0)
    options = {"base_channels": 4, "depth": 2}
    model = build("unet", num_classes=info.num_classes, **options)
    meta = ModelMeta(name="unet", num_classes=info.num_classes, options=options,
                     classes=list(info.classes), palette=[tuple(c) for c in info.palette],
                     ignore_index=info.ignore_index, in_channels=info.in_channels,
                     mean=[0.5] * 3, std=[0.25] * 3)
    path = tmp_path_factory.mktemp("report") / "tiny.safetensors"
    save_weights(path, model, meta)
    return path


@pytest.fixture(scope="module")
def evaluated(synthetic_checkpoint, tmp_path_factory):
    from pixelwise.engine.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval")
    scores = evaluate(synthetic_checkpoint, "synthetic", split="val", out_dir=out, device="cpu",
                      progress=False, report=True, batch_size=4, n=10, size=32)
    return scores, out / "report.html"


def test_report_has_every_section_and_no_outside_resource(evaluated):
    scores, path = evaluated
    assert scores["files"]["report"] == str(path)
    parser = parse(path)
    assert parser.sections == SECTIONS  # no object recall in these scores: no section
    text = path.read_text()
    assert "http://" not in text and "https://" not in text
    assert "tiny.safetensors" in text  # the checkpoint is named


def test_gallery_shows_the_lowest_iou_images_with_four_panels(evaluated):
    scores, path = evaluated
    parser = parse(path)
    assert len(parser.samples) == 8  # WorstImages keeps 8 of the 10 images
    for panels in parser.samples:
        assert len(panels) == 4
        assert all(panel.size == (32, 32) and panel.mode == "RGB" for panel in panels)
    worst = sorted(range(10), key=lambda i: (scores["per_image_iou"][i], i))[:8]
    assert [title.split(":")[0] for title in parser.titles] == [f"image {i}" for i in worst]


def test_per_image_iou_is_each_images_own_mean_iou():
    gallery = WorstImages(num_classes=2, ignore_index=255, mean=[0.0], std=[1.0], keep=1)
    prediction = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [1, 1]]])
    target = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [1, 255]]])
    gallery(torch.zeros(2, 1, 2, 2), prediction, target)
    # image 0: class 0 IoU 1/2 (1 hit, 1 missed), class 1 IoU 2/3 (2 hits, 1 false): mean 7/12
    assert gallery.per_image_iou == pytest.approx([7 / 12, 1.0])
    assert [entry.index for entry in gallery.worst] == [0]


def test_images_without_labelled_pixels_are_left_out_of_the_gallery():
    gallery = WorstImages(num_classes=2, ignore_index=255, mean=[0.0], std=[1.0])
    gallery(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long),
            torch.full((1, 2, 2), 255))
    assert math.isnan(gallery.per_image_iou[0]) and gallery.worst == []


def test_error_map_marks_wrong_red_and_ignored_blue():
    image = np.full((1, 3, 3), 100, np.uint8)
    shown = error_map(image, target=np.array([[0, 1, 255]]), prediction=np.array([[0, 0, 0]]),
                      ignore_index=255)
    assert shown[0].tolist() == [[35, 35, 35], [235, 30, 40], [70, 90, 200]]


def test_object_recall_is_shown_when_the_scores_have_it(evaluated, tmp_path):
    scores, _ = evaluated
    recall = {"circle": {"small": 0.25, "medium": 0.5, "large": None}}
    path = write_report(tmp_path / "r.html", {**scores, "object_recall": recall},
                        palette=[(0, 0, 0)] * len(scores["classes"]), about={"checkpoint": "x"})
    parser = parse(path)
    assert "object-recall-by-size" in parser.sections
    assert "<th>small</th>" in path.read_text() and "25.00" in path.read_text()


def test_cli_report_flag_writes_the_report(synthetic_checkpoint, tmp_path, capsys):
    from pixelwise.cli import main

    path = tmp_path / "where" / "mine.html"
    assert main(["evaluate", str(synthetic_checkpoint), "--data", "synthetic", "--device", "cpu",
                 "--option", "n=2", "--option", "size=32", "--out", str(tmp_path / "e"),
                 "--report", str(path)]) == 0
    assert path.is_file() and str(path) in capsys.readouterr().out
