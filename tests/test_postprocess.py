"""Instances, polygons and their exports, checked on hand-drawn shapes and rasterised back
independently (shapely point-in-polygon at pixel centres, pycocotools RLE decoding)."""

import json

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
mask_utils = pytest.importorskip("pycocotools.mask")

from pixelwise.postprocess import (  # noqa: E402
    GeoReference,
    class_areas,
    find_instances,
    to_coco,
    to_geojson,
)

SIZE = 64


def rasterise(polygon, height=SIZE, width=SIZE) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (holes excluded)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return shapely.contains_xy(polygon, cols + 0.5, rows + 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def shapes() -> dict[str, np.ndarray]:
    """Three hand-made masks in separate corners of a 64x64 image."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    ring = np.hypot(rows - 15, cols - 15)
    annulus = (ring < 13) & (ring > 5)  # a disk with a round hole
    angle = np.arctan2(rows - 45, cols - 18)
    radius = np.hypot(rows - 45, cols - 18)
    star = radius < 9 + 5 * np.cos(5 * angle)  # five-pointed, concave outline
    frame = np.zeros((SIZE, SIZE), bool)
    frame[34:62, 34:62] = True
    frame[38:44, 38:58] = False  # two rectangular holes
    frame[50:58, 40:46] = False
    return {"annulus": annulus, "star": star, "frame": frame}


def label_map() -> np.ndarray:
    masks = shapes()
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[masks["annulus"]] = 1
    label[masks["star"]] = 2
    label[masks["frame"]] = 2
    return label


def test_polygons_rasterise_back_to_instance_masks():
    masks = shapes()
    instances = find_instances(label_map(), background=(0,))
    assert len(instances) == 3
    for instance in instances:
        drawn = rasterise(instance.polygon)
        best = max(masks.values(), key=lambda mask: iou(mask, drawn))
        assert iou(best, drawn) > 0.99
    holes = sorted(len(instance.polygon.interiors) for instance in instances)
    assert holes == [0, 1, 2]  # star, annulus, frame


def test_instance_boxes_areas_and_classes_by_hand():
    label = np.zeros((6, 8), np.uint8)
    label[1:3, 2:5] = 1  # 2x3 block: box (x=2, y=1, w=3, h=2), 6 pixels
    label[4, 6] = 1  # single pixel
    label[5, 0:2] = 3
    instances = find_instances(label, background=(0,))
    assert [(i.class_id, i.bbox, i.area) for i in instances] == [
        (1, (2, 1, 3, 2), 6), (1, (6, 4, 1, 1), 1), (3, (0, 5, 2, 1), 2)]
    np.testing.assert_array_equal(class_areas(label, 4), [48 - 9, 7, 0, 2])


def test_diagonal_neighbours_are_one_instance():
    label = np.eye(4, dtype=np.uint8)
    (instance,) = find_instances(label, background=(0,))
    assert instance.area == 4
    np.testing.assert_array_equal(rasterise(instance.polygon, 4, 4), label.astype(bool))


def test_every_class_is_an_object_unless_named_background():
    label = np.zeros((4, 4), np.uint8)
    label[0, 0] = 1
    assert [i.class_id for i in find_instances(label)] == [0, 1]
    assert [i.class_id for i in find_instances(label, background=(0,))] == [1]


def test_min_area_drops_small_components():
    label = np.zeros((8, 8), np.uint8)
    label[0:3, 0:3] = 1
    label[6, 6] = 1
    assert [i.area for i in find_instances(label, background=(0,), min_area=2)] == [9]


def test_simplify_reduces_vertices_and_keeps_shape():
    exact = find_instances(label_map(), background=(0,))
    simple = find_instances(label_map(), background=(0,), simplify=1.0)
    for a, b in zip(exact, simple, strict=True):
        assert len(b.polygon.exterior.coords) < len(a.polygon.exterior.coords)
        assert iou(rasterise(a.polygon), rasterise(b.polygon)) > 0.9


def street_map() -> np.ndarray:
    """`label_map()` plus objects that touch: class 1 and 3 blocks sharing an edge, a class 3
    block joined to another only diagonally (one 8-connected object), and a class 3 object in
    the annulus' hole."""
    label = label_map()
    label[2:10, 36:50] = 1
    label[10:20, 36:50] = 3
    label[2:10, 50:60] = 3  # touches the lower class 3 block at one corner only
    label[13:17, 13:17] = 3  # inside the annulus' hole
    return label


def coco_masks(coco: dict, tmp_path) -> list[np.ndarray]:
    """Each annotation's mask as pycocotools reads the written file (`COCO.annToMask`)."""
    from pycocotools.coco import COCO

    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    reader = COCO(str(path))
    return [reader.annToMask(a).astype(bool) for a in reader.loadAnns(reader.getAnnIds())]


@pytest.mark.parametrize("segmentation", ["auto", "rle"])
def test_coco_read_back_by_pycocotools_is_the_label_map(segmentation, tmp_path):
    label = street_map()
    instances = find_instances(label, background=(0,))
    coco = to_coco(instances, SIZE, SIZE, segmentation=segmentation)
    masks = coco_masks(coco, tmp_path)
    assert len(masks) == len(instances) == 6
    union = np.zeros((SIZE, SIZE), np.uint8)
    for annotation, instance, mask in zip(coco["annotations"], instances, masks, strict=True):
        x, y, w, h = instance.bbox
        expected = np.zeros((SIZE, SIZE), bool)
        expected[y:y + h, x:x + w] = instance.mask
        np.testing.assert_array_equal(mask, expected)  # exact, polygons included
        assert annotation["area"] == mask.sum() == instance.area
        assert not union[mask].any()  # touching objects do not overlap
        union[mask] = annotation["category_id"] - 1
    np.testing.assert_array_equal(union, label)


def test_coco_writes_objects_with_holes_as_rle_and_others_as_polygons():
    coco = to_coco(find_instances(street_map(), background=(0,)), SIZE, SIZE)
    kinds = {(a["category_id"], tuple(a["bbox"])): type(a["segmentation"]).__name__
             for a in coco["annotations"]}
    assert kinds[(2, (3, 3, 25, 25))] == "dict"  # the annulus
    assert kinds[(3, (34, 34, 28, 28))] == "dict"  # the frame
    assert kinds[(4, (36, 2, 24, 18))] == "list"  # the diagonally joined blocks, 140 + 80 px
    assert sorted(kinds.values()).count("dict") == 2
    rle = next(a["segmentation"] for a in coco["annotations"] if a["bbox"] == [3, 3, 25, 25])
    assert isinstance(rle["counts"], str) and rle["size"] == [SIZE, SIZE]


def test_coco_category_ids_start_at_one_with_the_class_names():
    coco = to_coco(find_instances(label_map(), background=(0,)), SIZE, SIZE,
                   class_names=["background", "ring", "shape"])
    assert coco["categories"] == [{"id": 1, "name": "background"}, {"id": 2, "name": "ring"},
                                  {"id": 3, "name": "shape"}]
    assert sorted({a["category_id"] for a in coco["annotations"]}) == [2, 3]


def test_coco_area_of_a_simplified_polygon_is_its_decoded_area():
    (star,) = find_instances(label_map() == 2, background=(0,), simplify=2.0)[:1]
    (annotation,) = to_coco([star], SIZE, SIZE)["annotations"]
    drawn = mask_utils.frPyObjects(annotation["segmentation"], SIZE, SIZE)
    assert annotation["area"] == mask_utils.area(mask_utils.merge(drawn)) != star.area


def test_geojson_applies_georeference_by_hand():
    label = np.zeros((4, 5), np.uint8)
    label[2, 3] = 1  # one pixel: x in [3, 4], y in [2, 3]
    georef = GeoReference("EPSG:32633", (10.0, 0.0, 1000.0, 0.0, -10.0, 5000.0))
    collection = to_geojson(find_instances(label, background=(0,)), ["bg", "tree"], georef)
    (feature,) = collection["features"]
    assert feature["properties"] == {"class_id": 1, "class_name": "tree", "area_px": 1,
                                     "bbox_px": [3, 2, 1, 1]}
    # x' = 10 x + 1000, y' = -10 y + 5000
    assert shapely.geometry.shape(feature["geometry"]).bounds == (1030, 4970, 1040, 4980)
    assert collection["crs"]["properties"]["name"] == "EPSG:32633"
    assert georef.pixel_area == 100.0
