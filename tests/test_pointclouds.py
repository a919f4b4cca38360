"""Point clouds: PointCLIP's projection, the loaders in their real layouts, and `falip eval pointcloud`."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import falip
from conftest import SHARED, close
from falip.cli.app import cli
from falip.datasets import open_clouds
from falip.errors import FalipError
from falip.tasks.pointcloud import cloud_scores, search_view_weights, view_features, view_pixels, view_regions
from falip.tasks.projection import VIEW_ANGLES, depth_maps, foreground_box, normalise_cloud, rotation

MODELNET_SAMPLE = SHARED / "data" / "modelnet40-sample"


def sphere(radius: float, count: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(count, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_sphere_projects_to_a_disc_of_the_perspective_radius_in_every_view():
    radius, distance = 0.5, 1.6
    maps = depth_maps(sphere(radius, 200_000))
    expected = (
        radius / math.sqrt(distance**2 - radius**2) * 64
    )  # tangent rays: the silhouette's radius in pixels
    rows, cols = np.mgrid[0:128, 0:128]
    r = np.hypot(rows - 64, cols - 64)
    for view in maps:  # a sphere at the origin looks the same from all six views
        assert (view[r <= expected - 1.5] > 0).all()
        assert not (view[r >= expected + 1.5] > 0).any()
        # front (z = 1.1) and back (z = 2.1) surface points land on the centre pixels, more from the back:
        # a pixel's solid angle covers surface area growing as z^2; the value is their harmonic mean
        near, far = distance - radius, distance + radius
        weights = np.array([near**2, far**2])
        expected_centre = weights.sum() / (weights / np.array([near, far])).sum()
        assert view[60:69, 60:69].mean() == pytest.approx(expected_centre, rel=0.02)


def test_a_square_facing_the_camera_is_a_square_at_its_depth():
    rng = np.random.default_rng(1)
    side, z = 0.3, -0.2  # the square |x|, |y| <= 0.3 at z = -0.2: 1.4 from the camera in view 1
    square = np.column_stack(
        [rng.uniform(-side, side, 100_000), rng.uniform(-side, side, 100_000), np.full(100_000, z)]
    )
    front = depth_maps(square)[0]
    assert np.allclose(front[front > 0], 1.6 + z)  # every point at the same depth
    half = side / (1.6 + z) * 64  # the square's half-width on the image, in pixels
    first, last = (
        math.ceil(64 - half - 0.5),
        math.ceil(64 + half - 0.5),
    )  # the pixels PointCLIP rounds its edges to
    assert foreground_box(front) == (first, first, last + 1, last + 1)


def test_a_cube_shows_its_front_face_as_the_silhouette_in_every_view():
    rng = np.random.default_rng(3)
    half = 0.3
    faces = []
    for axis in range(3):  # 40,000 points on each of the six faces of the cube |x|, |y|, |z| <= 0.3
        for sign in (-1, 1):
            face = rng.uniform(-half, half, size=(40_000, 3))
            face[:, axis] = sign * half
            faces.append(face)
    maps = depth_maps(np.concatenate(faces))
    edge = half / (1.6 - half) * 64  # the nearest face's edge, in pixels from the centre: the widest outline
    first, last = math.ceil(64 - edge - 0.5), math.ceil(64 + edge - 0.5)
    for view in maps:  # the six views turn the cube by right angles: each sees a face square-on
        assert foreground_box(view) == (first, first, last + 1, last + 1)
        # the front (z = 1.3) and back (z = 1.9) faces land on the centre; a pixel covers z^2 of a face's area
        weights = np.array([1.3**2, 1.9**2])
        assert view[60:69, 60:69].mean() == pytest.approx(
            weights.sum() / (weights / np.array([1.3, 1.9])).sum(), rel=0.02
        )


def test_depth_maps_equal_a_point_by_point_projection():
    points = normalise_cloud(np.random.default_rng(2).normal(size=(300, 3)))
    maps = depth_maps(points)
    for v, angles in enumerate(VIEW_ANGLES):
        count, inverse = {}, {}
        for p in points:
            x, y, z = rotation(*angles) @ p + np.array([0.0, 0.0, 1.6])
            row, col = math.ceil((x / z + 1) * 64 - 0.5), math.ceil((y / z + 1) * 64 - 0.5)
            if z > 0 and 0 <= row < 128 and 0 <= col < 128:
                count[row, col] = count.get((row, col), 0) + 1
                inverse[row, col] = inverse.get((row, col), 0.0) + 1 / z
        expected = np.zeros((128, 128))
        for pixel, n in count.items():
            expected[pixel] = n / inverse[pixel]
        assert np.allclose(maps[v], expected, rtol=1e-5), v


def test_views_regions_and_scores():
    maps = depth_maps(sphere(0.5, 5000))
    maps[3] = 0  # a view no point reached
    pixels = view_pixels(maps, 224)
    assert pixels.shape == (6, 3, 224, 224) and pixels[0, 0, 112, 112] == pytest.approx(
        float(maps[0, 64, 64]), rel=0.05
    )
    assert (
        pixels[0, :, 0, 0].abs().max() == 0
    )  # raw depths: the background stays 0 (PointCLIP feeds no normalisation)
    regions = view_regions(maps, 224)
    assert regions[3] is None and len(regions[0]) == 4
    x, y, w, h = regions[0]
    assert x > 50 and x + w < 174 and w == pytest.approx(h, abs=3)
    masks = view_regions(maps, 224, "mask")
    assert masks[0].shape == (224, 224) and masks[0][112, 112] and not masks[0][0, 0]
    feats = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    assert close(cloud_scores(feats, text), (feats @ text.T).sum(0))
    beta = [1, 0, 0, 0, 0, 2.0]
    assert close(cloud_scores(feats, text, beta), feats[0] @ text.T + 2 * feats[5] @ text.T)


def test_view_weight_search_finds_the_informative_view():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    per_view = torch.randn(60, 6, 4, generator=torch.Generator().manual_seed(0))
    per_view[torch.arange(60), 2, torch.as_tensor(labels)] += 5.0  # view 3 alone knows the class
    beta = search_view_weights(per_view, labels)
    top1 = lambda w: ((torch.tensor(w) @ per_view).argmax(-1) == torch.as_tensor(labels)).float().mean()  # noqa: E731
    assert top1(beta) == 1.0 and top1([1.0] * 6) < 1.0 and beta[2] > 0


def test_prepared_inputs_equal_encode_regions_on_the_same_image(hf_dir):
    model = falip.load(hf_dir)
    image = np.random.default_rng(0).integers(
        0, 255, size=(32, 32, 3), dtype=np.uint8
    )  # the model's own size
    box = [4, 6, 15, 12]
    assert close(
        model.encode_prepared(model.pixels(image), [box], alpha=2.0),
        model.encode_regions(image, [box], alpha=2.0),
        rel=1e-5,
    )
    assert close(model.encode_prepared(model.pixels(image), [None]), model.encode_image(image), rel=1e-4)
    with pytest.raises(FalipError, match="one region"):
        model.encode_prepared(model.pixels(image), [box, box])


def write_normal_resampled(root, names=("chair_0001", "table_0002"), split="test"):
    (root / "modelnet40_shape_names.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("chair\ntable\n")
    (root / f"modelnet40_{split}.txt").write_text("\n".join(names) + "\n")
    for i, name in enumerate(names):
        cls = name.rsplit("_", 1)[0]
        (root / cls).mkdir(exist_ok=True)
        cloud = np.random.default_rng(i).normal(size=(50, 6))
        (root / cls / f"{name}.txt").write_text(
            "\n".join(",".join(f"{v:.6f}" for v in row) for row in cloud) + "\n"
        )
    return root


def write_h5(path, count=3, classes=2, points=2048):
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle["data"] = np.random.default_rng(0).normal(size=(count, points, 3)).astype(np.float32)
        handle["label"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    return path


def test_modelnet40_in_both_layouts_and_its_errors(tmp_path):
    import h5py

    text = open_clouds(
        "modelnet40", root=str(write_normal_resampled(tmp_path / "txt")), split="test", points=64
    )
    assert text.classes == ["chair", "table"] and [e.label for e in text.examples] == [0, 1]
    cloud = text.cloud(text.examples[0])
    assert cloud.shape == (64, 3) and np.linalg.norm(cloud, axis=1).max() == pytest.approx(1.0)
    assert np.abs(cloud.mean(0)).max() <= 1e-9 * np.abs(cloud).max()  # centred, relative to its size
    assert np.array_equal(cloud, text.cloud(text.examples[0]))  # seeded

    h5 = tmp_path / "h5"
    write_h5(h5 / "ply_data_test0.h5")
    (h5 / "shape_names.txt").write_text("chair\ntable\n")
    (h5 / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n")
    packed = open_clouds("modelnet40", root=str(h5))
    assert len(packed.examples) == 3 and [e.label for e in packed.examples] == [0, 1, 0]
    assert packed.cloud(packed.examples[1]).shape == (1024, 3)
    with h5py.File(h5 / "ply_data_test0.h5", "r") as handle:  # the first 1024 points, as stored
        assert np.array_equal(packed.cloud(packed.examples[1]), handle["data"][1, :1024].astype(np.float64))

    (tmp_path / "txt" / "chair" / "chair_0001.txt").unlink()
    with pytest.raises(FalipError, match="ModelNet40 shape file not found: .*chair_0001.txt"):
        open_clouds("modelnet40", root=str(tmp_path / "txt"))
    with pytest.raises(FalipError, match="split list for 'train' not found"):
        open_clouds("modelnet40", root=str(tmp_path / "txt"), split="train")
    with pytest.raises(FalipError, match="not a ModelNet40 folder"):
        open_clouds("modelnet40", root=str(tmp_path))


def test_h5_clouds_are_their_first_1024_points_unnormalised_as_pointclip_reads_them(tmp_path):
    """PointCLIP takes `data[i][:1024]` of the HDF5 release and does not re-normalise. The first 1024
    points of this cloud sit at A = (0.31, 0, 0) (512 of them) and B = (0.31, 0.21, 0) (512); the last
    1024 at C = (-0.9, -0.9, 0), which would show if they were read, and re-centring would move A and B.
    View 0 (Euler angles (0, 0, pi/2)): R_z(pi/2) maps (x, y, z) to (-y, x, z), then z + 1.6. So
    A -> (0, 0.31, 1.6): row ceil((0 / 1.6 + 1) * 64 - 0.5) = ceil(63.5) = 64,
    column ceil((0.31 / 1.6 + 1) * 64 - 0.5) = ceil(75.9) = 76, depth 1.6;
    B -> (-0.21, 0.31, 1.6): row ceil((1 - 0.13125) * 64 - 0.5) = ceil(55.1) = 56, column 76, depth 1.6.
    Every other pixel is background (0)."""
    import h5py

    cloud = np.zeros((2048, 3), np.float32)
    cloud[:512] = (0.31, 0.0, 0.0)
    cloud[512:1024] = (0.31, 0.21, 0.0)
    cloud[1024:] = (-0.9, -0.9, 0.0)
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    with h5py.File(root / "ply_data_test0.h5", "w") as handle:
        handle["data"] = cloud[None]
        handle["label"] = np.array([[1]], np.uint8)
    (root / "shape_names.txt").write_text("airplane\nbathtub\n")
    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n")
    data = open_clouds("modelnet40", root=str(root))
    points = data.cloud(data.examples[0])
    assert points.shape == (1024, 3) and np.array_equal(points, cloud[:1024].astype(np.float64))
    expected = np.zeros((128, 128), np.float32)
    expected[64, 76] = expected[56, 76] = 1.6
    np.testing.assert_allclose(depth_maps(points)[0], expected, rtol=1e-6, atol=0)


def test_scanobjectnn_variants(tmp_path):
    root = tmp_path / "h5_files"
    write_h5(root / "main_split_nobg" / "test_objectdataset.h5", count=4, classes=15)
    write_h5(root / "main_split" / "test_objectdataset.h5", count=2, classes=15)
    write_h5(root / "main_split" / "test_objectdataset_augmentedrot_scale75.h5", count=5, classes=15)
    counts = {
        v: len(open_clouds("scanobjectnn", root=str(tmp_path), variant=v).examples)
        for v in ("obj_only", "obj_bg", "pb_t50_rs")
    }
    assert counts == {"obj_only": 4, "obj_bg": 2, "pb_t50_rs": 5}
    data = open_clouds("scanobjectnn", root=str(root))
    assert data.classes[0] == "bag" and data.classes[-1] == "toilet" and len(data.classes) == 15
    with pytest.raises(FalipError, match="ScanObjectNN obj_only train file not found"):
        open_clouds("scanobjectnn", root=str(root), split="train")


@pytest.fixture
def sample():
    if not MODELNET_SAMPLE.is_dir():
        pytest.skip(f"the ModelNet40 sample is not at {MODELNET_SAMPLE} (../shared is absent)")
    return MODELNET_SAMPLE


def test_the_real_modelnet40_sample_loads_and_projects(sample):
    data = open_clouds("modelnet40", root=str(sample), split="sample")
    assert len(data.examples) == 39 and len(data.classes) == 40
    assert data.classes[data.examples[0].label] == "airplane"
    maps = depth_maps(data.cloud(data.examples[0]))
    assert maps.shape == (6, 128, 128) and all((m > 0).sum() > 200 for m in maps)
    model = falip.load()
    plain, focused = view_features(model, maps, "plain"), view_features(model, maps, "falip", alpha=4.0)
    assert plain.shape == (6, model.backbone.cfg.vision.output_dim) and not close(plain, focused, rel=1e-3)


def test_eval_pointcloud_on_the_real_sample_resumes_and_refuses_to_search_on_the_test_split(sample, tmp_path):
    args = [
        "eval",
        "pointcloud",
        "modelnet40",
        "--root",
        str(sample),
        "--split",
        "sample",
        "--method",
        "plain,falip",
        "--out",
        str(tmp_path),
        "--limit",
        "3",
        "--quiet",
        "--pictures",
        "1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["toy:plain"]["top1"]["n"] == 3 and "toy:falip" in summary
    assert "[CLS] attention on the foreground" in result.output
    shares = json.loads((tmp_path / "attention.json").read_text())
    assert 0 < shares["toy:plain"] < 1 and 0 < shares["toy:falip"] < 1
    assert (tmp_path / "pictures" / "airplane_0126.png").stat().st_size > 5000
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and again.output == result.output
    bad = CliRunner().invoke(cli, args[:9] + ["--out", str(tmp_path / "b"), "--search-split", "sample"])
    assert isinstance(bad.exception, FalipError) and "validation split" in str(bad.exception)
    wrong = CliRunner().invoke(cli, args[:8] + ["red_circle", "--out", str(tmp_path / "c")])
    assert isinstance(wrong.exception, FalipError) and "point clouds take the methods" in str(wrong.exception)


def test_pointclip_v2_realistic_projection():
    from falip.tasks.pointcloud import cloud_views
    from falip.tasks.projection import realistic_maps

    maps, foreground = realistic_maps(np.zeros((5, 3)))  # one point, five times
    assert (
        maps.shape == (10, 110, 110) and foreground.shape == maps.shape
    )  # 112 cells, 7 x 7 max filter padded by 2
    for view, mask in zip(maps, foreground):
        assert mask.sum() == 81  # one cell, densified to 7 x 7, smoothed by a 3 x 3 Gaussian: 9 x 9
        assert view.min() == 0.0 and (view[~mask] == 1.0).all() and (view[mask] < 1).all()
    maps, foreground = cloud_views(sphere(0.8, 4000), "realistic")
    assert all(m.sum() > 500 for m in foreground) and (maps[~foreground] == 1.0).all()
    depth, mask = cloud_views(sphere(0.8, 4000))
    assert depth.shape == (6, 128, 128) and np.array_equal(mask, depth > 0)
    with pytest.raises(FalipError, match="unknown projection"):
        cloud_views(sphere(0.8, 10), "mesh")


def test_eval_pointcloud_with_the_realistic_projection(sample, tmp_path):
    args = [
        "eval",
        "pointcloud",
        "modelnet40",
        "--root",
        str(sample),
        "--split",
        "sample",
        "--method",
        "plain,falip",
        "--projection",
        "realistic",
        "--out",
        str(tmp_path),
        "--limit",
        "2",
        "--quiet",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "config.json").read_text())["cloud_projection"] == "realistic"
    assert json.loads((tmp_path / "summary.json").read_text())["toy:falip"]["top1"]["n"] == 2


@pytest.mark.parametrize("region, form", [("box", "cls"), ("mask", "all")])
def test_one_pass_gives_the_features_and_the_attention(region, form):
    """`view_attention`'s features (taken from the pass that gives the maps) equal `view_features`' own
    forward, views without points included; its attention shares equal a plain sum over the maps."""
    from falip.tasks.pointcloud import foreground_attention, view_attention

    model = falip.load("toy")
    depth = depth_maps(sphere(0.5, 3000))
    depth[2] = 0  # a view no point reached: no bias, plain features
    options = dict(region=region, form=form, alpha=2.0, layers=[-3, -2, -1])
    maps = view_attention(model, depth, **options)
    for method in ("plain", "falip"):
        alone = view_features(model, depth, method, **options)
        assert torch.allclose(maps["features"][method], alone, rtol=1e-4, atol=1e-5 * alone.abs().max()), (
            method
        )
    assert maps["views"] == [0, 1, 3, 4, 5]
    shares = foreground_attention(maps)
    for share, name in zip(shares, ("plain", "falip")):
        by_hand = np.mean([m[i].sum() / m.sum() for m, i in zip(maps[name], maps["inside"])])
        assert share == pytest.approx(by_hand, rel=1e-6)
    assert shares[1] > shares[0]  # FALIP moves attention onto the foreground
