"""LocalOrigin: keys map to nested files, and nothing outside the root is ever read or
written, whatever the folder holds (symlinks out of it, FIFOs, folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import IMAGE_TYPES
from gateway.errors import BadRequest, NotFound, OriginError
from gateway.origin import Fetched
from gateway.origin.local import LocalOrigin
from tests.support.images import noise_png

ALLOWED = frozenset(IMAGE_TYPES)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): the origin's folder and a sibling with a secret picture."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(noise_png(99))
    return root, outside


def origin(root: Path) -> LocalOrigin:
    return LocalOrigin(root, max_bytes=1_000_000, allowed_types=ALLOWED)


@pytest.mark.parametrize("key", ["a/b/c.png", "日本/sp ace+%.png", "a\\b.png", ".hidden/x.png",
                                 "user:1/url"])
async def test_nested_keys_are_nested_files(tree, key):
    root, _ = tree
    path = root.joinpath(*key.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(noise_png(1))
    fetched = await origin(root).fetch(key)
    assert isinstance(fetched, Fetched) and fetched.body == noise_png(1)
    assert (await origin(root).probe(key)).size == len(noise_png(1))


async def test_symlinked_file_pointing_out_is_not_followed(tree):
    root, outside = tree
    (root / "link.png").symlink_to(outside / "secret.png")
    with pytest.raises(NotFound):
        await origin(root).fetch("link.png")
    with pytest.raises(NotFound):
        await origin(root).probe("link.png")


async def test_symlinked_folder_pointing_out_is_not_followed(tree):
    root, outside = tree
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "deep").mkdir()
    (root / "deep" / "out").symlink_to(outside, target_is_directory=True)
    for key in ("out/secret.png", "deep/out/secret.png"):
        with pytest.raises(NotFound):
            await origin(root).fetch(key)


async def test_no_symlink_is_followed_even_inside_the_root(tree):
    root, _ = tree
    (root / "real.png").write_bytes(noise_png(2))
    (root / "alias.png").symlink_to(root / "real.png")
    with pytest.raises(NotFound):
        await origin(root).fetch("alias.png")


@pytest.mark.parametrize("key", ["../outside/secret.png", "a/../../outside/secret.png",
                                 "/etc/passwd", "a//b", "..\\outside\\secret.png"])
async def test_keys_outside_the_rules_are_refused(tree, key):
    root, _ = tree
    with pytest.raises(BadRequest):
        await origin(root).fetch(key)


async def test_folders_fifos_and_files_in_the_way_are_not_objects(tree):
    root, _ = tree
    (root / "dir").mkdir()
    (root / "file.png").write_bytes(noise_png(3))
    os.mkfifo(root / "fifo.png")
    for key in ("dir", "fifo.png", "file.png/x.png", "missing/x.png", "x" * 300):
        with pytest.raises(NotFound):
            await origin(root).fetch(key)


async def test_store_makes_nested_folders_and_leaves_no_temp_file(tree):
    root, _ = tree
    await origin(root).store("new/sub dir/a+b.png", noise_png(4), "image/png")
    assert (root / "new" / "sub dir" / "a+b.png").read_bytes() == noise_png(4)
    await origin(root).store("new/sub dir/a+b.png", noise_png(5), "image/png")
    assert os.listdir(root / "new" / "sub dir") == ["a+b.png"]
    fetched = await origin(root).fetch("new/sub dir/a+b.png")
    assert isinstance(fetched, Fetched) and fetched.body == noise_png(5)


async def test_store_never_writes_through_a_symlink(tree):
    root, outside = tree
    (root / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OriginError):
        await origin(root).store("out/secret.png", noise_png(6), "image/png")
    (root / "over.png").symlink_to(outside / "secret.png")
    await origin(root).store("over.png", noise_png(7), "image/png")  # replaces the link
    assert not (root / "over.png").is_symlink()
    assert (outside / "secret.png").read_bytes() == noise_png(99)
    assert sorted(os.listdir(outside)) == ["secret.png"]
