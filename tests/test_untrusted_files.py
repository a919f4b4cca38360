"""Issue 27: opening a data set or a checkpoint never runs code from it.

Every pickled or torch-saved file goes through `falip.inputs.files`; a file that asks for a global is
refused in one line naming the file and what it asked for, and the payload never runs. The real layouts
still load: refer's `refs(unc).p` as its Python 2 tooling wrote it (protocols 0 and 2, byte strings with
non-ASCII UTF-8 in them) and TransVG's split lists.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from falip.datasets import open_rec
from falip.errors import FalipError
from falip.inputs.files import read_plain_pickle, read_torch_data

SRC = Path(__file__).resolve().parents[1] / "src" / "falip"
COCO = "COCO_train2014_000000000042.jpg"


class Payload:
    """Unpickling this runs a shell command that creates `marker` (what a crafted file would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def py2_pickle(obj, protocol: int) -> bytes:
    """`obj` pickled as Python 2's cPickle wrote it: `bytes` stand for Python 2's `str` (opcodes
    SHORT_BINSTRING/BINSTRING in protocol 2, STRING in protocol 0), `str` for its `unicode`."""
    out = bytearray(b"\x80\x02" if protocol == 2 else b"")

    def text0(data: bytes) -> bytes:
        return (
            b"'"
            + b"".join(bytes([b]) if 32 <= b < 127 and b not in b"'\\" else b"\\x%02x" % b for b in data)
            + b"'"
        )

    def put(o):
        if isinstance(o, dict):
            out.extend(b"}(" if protocol == 2 else b"(d")
            for k, v in o.items():
                put(k)
                put(v)
                if protocol == 0:
                    out.extend(b"s")
            if protocol == 2:
                out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](" if protocol == 2 else b"(l")
            for v in o:
                put(v)
                if protocol == 0:
                    out.extend(b"a")
            if protocol == 2:
                out.extend(b"e")
        elif isinstance(o, tuple):
            out.extend(b"(")
            for v in o:
                put(v)
            out.extend(b"t")
        elif isinstance(o, bytes):
            if protocol == 0:
                out.extend(b"S" + text0(o) + b"\n")
            elif len(o) < 256:
                out.extend(b"U" + bytes([len(o)]) + o)
            else:
                out.extend(b"T" + struct.pack("<i", len(o)) + o)
        elif isinstance(o, str):
            data = o.encode("utf-8")
            if protocol == 0:
                out.extend(b"V" + o.encode("raw_unicode_escape") + b"\n")
            else:
                out.extend(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o) if protocol == 2 else b"I%d\n" % o)
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o) if protocol == 2 else b"F" + repr(o).encode() + b"\n")
        else:
            raise TypeError(o)

    put(obj)
    out.extend(b".")
    return bytes(out)


def refer_refs(non_ascii: bool) -> list[dict]:
    """refer's record layout (keys and most values Python 2 `str`), two refs on image 42."""
    cafe = "the café sign".encode() if non_ascii else b"the cafe sign"
    return [
        {
            b"sent_ids": [0, 1],
            b"file_name": b"COCO_train2014_000000000042_8.jpg",
            b"ann_id": 8,
            b"ref_id": 0,
            b"image_id": 42,
            b"split": b"testA",
            b"category_id": 1,
            b"sentences": [
                {
                    b"tokens": [b"right", b"one"],
                    b"raw": b"The RIGHT one",
                    b"sent_id": 0,
                    b"sent": b"the right one",
                },
                {b"tokens": [b"sign"], b"raw": cafe, b"sent_id": 1, b"sent": "the caf\u00e9 sign"},
            ],
        },
        {
            b"sent_ids": [2],
            b"file_name": b"COCO_train2014_000000000042_7.jpg",
            b"ann_id": 7,
            b"ref_id": 1,
            b"image_id": 42,
            b"split": b"train",
            b"category_id": 1,
            b"sentences": [{b"tokens": [b"left"], b"raw": b"left", b"sent_id": 2, b"sent": b"left"}],
        },
    ]


