"""tools/make_samples.py: valid, deterministic sample pictures for the local origin."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from gateway.config_checks import ASSETS
from tests.support import REPO_ROOT
from tools import make_samples as samples

SIZE = samples.AVATAR_SIZE


def decode(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # checks the chunks' CRCs
    image = Image.open(io.BytesIO(data))
    image.load()  # inflates every row
    return image


def test_writes_valid_pngs_of_the_expected_size(tmp_path: Path) -> None:
    written, total = samples.write_samples(tmp_path / "new")
    assert written == total
    files = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert 6 <= len(files) <= 8
    assert "default_pfp.png" in files
    assert {f"{name}.png" for name in samples.AVATARS} <= set(files)
    for name in files:
        image = decode((tmp_path / "new" / name).read_bytes())
        assert image.format == "PNG", name
        if name == "default_pfp.png":
            with Image.open(ASSETS / "default_pfp.png") as asset:
                assert image.size == asset.size
        else:
            assert image.size == (SIZE, SIZE), name
            assert image.mode == "RGB"


def test_default_picture_is_copied_byte_for_byte(tmp_path: Path) -> None:
    samples.write_samples(tmp_path)
    assert (tmp_path / "default_pfp.png").read_bytes() == (ASSETS / "default_pfp.png").read_bytes()


@pytest.mark.parametrize("name", sorted(samples.AVATARS))
def test_avatars_show_a_figure_in_their_colours(name: str) -> None:
    background, figure = samples.AVATARS[name]
    image = decode(samples.sample_images()[f"{name}.png"])
    for corner in ((0, 0), (SIZE - 1, 0), (0, SIZE - 1), (SIZE - 1, SIZE - 1)):
        assert image.getpixel(corner) == background, corner
    assert image.getpixel((SIZE // 2, int(SIZE * 0.40))) == figure  # the head
    assert image.getpixel((SIZE // 2, SIZE - 1)) == figure  # the shoulders
    assert image.getpixel((SIZE // 2, int(SIZE * 0.15))) == background  # above the head
    assert image.getpixel((SIZE // 2, int(SIZE * 0.61))) == background  # the neck's sides
    assert image.getpixel((SIZE // 4, int(SIZE * 0.61))) == background
    colours = image.getcolors(SIZE * SIZE)
    assert colours is not None
    exact = {colour: count / (SIZE * SIZE) for count, colour in colours}
    assert exact[background] + exact[figure] > 0.85  # the rest: smoothed edges

    def nearer_the_figure(colour: tuple[int, int, int]) -> bool:
        return distance(colour, figure) < distance(colour, background)

    share = sum(part for colour, part in exact.items() if nearer_the_figure(colour))
    assert 0.2 < share < 0.4  # a figure, not a blot or a speck


def distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def test_every_picture_is_different() -> None:
    images = samples.sample_images()
    assert len(set(images.values())) == len(samples.AVATARS) + 1


def test_same_bytes_every_run_and_existing_files_are_skipped(tmp_path: Path) -> None:
    assert samples.sample_images() == samples.sample_images()
    first = samples.write_samples(tmp_path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert samples.write_samples(tmp_path) == (0, first[1])
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before


def test_a_changed_file_is_replaced(tmp_path: Path) -> None:
    samples.write_samples(tmp_path)
    (tmp_path / "bob.png").write_bytes(b"not a picture")
    (tmp_path / "extra.txt").write_text("left alone")
    assert samples.write_samples(tmp_path)[0] == 1
    assert (tmp_path / "bob.png").read_bytes() == samples.sample_images()["bob.png"]
    assert (tmp_path / "extra.txt").read_text() == "left alone"
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_default_picture_is_the_same_drawing_in_greys() -> None:
    """tools/make_default_pfp.py draws the committed asset with the samples' figure."""
    with Image.open(ASSETS / "default_pfp.png") as asset:
        committed = asset.convert("RGB")
    drawn = samples.silhouette(committed.size[0], (203, 213, 225), (100, 116, 139))
    # Near, not equal: another Pillow may smooth the edges a shade differently.
    difference = ImageStat.Stat(ImageChops.difference(drawn, committed))
    assert max(difference.mean) < 1.0


def test_the_runtime_package_carries_no_sample_tool() -> None:
    assert not (REPO_ROOT / "gateway" / "samples.py").exists()


def test_command_line_prints_one_line(tmp_path: Path) -> None:
    """As `make run` calls it: a script path, with nothing on PYTHONPATH."""
    target = tmp_path / "a" / "b"
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "tools/make_samples.py", str(target)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    total = len(samples.AVATARS) + 1
    assert lines[0] == f"samples: wrote {total} of {total} images to {target}"
    assert result.stderr == ""
    assert sorted(p.name for p in target.iterdir()) == sorted(samples.sample_images())


def test_command_line_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert samples.main([str(blocker / "samples")]) == 1
