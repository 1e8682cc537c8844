"""RGB colour-coded masks of a folder dataset from YAML, the command line and Python (issue 15,
item 5): one documented YAML form, `colour_map: [{colour: [r, g, b], class: id}, ...]`, and
`{"#rrggbb": id}`, accepted by `data check --option`, `train`, `evaluate` and `FolderDataset`,
and recorded in the run's config.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pixelwise.cli import main
from pixelwise.data import FolderDataset
from pixelwise.data.io import colour_map_from
from pixelwise.errors import ConfigError

RED, BLUE = (255, 0, 0), (0, 0, 255)
LIST_FORM = "[{colour: [0, 0, 0], class: 0}, {colour: [255, 0, 0], class: 1}, " \
            "{colour: [0, 0, 255], class: 2}]"
HEX_FORM = '{"#000000": 0, "#ff0000": 1, "#0000ff": 2}'
CONFIG = """\
model:
  name: unet
  options: {{base_channels: 4, depth: 2}}
data:
  dataset: folder
  root: {root}
  crop_size: 16
  batch_size: 2
  options:
    classes: [background, square, top]
    colour_map:
      - {{colour: [0, 0, 0], class: 0}}
      - {{colour: [255, 0, 0], class: 1}}
      - {{colour: [0, 0, 255], class: 2}}
train: {{epochs: 1, device: cpu, progress: false, out_dir: {out}}}
"""


def expected_mask() -> np.ndarray:
    mask = np.zeros((16, 16), np.int64)
    mask[4:10, 4:10] = 1
    mask[:2] = 2
    return mask


@pytest.fixture
def rgb_folder(tmp_path) -> Path:
    """`train` and `val` splits of two 16x16 images each with RGB masks (black, red, blue)."""
    rng = np.random.default_rng(0)
    colours = np.array([(0, 0, 0), RED, BLUE], np.uint8)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (tmp_path / split / folder).mkdir(parents=True)
        for i in range(2):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / split / "images" / f"{i}.png")
            Image.fromarray(colours[expected_mask()]).save(tmp_path / split / "masks" / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize("form", [LIST_FORM, HEX_FORM], ids=["list", "hex"])
def test_data_check_takes_the_yaml_forms_as_an_option(form, rgb_folder, capsys):
    argv = ["data", "check", str(rgb_folder), "--dataset", "folder", "--option", "classes=3",
            "--option", f"colour_map={form}"]
    assert main(argv) == 0
    assert "No problems found." in capsys.readouterr().out


def test_train_reads_the_yaml_form_and_records_it_in_config_yaml(rgb_folder, tmp_path, capsys):
    config = tmp_path / "rgb.yaml"
    config.write_text(CONFIG.format(root=rgb_folder, out=tmp_path / "run"))
    assert main(["train", str(config)]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["options"]["colour_map"] == [
        {"colour": [0, 0, 0], "class": 0}, {"colour": [255, 0, 0], "class": 1},
        {"colour": [0, 0, 255], "class": 2}]
    # evaluate takes the other form on the command line, on the same files
    best = tmp_path / "run" / "best.safetensors"
    assert main(["evaluate", str(best), "--data", "folder", "--root", str(rgb_folder),
                 "--option", "classes=[background, square, top]",
                 "--option", f"colour_map={HEX_FORM}", "--out", str(tmp_path / "eval")]) == 0
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scores["num_images"] == 2 and scores["num_pixels"] == 2 * 16 * 16


def test_python_config_with_tuple_keys_is_recorded_in_the_yaml_form(rgb_folder, tmp_path):
    from pixelwise.config import load_config, to_yaml

    config = load_config(None, ["data.dataset=folder", f"data.root={rgb_folder}",
                                "data.options.classes=3"])
    config.data.options["colour_map"] = {(0, 0, 0): 0, RED: 1, BLUE: 2}
    saved = yaml.safe_load(to_yaml(config))
    assert saved["data"]["options"]["colour_map"][1] == {"colour": [255, 0, 0], "class": 1}


@pytest.mark.parametrize("form", [
    {(0, 0, 0): 0, RED: 1, BLUE: 2},
    {"#000000": 0, "#FF0000": 1, "#0000ff": 2},
    [{"colour": [0, 0, 0], "class": 0}, {"colour": [255, 0, 0], "class": 1},
     {"colour": (0, 0, 255), "class": 2}],
], ids=["python", "hex", "list"])
def test_folder_dataset_decodes_every_form_alike(form, rgb_folder):
    data = FolderDataset(rgb_folder / "train" / "images", rgb_folder / "train" / "masks",
                         classes=3, colour_map=form)
    assert np.array_equal(data[0][1].numpy(), expected_mask())


@pytest.mark.parametrize(("value", "fragment"), [
    ([[0, 0, 0]], "got [[0, 0, 0]]"),
    ({"#ff00": 1}, "got the colour '#ff00'"),
    ([{"colour": [256, 0, 0], "class": 1}], "got the colour [256, 0, 0]"),
    ({"#ff0000": "red"}, "got the class 'red'"),
])
def test_a_malformed_colour_map_names_the_documented_form(value, fragment):
    with pytest.raises(ConfigError, match=r"colour_map must be a list of \{colour: \[r, g, b\], "
                                          r"class: id\} or a mapping \{'#rrggbb': id\}") as err:
        colour_map_from(value)
    assert fragment in str(err.value)


def test_the_folder_example_of_the_datasets_page_is_a_valid_config(tmp_path):
    import re

    from pixelwise.config import load_config

    page = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    example = re.search(r"```yaml\n(# configs/my_folder.yaml.*?)```", page, re.S)[1]
    (tmp_path / "my_folder.yaml").write_text(example)
    options = load_config(tmp_path / "my_folder.yaml").data.options
    assert options["classes"] == ["background", "road", "car"]
    assert colour_map_from(options["colour_map"]) == {(0, 0, 0): 0, (128, 64, 128): 1,
                                                      (0, 0, 142): 2, (255, 255, 255): 255}