@pytest.fixture
def coco(tmp_path):
    folder = tmp_path / "train2014"
    folder.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(folder / COCO)
    instances = {
        "images": [{"id": 42, "file_name": COCO, "width": 64, "height": 48}],
        "annotations": [
            {"id": 7, "image_id": 42, "bbox": [1, 2, 20, 20]},
            {"id": 8, "image_id": 42, "bbox": [30, 5, 30, 40]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return tmp_path


@pytest.mark.parametrize("protocol", [0, 2])
def test_a_python2_refs_pickle_with_non_ascii_byte_strings_loads(coco, protocol):
    (coco / "refs(unc).p").write_bytes(py2_pickle(refer_refs(non_ascii=True), protocol))
    images = open_rec("refer", annotations=coco, images=coco / "train2014", split="testA")
    assert [(e.key, e.text, e.gold) for e in images[0].expressions] == [
        ("0:0", "the right one", [[30.0, 5.0, 30.0, 40.0]]),
        ("0:1", "the caf\u00e9 sign", [[30.0, 5.0, 30.0, 40.0]]),
    ]
    assert images.skipped == []


@pytest.mark.parametrize("protocol", [0, 2])
def test_an_ascii_python2_refs_pickle_loads_the_records_pickle_load_gives(coco, protocol):
    """The records of an ASCII refs pickle are those that a plain `pickle.load` (the loader before
    issue 27, and refer's Python 3 ports) gives, key for key."""
    data = py2_pickle(refer_refs(non_ascii=False), protocol)
    (coco / "refs(unc).p").write_bytes(data)
    assert read_plain_pickle(coco / "refs(unc).p", "refer annotation pickle") == pickle.loads(data)
    text = [
        e.text
        for e in open_rec("refer", annotations=coco, images=coco / "train2014", split="testA")[0].expressions
    ]
    assert text == ["the right one", "the cafe sign"]


def test_a_latin1_byte_string_that_is_not_utf8_still_reads(tmp_path):
    (tmp_path / "old.p").write_bytes(py2_pickle([b"caf\xe9", {b"k": (b"\xff",)}], 2))
    assert read_plain_pickle(tmp_path / "old.p", "pickle") == ["caf\u00e9", {"k": ("\u00ff",)}]


def test_a_refs_pickle_with_a_payload_is_refused_and_never_runs(coco, tmp_path):
    marker = tmp_path / "MARKER"
    refs = [
        {
            "ref_id": 0,
            "ann_id": 8,
            "image_id": 42,
            "split": "testA",
            "sentences": [{"raw": "x"}],
            "x": Payload(marker),
        }
    ]
    (coco / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(FalipError) as err:
        open_rec("refer", annotations=coco, images=coco / "train2014", split="testA")
    message = str(err.value)
    assert "\n" not in message and "refs(unc).p" in message and "system" in message and "refused" in message
    assert not marker.exists()
    for protocol in (0, 4, 5):  # every protocol: the global is asked for the same way
        (coco / "refs(unc).p").write_bytes(pickle.dumps([Payload(marker)], protocol=protocol))
        with pytest.raises(FalipError, match="refused: it asks for"):
            open_rec("refer", annotations=coco, images=coco / "train2014", split="testA")
    assert not marker.exists()


def test_a_transvg_split_with_a_payload_is_refused_and_never_runs(coco, tmp_path):
    marker = tmp_path / "MARKER"
    torch.save([(COCO, 8, [30, 5, 30, 40], "right", []), Payload(marker)], coco / "unc_testA.pth")
    with pytest.raises(FalipError) as err:
        open_rec(
            "transvg",
            annotations=coco / "unc_testA.pth",
            images=coco / "train2014",
            instances=coco / "instances.json",
        )
    message = str(err.value)
    assert "\n" not in message and "unc_testA.pth" in message and "system" in message and "refused" in message
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False])
def test_a_transvg_split_loads_its_items(coco, zipped):
    """TransVG's split layout: a list of (file, ann id, xywh box, phrase, attributes); both of
    torch.save's formats."""
    items = [
        (COCO, 8, [30, 5, 30, 40], "Right thing", []),
        (COCO, 7, [1.0, 2.0, 20.0, 20.0], "left thing", ["x"]),
    ]
    torch.save(items, coco / "unc_testA.pth", _use_new_zipfile_serialization=zipped)
    assert read_torch_data(coco / "unc_testA.pth", "TransVG split file") == items
    images = open_rec(
        "transvg",
        annotations=coco / "unc_testA.pth",
        images=coco / "train2014",
        instances=coco / "instances.json",
    )
    assert [(e.key, e.text, e.gold) for e in images[0].expressions] == [
        ("0", "right thing", [[30.0, 5.0, 30.0, 40.0]]),
        ("1", "left thing", [[1.0, 2.0, 20.0, 20.0]]),
    ]


def test_a_checkpoint_with_a_payload_is_refused_and_never_runs(tmp_path):
    import falip

    marker = tmp_path / "MARKER"
    torch.save({"visual.conv1.weight": torch.zeros(1), "x": Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(FalipError) as err:
        falip.load(str(tmp_path / "model.pt"))
    assert "\n" not in str(err.value) and "model.pt" in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("torch", "load"),
    ("jit", "load"),
    ("_pickle", "load"),
    ("_pickle", "loads"),
    ("cPickle", "load"),
    ("dill", "load"),
    ("joblib", "load"),
}


def test_no_module_but_the_files_door_unpickles():
    """Only `falip/inputs/files.py` may call pickle.load(s), pickle.Unpickler, torch.load or
    torch.jit.load (or import those names directly), so a new loader cannot bypass the door."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "inputs" / "files.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
                owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                if (owner, node.attr) in LOADERS:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {owner}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module in (
                "pickle",
                "_pickle",
                "torch",
                "torch.jit",
            ):
                names = {a.name for a in node.names}
                if names & {"load", "loads", "Unpickler"}:
                    offenders.append(
                        f"{path.relative_to(SRC)}:{node.lineno} from {node.module} import {names}"
                    )
    assert not offenders, offenders
    # the check sees a call where one is
    door = ast.parse((SRC / "inputs" / "files.py").read_text())
    seen = {
        (n.value.attr if isinstance(n.value, ast.Attribute) else n.value.id, n.attr)
        for n in ast.walk(door)
        if isinstance(n, ast.Attribute) and isinstance(n.value, (ast.Name, ast.Attribute))
    }
    assert {("torch", "load"), ("jit", "load"), ("pickle", "Unpickler")} <= seen
