"""Point clouds to depth maps, as PointCLIP's zero-shot code projects them (Zhang et al., CVPR 2022;
the FALIP paper's Sec. 3.3.3 and Fig. 5 use it unchanged).

Six views: four about the vertical axis, one from the top, one from the bottom. Each view rotates
the (centred, unit-sphere) cloud, moves it 1.6 units away from the camera, and projects every point
perspectively, `(x / z, y / z)`, onto a 128 x 128 grid: the point's row is `round((x/z + 1) * 64)`
and its column `round((y/z + 1) * 64)` (PointCLIP's `ceil(c - 0.5)`). A pixel's value is the
harmonic mean of the depths z of the points that land on it (PointCLIP scatters `z * (1/z)` and
`1/z` and divides: there is no z-buffer, so points behind others count too); a pixel no point
lands on is 0, the background.
"""

from __future__ import annotations

import numpy as np

RESOLUTION = 128
DISTANCE = 1.6
# (x, y, z) Euler angles of PointCLIP's six views: four about the vertical axis, then top and bottom
VIEW_ANGLES = np.array(
    [
        [0.0, 0.0, np.pi / 2],
        [np.pi / 2, 0.0, np.pi / 2],
        [np.pi, 0.0, np.pi / 2],
        [3 * np.pi / 2, 0.0, np.pi / 2],
        [0.0, -np.pi / 2, np.pi / 2],
        [0.0, np.pi / 2, np.pi / 2],
    ]
)


def rotation(x: float, y: float, z: float) -> np.ndarray:
    """The (3, 3) rotation `R_x(x) @ R_y(y) @ R_z(z)`, angles in radians (PointCLIP's Euler order)."""
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def normalise_cloud(points: np.ndarray) -> np.ndarray:
    """(N, >= 3) points -> (N, 3) float64: centred on the centroid and scaled into the unit sphere
    (PointNet's `pc_normalize`); extra columns (normals, colours) are dropped."""
    points = np.asarray(points, np.float64)[:, :3]
    centred = points - points.mean(axis=0)
    radius = np.sqrt((centred**2).sum(axis=1)).max()
    return centred / radius if radius > 0 else centred


def view_points(
    points: np.ndarray, angles: np.ndarray = VIEW_ANGLES, distance: float = DISTANCE
) -> np.ndarray:
    """(V, N, 3) camera coordinates of a normalised cloud (N, 3) in each view: rotated by the view's
    Euler `angles` (V, 3) in radians, then pushed `distance` (unit-sphere units) away along z."""
    out = np.stack([points @ rotation(*a).T for a in angles])
    out[..., 2] += distance
    return out


