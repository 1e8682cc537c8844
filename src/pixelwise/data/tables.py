"""The published datasets' label tables: class names, colours and what each mask value means.

Data, not code: `pixelwise.data.datasets` reads them into one `DatasetInfo` and one value map
(raw mask value -> class id or ignore index) per layout.
"""

from __future__ import annotations

from pixelwise.data.info import DatasetInfo
from pixelwise.data.palette import default_palette

IGNORE = 255

# Pascal VOC 2012: 21 classes (FCN §4.1), in the devkit's colours; masks store the class ids.
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
VOC_INFO = DatasetInfo(VOC_CLASSES, default_palette(len(VOC_CLASSES)), IGNORE, in_channels=3)

# CamVid, SegNet's 11 classes in the SegNet tutorial's camvid11 colours; value 11 is void.
CAMVID = [
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
]
CAMVID_INFO = DatasetInfo([name for name, _ in CAMVID], [colour for _, colour in CAMVID], IGNORE)
CAMVID_VALUES = {**{i: i for i in range(len(CAMVID))}, len(CAMVID): IGNORE}

# ISBI 2012 EM slices (U-Net §4): label 0 is membrane (cell border), 255 cell interior.
ISBI_INFO = DatasetInfo(["membrane", "cell"], [(0, 0, 0), (255, 255, 255)], IGNORE, in_channels=1)
ISBI_VALUES = {0: 0, 255: 1}

# Cityscapes, the 19 evaluated classes in train-id order: name, colour, label id in the gtFine
# *_labelIds.png masks (cityscapesScripts labels.py). Every other label id is ignored.
CITYSCAPES = [
    ("road", (128, 64, 128), 7),
    ("sidewalk", (244, 35, 232), 8),
    ("building", (70, 70, 70), 11),
    ("wall", (102, 102, 156), 12),
    ("fence", (190, 153, 153), 13),
    ("pole", (153, 153, 153), 17),
    ("traffic light", (250, 170, 30), 19),
    ("traffic sign", (220, 220, 0), 20),
    ("vegetation", (107, 142, 35), 21),
    ("terrain", (152, 251, 152), 22),
    ("sky", (70, 130, 180), 23),
    ("person", (220, 20, 60), 24),
    ("rider", (255, 0, 0), 25),
    ("car", (0, 0, 142), 26),
    ("truck", (0, 0, 70), 27),
    ("bus", (0, 60, 100), 28),
    ("train", (0, 80, 100), 31),
    ("motorcycle", (0, 0, 230), 32),
    ("bicycle", (119, 11, 32), 33),
]
CITYSCAPES_INFO = DatasetInfo(
    [name for name, _, _ in CITYSCAPES], [colour for _, colour, _ in CITYSCAPES], IGNORE
)
CITYSCAPES_TRAIN_IDS = {label_id: train_id for train_id, (_, _, label_id) in enumerate(CITYSCAPES)}
CITYSCAPES_VALUES = {value: CITYSCAPES_TRAIN_IDS.get(value, IGNORE) for value in range(256)}
