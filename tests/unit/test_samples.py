"""gateway.samples: valid, deterministic sample pictures for the local origin."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gateway import samples
from gateway.config import ASSETS
from tests.support import REPO_ROOT


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
            assert image.size == (samples.AVATAR_SIZE, samples.AVATAR_SIZE), name
            assert image.mode == "RGB"


def test_default_picture_is_copied_byte_for_byte(tmp_path: Path) -> None:
    samples.write_samples(tmp_path)
    assert (tmp_path / "default_pfp.png").read_bytes() == (ASSETS / "default_pfp.png").read_bytes()


def test_avatars_show_their_colours() -> None:
    background, figure = samples.AVATARS["alice"]
    image = decode(samples.sample_images()["alice.png"])
    size = samples.AVATAR_SIZE
    assert image.getpixel((0, 0)) == background
    assert image.getpixel((size // 2, int(size * 0.40))) == figure  # the head
    assert len({bytes(v) for v in samples.sample_images().values()}) == len(samples.AVATARS) + 1


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


def test_encode_png_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match="rows"):
        samples.encode_png(2, 2, [b"\x00" * 6])
    with pytest.raises(ValueError, match="3 \\* width"):
        samples.encode_png(2, 1, [b"\x00" * 5])


def test_encode_png_pixels_round_trip() -> None:
    rows = [bytes([10, 20, 30, 40, 50, 60]), bytes([70, 80, 90, 100, 110, 120])]
    image = decode(samples.encode_png(2, 2, rows))
    assert image.tobytes() == b"".join(rows)


def test_command_line_prints_one_line(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    result = subprocess.run(
        [sys.executable, "-m", "gateway.samples", str(target)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == f"samples: wrote {len(samples.AVATARS) + 1} of " \
                       f"{len(samples.AVATARS) + 1} images to {target}"
    assert result.stderr == ""
