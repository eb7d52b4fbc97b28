"""Scene loaders: Blender (real lego + hand-made folders), LLFF, npz, the procedural scene, and bad input."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import InputError
from nerf.data import load_scene, make_synthetic_scene
from nerf.data.blender import load_blender
from nerf.data.images import area_downscale, evenly_spaced
from nerf.data.llff import llff_to_opengl, load_llff, split_ids
from nerf.data.npz import load_npz
from nerf.data.scene import SPLITS

LEGO_ANGLE_X = 0.6911112070083618


@contextmanager
def raises_one_line(match: str):
    """pytest.raises(InputError) whose message is one line containing `match` (a plain substring)."""
    with pytest.raises(InputError) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    assert match in message, message


# --- hand-made data ------------------------------------------------------------------------------


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_blender(root: Path, *, size: int = 8, n: int = 2) -> Path:
    """A tiny valid Blender folder: n RGBA frames per split, left half opaque red, right half transparent."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[:, : size // 2] = (255, 0, 0, 255)
    for split in ("train", "val", "test"):
        frames = []
        for i in range(n):
            write_png(root / split / f"r_{i}.png", rgba)
            pose = np.eye(4)
            pose[2, 3] = 4.0 + i
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": LEGO_ANGLE_X, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def edit_json(root: Path, split: str, edit) -> None:
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def llff_row(down, right, back, t, hwf, bounds) -> np.ndarray:
    mat = np.stack([down, right, back, t, hwf], axis=1)  # (3, 5)
    return np.concatenate([mat.reshape(-1), bounds])


def make_llff(root: Path, *, n: int = 9, folder: str = "images_4", size: tuple[int, int] = (6, 8)) -> Path:
    """A tiny LLFF folder: n cameras along x looking at -z (LLFF axes), hwf = (24, 32, 40) at full res."""
    rows = [
        llff_row([0, -1, 0], [1, 0, 0], [0, 0, 1], [0.1 * i, 0.0, 0.0], [24, 32, 40], [2.0 + i, 10.0])
        for i in range(n)
    ]
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", np.array(rows))
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / folder / f"IMG_{i:03d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def make_npz(path: Path, *, n: int = 10, size: int = 8, channels: int = 3, pose_shape=(4, 4)) -> Path:
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (n, 1, 1))[:, : pose_shape[0], : pose_shape[1]]
    images = rng.random((n, size, size, channels)).astype(np.float32)
    np.savez(path, images=images, poses=poses, focal=np.array(5.0))
    return path


# --- area_downscale and helpers ------------------------------------------------------------------


def test_area_downscale_averages_blocks():
    images = np.arange(4 * 6, dtype=np.float32).reshape(1, 4, 6, 1)
    out = area_downscale(images, 2)
    expected = np.array([[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]], np.float32)  # mean of each 2x2 block
    assert out.shape == (1, 2, 3, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, ..., 0], expected)


def test_area_downscale_crops_remainder_and_keeps_identity():
    images = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)
    out = area_downscale(images, 2)
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out, area_downscale(images[:4, :6], 2))
    assert area_downscale(images, 1) is images


def test_evenly_spaced():
    assert evenly_spaced(100, None).tolist() == list(range(100))
    assert evenly_spaced(100, 3).tolist() == [0, 50, 99]
    assert evenly_spaced(5, 10).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(7, 1).tolist() == [0]


# --- Blender ---------------------------------------------------------------------------------------


def test_blender_lego_downscaled(lego_path):
    scene = load_blender(lego_path, downscale=8, limit=2)
    assert scene.name == "lego" and (scene.height, scene.width) == (50, 50)
    assert not scene.ndc and (scene.near, scene.far) == (2.0, 6.0) and scene.background == (1.0, 1.0, 1.0)
    assert math.isclose(scene.focal, 0.5 * 50 / math.tan(0.5 * LEGO_ANGLE_X), rel_tol=1e-4)
    for split in ("train", "val", "test"):
        views = scene.split(split)
        assert views.images.shape == (2, 50, 50, 3) and views.images.dtype == np.float32
        assert views.poses.shape == (2, 4, 4) and views.poses.dtype == np.float32
        assert views.images.min() >= 0.0 and views.images.max() <= 1.0
        np.testing.assert_allclose(views.poses[:, 3], np.tile([0, 0, 0, 1], (2, 1)))

    # train[0] is the first frame; a 50x50 pixel whose whole 8x8 source block has alpha 0 is exactly white.
    meta = json.loads((lego_path / "transforms_train.json").read_text())
    alpha = np.asarray(Image.open(lego_path / (meta["frames"][0]["file_path"] + ".png")))[..., 3]
    empty = alpha.reshape(50, 8, 50, 8).max(axis=(1, 3)) == 0
    assert empty.any() and (~empty).any()
    assert np.all(scene.train.images[0][empty] == 1.0)
    np.testing.assert_allclose(scene.train.poses[0], meta["frames"][0]["transform_matrix"], atol=1e-6)


