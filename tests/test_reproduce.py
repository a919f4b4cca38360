"""Every command of docs/REPRODUCE.md runs, on fixtures in the real layouts, with a tiny model."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import make_hf_dir
from falip.cli import cli
from test_datasets import write_cub, write_image

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "REPRODUCE.md"


def guide_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("falip eval")]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    model = make_hf_dir(root / "clip-12-layers", layers=12)  # ViT-B/16's depth, so the layer sets exist
    coco = root / "coco"
    files = [f"COCO_train2014_{i:012d}.jpg" for i in (1, 2)]
    for seed, name in enumerate(files):
        write_image(coco / name, seed=seed)
    lines = []
    for i, name in enumerate(files):
        anns = [{"id": 10 * i + k, "bbox": box} for k, box in enumerate(([1, 2, 20, 20], [30, 5, 30, 40], [5, 25, 10, 10]))]
        for k in range(2):
            lines.append({"file_name": name.replace(".jpg", f"_{10 * i + k}.jpg"), "image_id": i + 1, "ann_id": 10 * i + k,
                          "anns": anns, "sentences": [{"raw": f"thing {i} {k}"}, {"raw": f"object {i} {k}"}]})
    reclip = root / "reclip"
    reclip.mkdir()
    names = {m for c in guide_commands() for m in re.findall(r"\$RECLIP/(\S+)", c)}
    for name in names:
        (reclip / name).write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    cub = root / "CUB_200_2011"
    cub_files = write_cub(cub)
    waterbirds = root / "waterbirds"
    for f in cub_files:
        write_image(waterbirds / f)
    rows = ["img_id,img_filename,y,split,place,place_filename"] + [f"{i + 1},{f},{i % 2},2,{i % 2},p.jpg" for i, f in enumerate(cub_files)]
    (waterbirds / "metadata.csv").write_text("\n".join(rows) + "\n")

    dogs = root / "dogs"
    for breed in ("n02085620-Chihuahua", "n02085782-Japanese_spaniel"):
        write_image(dogs / "Images" / breed / f"{breed[:9]}_1.jpg")
        note = dogs / "Annotation" / breed / f"{breed[:9]}_1"
        note.parent.mkdir(parents=True)
        note.write_text("<annotation><object><bndbox><xmin>4</xmin><ymin>5</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>")
    scipy_io = pytest.importorskip("scipy.io")
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
    return {"$MODEL": str(model), "$COCO": str(coco), "$RECLIP": str(reclip), "$CUB": str(cub), "$DOGS": str(dogs),
            "$WATERBIRDS": str(waterbirds), "$IMAGENET_S": str(imagenet_s), "$OUT": str(root / "out")}


def test_the_guide_covers_every_table():
    text = GUIDE.read_text()
    for table in (1, 2, 5, 6, 10, 11, 12, 13, 14):
        assert re.search(rf"^## Tables? .*\b{table}\b", text, flags=re.M), f"no section for Table {table}"
    assert len(guide_commands()) >= 25


@pytest.mark.parametrize("command", guide_commands())
def test_guide_command_runs_on_fixtures(layouts, command):
    for placeholder, value in layouts.items():
        command = command.replace(placeholder, value)
    assert "$" not in command, f"unknown placeholder in {command}"
    args = shlex.split(command)[1:] + ["--limit", "2", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
    out = Path(args[args.index("--out") + 1])
    summary = json.loads((out / "summary.json").read_text())
    methods = args[args.index("--method") + 1].split(",")
    assert {row.rsplit(":", 1)[-1] for row in summary if row != "ensemble"} == set(methods)
    assert all(entry[next(iter(entry))]["n"] == 2 for entry in summary.values())