def depth_maps(
    points: np.ndarray,
    resolution: int = RESOLUTION,
    angles: np.ndarray = VIEW_ANGLES,
    distance: float = DISTANCE,
) -> np.ndarray:
    """(V, resolution, resolution) float32 depth maps of one cloud (N, 3), already normalised.

    Each pixel holds the harmonic mean of the depths (unit-sphere units) of the points projected onto
    it, 0 where none lands; points behind the camera or outside the grid are dropped (PointCLIP's
    projection, see the module docstring)."""
    views = view_points(np.asarray(points, np.float64), angles, distance)
    maps = np.zeros((len(views), resolution * resolution))
    for v, camera in enumerate(views):
        x, y, z = camera[:, 0], camera[:, 1], camera[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            rows = np.ceil((x / z + 1) * resolution / 2 - 0.5)
            cols = np.ceil((y / z + 1) * resolution / 2 - 0.5)
        keep = (z > 0) & (rows >= 0) & (rows <= resolution - 1) & (cols >= 0) & (cols <= resolution - 1)
        flat = (rows[keep] * resolution + cols[keep]).astype(np.int64)
        count = np.bincount(flat, minlength=resolution * resolution)
        inverse = np.bincount(flat, weights=1.0 / z[keep], minlength=resolution * resolution)
        hit = count > 0
        maps[v, hit] = count[hit] / inverse[hit]
    return maps.reshape(len(views), resolution, resolution).astype(np.float32)


def foreground_box(depth: np.ndarray) -> tuple[float, float, float, float] | None:
    """The bounding box `(x0, y0, x1, y1)` of a depth map's non-zero pixels, in its pixels; None if empty."""
    rows, cols = np.nonzero(depth > 0)
    if rows.size == 0:
        return None
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


# PointCLIP V2's "realistic projection" (Zhu et al., 2023): ten views, a quantised 3D grid, densified
# and smoothed, squeezed to 2D. Its zero-shot classification settings.
REALISTIC_VIEWS = np.array(
    [
        *([k * np.pi / 4, 0.0, np.pi / 2] for k in (1, 3, 5, 7)),
        *([k * np.pi / 2, 0.0, np.pi / 2] for k in range(4)),
        [0.0, -np.pi / 2, np.pi / 2],
        [0.0, np.pi / 2, np.pi / 2],
    ]
)
REALISTIC_TILT = np.array(
    [*([0.0, np.pi / 9, 0.0] for _ in range(8)), [0.0, np.pi / 15, 0.0], [0.0, np.pi / 15, 0.0]]
)
REALISTIC = {
    "resolution": 112,
    "depth": 8,
    "obj_ratio": 0.8,
    "depth_bias": 0.2,
    "densify": 7,
    "densify_pad": 2,
    "smooth": 3,
    "smooth_sigma": 3.0,
}


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    xs = np.arange(size, dtype=np.float64) - size // 2
    line = np.exp(-(xs**2) / (2 * sigma**2))
    kernel = np.outer(line, line)
    return kernel / kernel.sum()


def realistic_maps(points: np.ndarray, settings: dict = REALISTIC) -> tuple[np.ndarray, np.ndarray]:
    """PointCLIP V2's ten views of a cloud (N, 3): (V, S, S) float32 images, the background exactly 1
    and nearer surfaces darker, and their (V, S, S) foreground masks. Each view turns the cloud (the
    view's rotation, then a small tilt that shows more surface), scales it into the unit cube (x and
    y by `obj_ratio`), quantises it onto a resolution x resolution x depth grid keeping the largest
    depth index per cell, densifies the grid with a 7 x 7 max filter, smooths it with a 3 x 3
    Gaussian (sigma 3), takes the maximum over depth, and maps it to `1 - value / max`."""
    import torch
    import torch.nn.functional as F

    res, depth = settings["resolution"], settings["depth"]
    grids = []
    for angles, tilt in zip(REALISTIC_VIEWS, REALISTIC_TILT):
        turned = np.asarray(points, np.float64)[:, :3] @ rotation(*angles).T @ rotation(*tilt).T
        top, low = turned.max(axis=0), turned.min(axis=0)
        scaled = (turned - (top + low) / 2) / max((top - low).max(), 1e-12) * 2
        scaled[:, :2] *= settings["obj_ratio"]
        x = np.clip(np.ceil((scaled[:, 0] + 1) / 2 * res), 1, res - 2)
        y = np.clip(np.ceil((scaled[:, 1] + 1) / 2 * res), 1, res - 2)
        z = ((scaled[:, 2] + 1) / 2 + settings["depth_bias"]) / (1 + settings["depth_bias"]) * (depth - 2)
        layer = np.ceil(z).astype(np.int64)
        grid = np.zeros((depth, res, res))
        np.maximum.at(grid, (layer, y.astype(np.int64), x.astype(np.int64)), np.clip(z, 1, depth - 2))
        grids.append(grid.transpose(0, 2, 1))  # rows follow x, as PointCLIP's views
    volume = torch.from_numpy(np.stack(grids))[:, None]  # (V, 1, depth, S, S)
    size, pad = settings["densify"], settings["densify_pad"]
    dense = F.max_pool3d(volume, (1, size, size), stride=1, padding=(0, pad, pad))
    kernel = torch.from_numpy(_gaussian_kernel(settings["smooth"], settings["smooth_sigma"]))[
        None, None, None
    ]
    smooth = F.conv3d(dense, kernel, padding=(0, settings["smooth"] // 2, settings["smooth"] // 2))
    image = smooth.amax(dim=2)[:, 0]  # (V, S', S')
    peak = image.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    maps = (1 - image / peak).numpy().astype(np.float32)
    return maps, (image > 0).numpy()
