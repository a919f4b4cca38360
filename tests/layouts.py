"""The data sets and checkpoints of docs/REPRODUCE.md as small fixtures in their real layouts.

`write_layouts(root)` writes them and returns the guide's variables (`$MODEL`, `$COCO`, `$CUB`, ...)
filled in. tests/test_reproduce.py runs the guide's commands on them, and the root conftest.py sets the
same variables in the environment of the guide's own code blocks (`python tests/layouts.py DIR` prints
them as JSON), so every block runs as written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_hf_dir
from falip.datasets.classification import IMAGENET_NAMES
from falip.paper.tables import REC_SPLITS
from test_datasets import write_cub, write_image


def write_layouts(root: Path) -> dict[str, str]:
    """Write every data set and checkpoint the guide names under `root`; its variables, filled in."""
    root.mkdir(parents=True, exist_ok=True)
    model = make_hf_dir(root / "clip-12-layers", layers=12)  # ViT-B/16's depth, so the layer sets exist
    large = make_hf_dir(root / "clip-large", layers=24, seed=1)  # ViT-L/14's depth, for both layer sets
    coco = root / "coco"
    files = [f"COCO_train2014_{i:012d}.jpg" for i in (1, 2)]
    for seed, name in enumerate(files):
        write_image(coco / name, seed=seed)
    lines = []
    for i, name in enumerate(files):
        anns = [
            {"id": 10 * i + k, "bbox": box}
            for k, box in enumerate(([1, 2, 20, 20], [30, 5, 30, 40], [5, 25, 10, 10]))
        ]
        for k in range(2):
            lines.append(
                {
                    "file_name": name.replace(".jpg", f"_{10 * i + k}.jpg"),
                    "image_id": i + 1,
                    "ann_id": 10 * i + k,
                    "anns": anns,
                    "sentences": [{"raw": f"thing {i} {k}"}, {"raw": f"object {i} {k}"}],
                }
            )
    reclip = root / "reclip"
    dets = root / "dets"
    reclip.mkdir()
    dets.mkdir()
    for split in REC_SPLITS:
        (reclip / f"{split}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    for dataset in ("refcoco", "refcoco+", "refcocog"):  # ReCLIP's release: one proposals file per data set
        (dets / f"{dataset}_dets_dict.json").write_text(
            json.dumps({"1": [[0, 0, 22, 22], [28, 4, 33, 40]], "2": [[4, 20, 12, 14]]})
        )

    cub = root / "CUB_200_2011"
    cub_files = write_cub(cub)
    waterbirds = root / "waterbirds"
    for f in cub_files:
        write_image(waterbirds / f)
    rows = ["img_id,img_filename,y,split,place,place_filename"] + [
        f"{i + 1},{f},{i % 2},2,{i % 2},p.jpg" for i, f in enumerate(cub_files)
    ]
    (waterbirds / "metadata.csv").write_text("\n".join(rows) + "\n")

    dogs = root / "dogs"
    for breed in ("n02085620-Chihuahua", "n02085782-Japanese_spaniel"):
        write_image(dogs / "Images" / breed / f"{breed[:9]}_1.jpg")
        note = dogs / "Annotation" / breed / f"{breed[:9]}_1"
        note.parent.mkdir(parents=True)
        note.write_text(
            "<annotation><object><bndbox><xmin>4</xmin><ymin>5</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>"
        )
    import scipy.io as scipy_io

    listed = np.empty((2, 1), dtype=object)
    listed[0, 0] = np.array(["n02085620-Chihuahua/n02085620_1.jpg"])
    listed[1, 0] = np.array(["n02085782-Japanese_spaniel/n02085782_1.jpg"])
    scipy_io.savemat(dogs / "test_list.mat", {"file_list": listed})

    imagenet_s = root / "ImageNetS919"
    for label, wnid in enumerate(("n01440764", "n01443537")):
        write_image(imagenet_s / "validation" / wnid / "val_0.JPEG", seed=label)
        mask = np.zeros((48, 64, 3), np.uint8)
        mask[8:30, 10:40, 0] = label + 1
        (imagenet_s / "validation-segmentation" / wnid).mkdir(parents=True)
        Image.fromarray(mask).save(imagenet_s / "validation-segmentation" / wnid / "val_0.png")
    from test_pointclouds import write_h5, write_normal_resampled

    modelnet = write_normal_resampled(root / "modelnet40")
    scanobjectnn = root / "h5_files"
    write_h5(scanobjectnn / "main_split_nobg" / "test_objectdataset.h5", count=2, classes=15)
    return {
        "$MODELNET40": str(modelnet),
        "$SCANOBJECTNN": str(scanobjectnn),
        "$LARGE": str(large),
        "$MODEL": str(model),
        "$COCO": str(coco),
        "$RECLIP": str(reclip),
        "$SPLIT": "refcoco_val",
        "$DETS": str(dets / "refcoco_dets_dict.json"),
        "$IMAGENET_NAMES": str(IMAGENET_NAMES),
        "$CUB": str(cub),
        "$DOGS": str(dogs),
        "$WATERBIRDS": str(waterbirds),
        "$IMAGENET_S": str(imagenet_s),
        "$OUT": str(root / "out"),
        "root": root,
        "dets": str(dets),
    }


if __name__ == "__main__":
    print(json.dumps({key: str(value) for key, value in write_layouts(Path(sys.argv[1])).items()}))