def test_blender_lego_full_resolution_alpha_zero_pixel_is_background(lego_path):
    scene = load_blender(lego_path, limit=1, background=(0.0, 0.0, 0.0))
    assert scene.train.images.shape == (1, 400, 400, 3)
    meta = json.loads((lego_path / "transforms_train.json").read_text())
    alpha = np.asarray(Image.open(lego_path / (meta["frames"][0]["file_path"] + ".png")))[..., 3]
    assert np.all(scene.train.images[0][alpha == 0] == 0.0)


def test_blender_hand_made_composite_and_limit(tmp_path):
    root = make_blender(tmp_path / "toy", n=3)
    scene = load_blender(root, background=(0.0, 1.0, 0.0), limit=2)
    assert scene.name == "toy" and len(scene.train) == 2 and scene.train.images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(scene.train.images[0, 0, 0], [1.0, 0.0, 0.0])  # opaque red
    np.testing.assert_array_equal(scene.train.images[0, 0, -1], [0.0, 1.0, 0.0])  # transparent -> background
    assert scene.train.poses[:, 2, 3].tolist() == [4.0, 6.0]  # frames 0 and 2 of 3
    assert scene.train.coverage is not None and scene.train.coverage.shape == (2, 8, 8)
    assert np.all(scene.train.coverage[:, :, :4] == 1.0) and np.all(scene.train.coverage[:, :, 4:] == 0.0)
    half = load_blender(root, downscale=4)
    assert (half.height, half.width) == (2, 2)
    np.testing.assert_allclose(half.focal, scene.focal / 4)
    np.testing.assert_array_equal(half.test.coverage[0], [[1.0, 0.0], [1.0, 0.0]])


def test_blender_bad_inputs(tmp_path):
    with raises_one_line("nope' does not exist"):
        load_blender(tmp_path / "nope")

    root = make_blender(tmp_path / "no_frames")
    edit_json(root, "val", lambda m: m.pop("frames"))
    with raises_one_line("transforms_val.json' has no frames"):
        load_blender(root)

    root = make_blender(tmp_path / "empty_frames")
    edit_json(root, "test", lambda m: m.update(frames=[]))
    with raises_one_line("has no frames"):
        load_blender(root)

    root = make_blender(tmp_path / "missing_image")
    (root / "train" / "r_1.png").unlink()
    with raises_one_line("r_1.png' is missing"):
        load_blender(root)

    root = make_blender(tmp_path / "mixed")
    write_png(root / "train" / "r_1.png", np.zeros((6, 10, 4), np.uint8))
    with raises_one_line("mixed sizes: 8x8"):
        load_blender(root)
    with raises_one_line("10x6"):
        load_blender(root)

    root = make_blender(tmp_path / "mixed_splits")
    for i in range(2):
        write_png(root / "test" / f"r_{i}.png", np.zeros((4, 4, 4), np.uint8))
    with raises_one_line("mixed sizes: 8x8 (train) and 4x4 (test)"):
        load_blender(root)

    root = make_blender(tmp_path / "bad_pose")
    edit_json(root, "train", lambda m: m["frames"][1].update(transform_matrix=np.eye(3).tolist()))
    with raises_one_line("shape (3, 3); allowed: a finite 4x4"):
        load_blender(root)

    root = make_blender(tmp_path / "bad_json")
    (root / "transforms_train.json").write_text('{"camera_angle_x": 0.69, "frames": [')
    with raises_one_line("transforms_train.json' is malformed JSON"):
        load_blender(root)

    root = make_blender(tmp_path / "bad_angle")
    edit_json(root, "train", lambda m: m.pop("camera_angle_x"))
    with raises_one_line("camera_angle_x None"):
        load_blender(root)

    root = make_blender(tmp_path / "corrupt_png")
    (root / "val" / "r_0.png").write_bytes(b"not a png")
    with raises_one_line("r_0.png' is unreadable"):
        load_blender(root)


