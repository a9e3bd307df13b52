"""``gan.images``: the one lister, decoder, square resize, grid and PNG writer of both packages."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gan.images import (
    IMAGE_EXTENSIONS, decode_rgb, images_to_uint8, is_image_name, list_images, make_grid, read_rgb, save_png,
    square_resize, to_rgb8,
)
from gan.util import UserError


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda: Image.new("L", (4, 4), 77), (77, 77, 77)),
        (lambda: Image.new("1", (4, 4), 1), (255, 255, 255)),
        (lambda: Image.fromarray(np.full((4, 4), 65535, np.uint16)), (255, 255, 255)),
        (lambda: Image.fromarray(np.full((4, 4), 257 * 100, np.uint16)), (100, 100, 100)),
        (lambda: Image.new("I", (4, 4), 257 * 40), (40, 40, 40)),
        (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 0)), (128, 128, 128)),
        (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 255)), (255, 0, 0)),
        (lambda: Image.new("LA", (4, 4), (0, 128)), (64, 64, 64)),
        (lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: Image.new("RGB", (4, 4), (0, 0, 255)).convert("P"), (0, 0, 255)),
    ],
    ids=["L", "1", "I;16-max", "I;16-mid", "I", "RGBA-clear", "RGBA-opaque", "LA-half", "CMYK", "P"],
)
def test_to_rgb8_converts_every_mode_to_8bit_rgb(make, expect):
    out = to_rgb8(make())
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert tuple(int(v) for v in out[0, 0]) == expect


def test_decode_rgb_applies_exif_orientation_from_a_path_or_bytes(tmp_path):
    img = Image.new("RGB", (6, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif, quality=100)
    a, b = decode_rgb(path), decode_rgb(path.read_bytes())
    assert a.shape == (6, 2, 3) and np.array_equal(a, b)  # portrait after orientation
    assert read_rgb(path).shape == (3, 6, 2) and read_rgb(path).dtype == torch.uint8


def test_decode_rgb_fails_on_a_truncated_file(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="PNG")
    with pytest.raises(OSError):
        decode_rgb(buf.getvalue()[:60])


def test_list_images_is_recursive_sorted_and_skips_hidden_files(tmp_path):
    for rel in ["b/2.PNG", "a/1.jpg", "a-b/0.webp", ".hidden/x.png", "a/._x.jpg", "__MACOSX/y.png", "a/notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a-b/0.webp", "a/1.jpg", "b/2.PNG"]  # sorted as relative paths
    assert is_image_name("x/y.JPEG") and not is_image_name("x/.y.png") and ".bmp" in IMAGE_EXTENSIONS
    with pytest.raises(UserError, match="--real .*no images"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("no images here")
        list_images(tmp_path / "empty", what="--real")
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "absent")


def test_square_resize_crops_the_middle_and_uses_the_filter_asked_for():
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[:, 2:10] = 200  # the central 8x8 square is flat, the side bands black
    out = square_resize(rgb, 4, "box")
    assert out.shape == (4, 4, 3) and (out == 200).all()
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    box, lanczos = square_resize(noise, 4, "box"), square_resize(noise, 4, "lanczos")
    assert not np.array_equal(box, lanczos)
    assert np.abs(box.astype(int) - noise.reshape(4, 4, 4, 4, 3).mean((1, 3))).max() <= 1  # box = block mean
    assert square_resize(noise, 32).shape == (32, 32, 3)  # enlarging always works (Lanczos)
    assert np.array_equal(square_resize(noise, 16), noise)  # already the size: unchanged


def test_images_to_uint8_and_make_grid_lay_out_rows_and_columns(tmp_path):
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    assert images_to_uint8(x).flatten().tolist() == [0, 128, 255, 255]
    imgs = torch.arange(6, dtype=torch.uint8).reshape(6, 1, 1, 1).expand(6, 3, 2, 2)  # [6, 3, 2, 2]
    grid = make_grid(imgs, cols=3, rows=2)
    assert grid.shape == (4, 6, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 2, 0] == 1 and grid[2, 0, 0] == 3 and grid[3, 5, 0] == 5
    grey = make_grid(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), 2, 1)
    assert grey.shape == (2, 4, 3)
    save_png(tmp_path / "g.png", grid)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), grid)
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary left behind
