"""Each loader reads small fixtures written here in the dataset's real format, and says what is missing."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED
from falip.datasets import CLS_DATASETS, REC_DATASETS, open_clouds, open_cls, open_rec, read_image
from falip.errors import FalipError, command_line

COCO = "COCO_train2014_000000000042.jpg"


def write_image(path, size=(64, 48), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        path
    )
    return path


@pytest.fixture
def coco(tmp_path):
    """A COCO image folder and instances.json with three objects on image 42."""
    write_image(tmp_path / "train2014" / COCO)
    instances = {
        "images": [{"id": 42, "file_name": COCO, "width": 64, "height": 48}],
        "annotations": [
            {"id": 7, "image_id": 42, "bbox": [1, 2, 20, 20]},
            {"id": 8, "image_id": 42, "bbox": [30, 5, 30, 40]},
            {"id": 9, "image_id": 42, "bbox": [5, 25, 10, 10]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return tmp_path


def test_reclip_jsonl_groups_by_image_and_strips_the_annotation_suffix(coco):
    anns = [{"id": 7, "bbox": [1, 2, 20, 20]}, {"id": 8, "bbox": [30, 5, 30, 40]}]
    lines = [
        {
            "file_name": "COCO_train2014_000000000042_7.jpg",
            "image_id": 42,
            "ann_id": 7,
            "anns": anns,
            "sentences": [{"raw": "Left Thing"}, {"raw": "the small one"}],
        },
        {
            "file_name": "COCO_train2014_000000000042_8.jpg",
            "image_id": 42,
            "ann_id": [8],
            "anns": anns,
            "sentences": [{"raw": "big thing"}],
        },
    ]
    (coco / "refcoco_testa.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    images = open_rec("reclip", annotations=coco / "refcoco_testa.jsonl", images=coco / "train2014")
    assert len(images) == 1 and images[0].image == coco / "train2014" / COCO
    assert images[0].boxes == [[1, 2, 20, 20], [30, 5, 30, 40]]
    assert [(e.text, e.gold) for e in images[0].expressions] == [
        ("left thing", [[1, 2, 20, 20]]),
        ("the small one", [[1, 2, 20, 20]]),
        ("big thing", [[30, 5, 30, 40]]),
    ]
    assert read_image(images[0].image).size == (64, 48)

    (coco / "dets.json").write_text(json.dumps({"42": [[0, 0, 10, 10, 0.9]]}))
    with_dets = open_rec(
        "reclip",
        annotations=coco / "refcoco_testa.jsonl",
        images=coco / "train2014",
        detections=coco / "dets.json",
    )
    assert with_dets[0].boxes == [[0, 0, 10, 10]]


def test_refer_pickle_takes_the_split_and_all_objects_as_candidates(coco):
    refs = [
        {"ref_id": 1, "ann_id": 8, "image_id": 42, "split": "testA", "sentences": [{"raw": "The right one"}]},
        {"ref_id": 2, "ann_id": 7, "image_id": 42, "split": "train", "sentences": [{"raw": "left"}]},
    ]
    with open(coco / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle)
    images = open_rec("refer", annotations=coco, images=coco / "train2014", split="testA")
    assert len(images[0].boxes) == 3
    assert [(e.key, e.text, e.gold) for e in images[0].expressions] == [
        ("1:0", "the right one", [[30, 5, 30, 40]])
    ]
    with pytest.raises(FalipError, match="no ref in split 'val'; splits there: testA, train"):
        open_rec("refer", annotations=coco, images=coco / "train2014", split="val")
    with pytest.raises(FalipError, match=r"refs\(umd\)\.p"):
        open_rec("refer", annotations=coco, images=coco / "train2014", split="testA", split_by="umd")


def test_transvg_split_needs_candidates_from_instances(coco):
    torch.save(
        [(COCO, 8, [30, 5, 30, 40], "Right thing", []), (COCO, 7, [1, 2, 20, 20], "left thing", [])],
        coco / "unc_testA.pth",
    )
    with pytest.raises(FalipError, match="holds only the gold box"):
        open_rec("transvg", annotations=coco / "unc_testA.pth", images=coco / "train2014")
    images = open_rec(
        "transvg",
        annotations=coco / "unc_testA.pth",
        images=coco / "train2014",
        instances=coco / "instances.json",
    )
    assert len(images) == 1 and len(images[0].boxes) == 3
    assert [e.gold for e in images[0].expressions] == [[[30, 5, 30, 40]], [[1, 2, 20, 20]]]


def write_cub(root, boxes=((2, 3, 20, 30), (10, 10, 30, 20), (0, 0, 40, 40))):
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    files = [f"{classes[i % 2]}/bird_{i}.jpg" for i in range(3)]
    for f in files:
        write_image(root / "images" / f)
    (root / "images.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(files)))
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {i % 2 + 1}\n" for i in range(3)))
    (root / "bounding_boxes.txt").write_text(
        "".join(f"{i + 1} {' '.join(map(str, b))}\n" for i, b in enumerate(boxes))
    )
    (root / "train_test_split.txt").write_text("1 0\n2 1\n3 0\n")
    return files


def test_cub_official_layout(tmp_path):
    write_cub(tmp_path)
    data = open_cls("cub", root=tmp_path)
    assert data.classes == ["Black footed Albatross", "Laysan Albatross"]
    assert [(e.key, e.region, e.label) for e in data.examples] == [
        ("1", [2, 3, 20, 30], 0),
        ("3", [0, 0, 40, 40], 0),
    ]
    assert [e.key for e in open_cls("cub", root=tmp_path, split="train").examples] == ["2"]
    (tmp_path / "bounding_boxes.txt").unlink()
    with pytest.raises(FalipError, match="bounding_boxes.txt not found"):
        open_cls("cub", root=tmp_path)


def test_cub_sample_in_shared():
    root = SHARED / "data" / "cub200-sample"
    if not (root / "images.txt").is_file():
        pytest.skip(f"CUB sample not found at {root} (../shared is absent)")
    data = open_cls("cub", root=root)
    assert len(data.examples) == 150 and data.classes[0] == "Black footed Albatross"
    first = data.examples[0]
    image = read_image(first.image)
    x, y, w, h = first.region
    assert 0 <= x < x + w <= image.width and 0 <= y < y + h <= image.height


def test_stanford_dogs_xml_boxes_and_mat_split(tmp_path):
    import scipy.io as scipy_io

    for breed, files in (
        ("n02085620-Chihuahua", ["n02085620_1", "n02085620_2"]),
        ("n02085782-Japanese_spaniel", ["n02085782_1"]),
    ):
        for f in files:
            write_image(tmp_path / "Images" / breed / f"{f}.jpg")
            note = tmp_path / "Annotation" / breed / f
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(
                f"<annotation><object><name>{breed}</name><bndbox><xmin>4</xmin><ymin>5</ymin>"
                "<xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>"
            )
    files = np.empty((2, 1), dtype=object)
    files[0, 0] = np.array(["n02085620-Chihuahua/n02085620_2.jpg"])
    files[1, 0] = np.array(["n02085782-Japanese_spaniel/n02085782_1.jpg"])
    scipy_io.savemat(tmp_path / "test_list.mat", {"file_list": files})
    data = open_cls("dogs", root=tmp_path)
    assert data.classes == ["Chihuahua", "Japanese spaniel"]
    assert [(e.key, e.region, e.label) for e in data.examples] == [
        ("n02085620-Chihuahua/n02085620_2.jpg", [4, 5, 26, 35], 0),
        ("n02085782-Japanese_spaniel/n02085782_1.jpg", [4, 5, 26, 35], 1),
    ]
    assert len(open_cls("dogs", root=tmp_path, split="all").examples) == 3
    with pytest.raises(FalipError, match="train_list.mat not found"):
        open_cls("dogs", root=tmp_path, split="train")


def test_waterbirds_takes_cub_boxes_and_groups(tmp_path):
    files = write_cub(tmp_path / "cub")
    for f in files:
        write_image(tmp_path / "wb" / f)
    rows = ["img_id,img_filename,y,split,place,place_filename"] + [
        f"{i + 1},{f},{i % 2},2,{(i + 1) % 2},x.jpg" for i, f in enumerate(files)
    ]
    (tmp_path / "wb" / "metadata.csv").write_text("\n".join(rows) + "\n")
    data = open_cls("waterbirds", root=tmp_path / "wb", cub_root=tmp_path / "cub")
    assert data.classes == ["landbird", "waterbird"]
    assert [(e.region, e.label, e.group) for e in data.examples] == [
        ([2, 3, 20, 30], 0, "landbird/water"),
        ([10, 10, 30, 20], 1, "waterbird/land"),
        ([0, 0, 40, 40], 0, "landbird/water"),
    ]
    with pytest.raises(FalipError, match="needs cub_root="):  # Python names the argument
        open_cls("waterbirds", root=tmp_path / "wb")
    with command_line(), pytest.raises(FalipError, match="needs --cub-root"):  # the CLI its option
        open_cls("waterbirds", root=tmp_path / "wb")


def test_imagenet_s_masks_decode_red_plus_256_green(tmp_path):
    wnids = ["n01440764", "n01443537"]
    for label, wnid in enumerate(wnids):
        write_image(tmp_path / "validation" / wnid / f"ILSVRC2012_val_{label}.JPEG")
        mask = np.zeros((48, 64, 3), np.uint8)
        mask[10:20, 5:25, 0] = label + 1  # this image's class id (1-based)
        mask[30:40, 40:50, 0] = 232  # another class: 232 + 256 * 3 = 1000 ("other")
        mask[30:40, 40:50, 1] = 3
        (tmp_path / "validation-segmentation" / wnid).mkdir(parents=True)
        Image.fromarray(mask).save(
            tmp_path / "validation-segmentation" / wnid / f"ILSVRC2012_val_{label}.png"
        )
    (tmp_path / "names.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    data = open_cls("imagenet-s", root=tmp_path, names=tmp_path / "names.txt", region="mask")
    assert data.classes == ["tench", "goldfish"]
    region = data.examples[1].load_region()
    assert region.shape == (48, 64) and region.sum() == 200 and region[10:20, 5:25].all()
    boxes = open_cls("imagenet-s", root=tmp_path, region="box")
    assert boxes.examples[0].load_region() == [5.0, 10.0, 20.0, 10.0]


def test_registries_name_what_they_need():
    assert set(REC_DATASETS) == {"reclip", "refer", "transvg", "scenes"}
    assert set(CLS_DATASETS) == {"cub", "dogs", "waterbirds", "imagenet-s", "scenes"}
    with pytest.raises(FalipError, match="unknown classification dataset 'cifar'"):
        open_cls("cifar")
    with pytest.raises(FalipError, match="cub does not take images=; it takes root=, split="):
        open_cls("cub", root="x", images="y")
    with (
        command_line(),
        pytest.raises(FalipError, match="cub does not take --images; it takes --root, --split"),
    ):
        open_cls("cub", root="x", images="y")
    scenes = open_rec("scenes", count=4)
    for item in scenes:
        assert all(e.gold[0] in item.boxes for e in item.expressions)
        assert read_image(item.image).shape == (128, 128, 3)


@pytest.mark.parametrize(
    "open_data, what",
    [
        (lambda p: open_cls("cub", root=p), "CUB folder"),
        (lambda p: open_cls("dogs", root=p), "Stanford Dogs folder"),
        (lambda p: open_cls("waterbirds", root=p, cub_root=p), "Waterbirds folder"),
        (lambda p: open_cls("imagenet-s", root=p), "ImageNet-S folder"),
        (lambda p: open_clouds("modelnet40", root=p), "ModelNet40 folder"),
        (lambda p: open_clouds("scanobjectnn", root=p), "ScanObjectNN folder"),
        (lambda p: open_rec("refer", annotations=p, images=p, split="val"), "refer annotation folder"),
    ],
)
def test_a_missing_data_folder_is_named_as_a_folder(tmp_path, open_data, what):
    """Not as the first file looked for inside it (`images.txt not found`)."""
    with pytest.raises(FalipError, match=f"^{what} not found: {tmp_path / 'nope'}"):
        open_data(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(FalipError, match=f"^{what} is a file, not a folder: {tmp_path / 'file'}$"):
        open_data(tmp_path / "file")