# --- LLFF ------------------------------------------------------------------------------------------


def test_llff_to_opengl_reorders_axes():
    rng = np.random.default_rng(1)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    down, right, back = rot[:, 0], rot[:, 1], rot[:, 2]
    row = llff_row(down, right, back, [1.0, 2.0, 3.0], [24, 32, 40], [1.0, 5.0])
    poses, bounds, hwf = llff_to_opengl(row[None])
    np.testing.assert_allclose(poses[0, :3, 0], right)
    np.testing.assert_allclose(poses[0, :3, 1], -down)
    np.testing.assert_allclose(poses[0, :3, 2], back)
    np.testing.assert_allclose(poses[0, :3, 3], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(poses[0, 3], [0, 0, 0, 1])
    assert bounds.tolist() == [[1.0, 5.0]] and hwf.tolist() == [[24.0, 32.0, 40.0]]


def test_llff_loads_images_folder_and_converts_poses(tmp_path):
    root = make_llff(tmp_path / "fern")
    scene = load_llff(root, downscale=4, recenter=False)
    assert scene.name == "fern" and scene.ndc and (scene.near, scene.far) == (0.0, 1.0)
    assert (scene.height, scene.width) == (6, 8) and scene.focal == pytest.approx(10.0)  # 40 / 4
    # Every 8th image (0 and 8 of 9) is test; the 4th of the others (image 4) is val, not trained on.
    assert scene.train.images.shape == (6, 6, 8, 3) and scene.test.images.shape == (2, 6, 8, 3)
    assert scene.val.images.shape == (1, 6, 8, 3)
    assert scene.train.poses.dtype == np.float32 and scene.train.images.dtype == np.float32
    # LLFF [down, right, back] = [-y, x, z] is OpenGL identity; translation scaled by 1 / (min bound * 0.75).
    np.testing.assert_allclose(scene.test.poses[0], np.eye(4), atol=1e-7)
    scale = 1.0 / (2.0 * 0.75)
    np.testing.assert_allclose(scene.test.poses[1, :3, 3], [0.8 * scale, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        scene.train.poses[:, 0, 3], 0.1 * scale * np.array([1, 2, 3, 5, 6, 7]), rtol=1e-6
    )
    np.testing.assert_allclose(scene.val.poses[0, :3, 3], [0.4 * scale, 0.0, 0.0], rtol=1e-6)
    expected = np.asarray(Image.open(root / "images_4" / "IMG_001.png"), np.float32) / 255
    np.testing.assert_allclose(scene.train.images[0], expected)


def test_llff_recenter_and_limit(tmp_path):
    root = make_llff(tmp_path / "scene")
    scene = load_llff(root, downscale=4)
    everything = np.concatenate([scene.train.poses, scene.val.poses, scene.test.poses])  # all 9 once
    np.testing.assert_allclose(everything[:, :3, 3].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(everything[0, :3, :3], np.eye(3), atol=1e-6)
    limited = load_llff(root, downscale=4, limit=3)
    assert len(limited.train) == 3 and len(limited.val) == 1 and len(limited.test) == 2


def test_llff_downscales_full_images_when_no_scaled_folder(tmp_path):
    root = make_llff(tmp_path / "scene", folder="images", size=(12, 16))
    scene = load_llff(root, downscale=2)
    assert (scene.height, scene.width) == (6, 8) and scene.focal == pytest.approx(20.0)
    full = np.asarray(Image.open(root / "images" / "IMG_001.png"), np.float32) / 255
    np.testing.assert_allclose(scene.train.images[0], area_downscale(full, 2), rtol=1e-6)


def test_llff_bad_inputs(tmp_path):
    root = make_llff(tmp_path / "only_4")
    with raises_one_line("neither images/ nor images_1/ for downscale 1; found: images_4"):
        load_llff(root)

    root = make_llff(tmp_path / "bad_shape")
    np.save(root / "poses_bounds.npy", np.zeros((9, 15)))
    with raises_one_line("shape (9, 15); allowed: (N, 17)"):
        load_llff(root, downscale=4)

    root = make_llff(tmp_path / "count")
    (root / "images_4" / "IMG_003.png").unlink()
    with raises_one_line("has 8 images but poses_bounds.npy has 9 poses"):
        load_llff(root, downscale=4)

    root = make_llff(tmp_path / "two", n=2)
    with raises_one_line("has 2 image(s); allowed: at least 3"):
        load_llff(root, downscale=4)

    root = make_llff(tmp_path / "mixed")
    write_png(root / "images_4" / "IMG_002.png", np.zeros((5, 5, 3), np.uint8))
    with raises_one_line("mixed sizes: 8x6"):
        load_llff(root, downscale=4)


def test_llff_splits_are_disjoint_and_cover_every_view():
    """Test every 8th view (nerf-pytorch); val every 8th of the rest, never a test or training view."""
    for n in range(3, 70):
        train, val, test = split_ids(n)
        assert len(train) and len(val) and len(test)
        assert sorted([*train, *val, *test]) == list(range(n))  # disjoint, and nothing left out
        assert list(test) == list(range(0, n, 8))
    assert [list(ids) for ids in split_ids(20)[1:]] == [[4, 13], [0, 8, 16]]  # fern's 20 views


# --- npz -------------------------------------------------------------------------------------------


def test_npz_split_and_downscale(tmp_path):
    path = make_npz(tmp_path / "tiny.npz", n=20)
    scene = load_npz(path)
    assert scene.name == "tiny" and not scene.ndc and (scene.near, scene.far) == (2.0, 6.0)
    # the last 10% are test, the 10% before them val (disjoint from test), the rest train
    assert (len(scene.train), len(scene.val), len(scene.test)) == (16, 2, 2)
    assert scene.background == (0.0, 0.0, 0.0) and scene.focal == 5.0
    with np.load(path) as data:
        np.testing.assert_array_equal(scene.test.images, data["images"][18:])
        np.testing.assert_array_equal(scene.val.images, data["images"][16:18])
        np.testing.assert_array_equal(scene.train.images, data["images"][:16])
    half = load_npz(path, downscale=2, limit=4)
    assert half.train.images.shape == (4, 4, 4, 3) and half.focal == 2.5 and len(half.test) == 2


def test_npz_rgba_uint8_and_3x4_poses(tmp_path):
    path = tmp_path / "rgba.npz"
    images = np.zeros((3, 2, 2, 4), np.uint8)
    images[:, 0, 0] = (0, 0, 255, 255)
    np.savez(path, images=images, poses=np.tile(np.eye(4)[:3], (3, 1, 1)), focal=3.0)
    scene = load_npz(path)
    assert scene.background == (1.0, 1.0, 1.0) and [len(scene.split(s)) for s in SPLITS] == [1, 1, 1]
    np.testing.assert_array_equal(scene.train.images[0, 0, 0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(scene.train.images[0, 1, 1], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(scene.train.poses[0], np.eye(4))


def test_npz_bad_inputs(tmp_path):
    with raises_one_line("does not exist"):
        load_npz(tmp_path / "nope.npz")
    with raises_one_line("poses of shape (10, 3, 3); allowed: (10, 4, 4) or (10, 3, 4)"):
        load_npz(make_npz(tmp_path / "p33.npz", pose_shape=(3, 3)))
    np.savez(tmp_path / "nofocal.npz", images=np.zeros((2, 4, 4, 3)), poses=np.zeros((2, 4, 4)))
    with raises_one_line("lacks focal"):
        load_npz(tmp_path / "nofocal.npz")
    with raises_one_line("has 2 view(s); allowed: at least 3 (one train, one validation, one test)"):
        load_npz(make_npz(tmp_path / "two.npz", n=2))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with raises_one_line("junk.npz' is unreadable"):
        load_npz(tmp_path / "junk.npz")


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_deterministic_and_seeded():
    a = make_synthetic_scene(seed=3, resolution=32, n_train=6, n_val=2, n_test=3)
    b = make_synthetic_scene(seed=3, resolution=32, n_train=6, n_val=2, n_test=3)
    c = make_synthetic_scene(seed=4, resolution=32, n_train=6, n_val=2, n_test=3)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(split).images, b.split(split).images)
        np.testing.assert_array_equal(a.split(split).poses, b.split(split).poses)
    assert not np.array_equal(a.train.images, c.train.images)
    assert a.train.images.shape == (6, 32, 32, 3) and a.val.images.shape == (2, 32, 32, 3)
    assert a.test.poses.shape == (3, 4, 4)


def test_synthetic_default_scene():
    scene = make_synthetic_scene()
    assert (scene.height, scene.width) == (64, 64)
    assert (len(scene.train), len(scene.val), len(scene.test)) == (40, 4, 8)
    assert scene.focal == pytest.approx(0.5 * 64 / math.tan(0.5 * LEGO_ANGLE_X))
    assert (scene.near, scene.far, scene.ndc, scene.background) == (2.0, 6.0, False, (1.0, 1.0, 1.0))
    for views in (scene.train, scene.val, scene.test):
        images = views.images
        assert images.dtype == np.float32 and images.min() >= 0.0 and images.max() <= 1.0
        # Every view shows something, and every view has white background around it.
        assert np.all((images < 1.0).any(axis=-1).mean(axis=(1, 2)) > 0.1)
        assert np.all(images[:, 0, 0] == 1.0)
        # Cameras at radius 4, looking at the origin, rotation orthonormal.
        np.testing.assert_allclose(np.linalg.norm(views.poses[:, :3, 3], axis=-1), 4.0, rtol=1e-5)
        back = views.poses[:, :3, 2]
        np.testing.assert_allclose(back, views.poses[:, :3, 3] / 4.0, atol=1e-5)
        rot = views.poses[:, :3, :3]
        identity = np.broadcast_to(np.eye(3), rot.shape)
        np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), identity, atol=1e-5)
        assert np.all(views.poses[:, 2, 3] > 0)  # upper hemisphere
    # Test cameras are not train cameras.
    dists = np.linalg.norm(scene.test.poses[:, None, :3, 3] - scene.train.poses[None, :, :3, 3], axis=-1)
    assert dists.min() > 1e-3


def test_synthetic_bad_inputs():
    with raises_one_line("resolution 0 is invalid"):
        make_synthetic_scene(resolution=0)
    with raises_one_line("n_test -1 is invalid"):
        make_synthetic_scene(n_test=-1)


# --- load_scene ------------------------------------------------------------------------------------


def test_load_scene_dispatches(tmp_path):
    assert load_scene(make_blender(tmp_path / "b")).name == "b"
    llff = load_scene(make_llff(tmp_path / "l"), downscale=4)
    assert llff.ndc and llff.background == (0.0, 0.0, 0.0)
    assert load_scene(str(make_npz(tmp_path / "n.npz"))).name == "n"
    synthetic = load_scene("synthetic", downscale=4, limit=2, seed=1)
    assert synthetic.name == "synthetic" and synthetic.height == 16 and len(synthetic.train) == 2
    assert load_scene("synthetic", downscale=64, limit=1).height == 8
    white = load_scene(make_npz(tmp_path / "w.npz"), background=(1, 1, 1))
    assert white.background == (1.0, 1.0, 1.0)


def test_load_scene_bad_inputs(tmp_path):
    with raises_one_line(f"{str(tmp_path / 'missing')!r} does not exist"):
        load_scene(tmp_path / "missing")
    (tmp_path / "unknown").mkdir()
    (tmp_path / "unknown" / "readme.txt").write_text("hi")
    with raises_one_line("is not a known scene format; allowed: 'synthetic'"):
        load_scene(tmp_path / "unknown")
    with raises_one_line("transforms_train.json"):
        load_scene(tmp_path / "unknown" / "readme.txt")
    for bad in (0, -2, 1.5, "2"):
        with raises_one_line(f"downscale {bad!r} is invalid; it must be a positive integer"):
            load_scene("synthetic", downscale=bad)
    with raises_one_line("downscale 0 is invalid"):
        load_blender(tmp_path, downscale=0)
    with raises_one_line("limit 0 is invalid"):
        load_scene("synthetic", limit=0)
    with raises_one_line("background"):
        load_scene("synthetic", background=(2, 0, 0))
