"""The container image, built and run with podman (no Docker engine on these machines).

    base = ensure_base_image()                       # tools/container-base-image.sh
    image = build_image(base)                        # deploy/Dockerfile, clean context
    image.tag, image.size, image.labels, image.healthcheck
    box = Container(image.tag, "gw-1", ["-e", "GATEWAY_SERVER_PORT=18080"]).start()
    box.exec("id", "-u").stdout
    box.stop(timeout=15)                             # SIGTERM, then the exit code
    box.remove()

Every podman call runs with runc and explicit rlimits: on these machines (hybrid
cgroups) crun and podman's default limits fail. The build context is what git
tracks (``git ls-files``, the files as they are in the work tree), copied to a
temp dir: a clean clone's context, so nothing untracked leaks into the image; with
edits not yet committed, the revision label says ``<sha>-dirty``.
Image and containers live in podman's own storage, never in the repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
BASE_SCRIPT = REPO_ROOT / "tools" / "container-base-image.sh"
IMAGE_REPO = "localhost/image-gateway"
# deploy/Dockerfile's own label: every image of this project carries it, and only those.
PROJECT_LABEL = "org.opencontainers.image.title=image-gateway"
# On every container and volume the tests make, so that an interrupted run's
# leftovers (running containers hold host ports) are found and removed.
TEST_LABEL = "image-gateway-test=1"
_RUNC_CANDIDATES = ("/usr/sbin/runc", "/usr/bin/runc")


class PodmanUnavailable(RuntimeError):
    """podman or runc is missing: `make test-container` installs them."""


def _find(name: str, candidates: Sequence[str] = ()) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise PodmanUnavailable(
        f"{name} not found: run `make test-container` (it installs podman, runc, "
        "catatonit and debootstrap through tools/ensure-system-deps.sh)"
    )


def podman_argv() -> list[str]:
    return [_find("podman", ("/usr/bin/podman",)), "--runtime", _find("runc", _RUNC_CANDIDATES)]


def rlimit_args() -> list[str]:
    """--ulimit flags the OCI runtime may set here: podman's defaults (nofile 1M) are
    above this machine's hard limits and make runc fail; nproc as the issue found."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=1024:1024"]


def podman(*args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """One podman command; with check, a failure raises with its output."""
    result = subprocess.run([*podman_argv(), *args], capture_output=True, text=True,
                            timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args[:3])}... exited {result.returncode}:\n"
            f"{result.stderr[-4000:]}{result.stdout[-2000:]}"
        )
    return result


def ensure_base_image() -> str:
    """The local Debian + Python base (built once, then cached by its inputs' hash)."""
    result = subprocess.run(["bash", str(BASE_SCRIPT)], capture_output=True, text=True,
                            timeout=900, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{BASE_SCRIPT.name} failed ({result.returncode}):\n"
                           f"{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def _git(*args: str, repo: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def revision(repo: Path = REPO_ROOT) -> str:
    """HEAD's commit, with ``-dirty`` when a tracked file differs from it: the context
    is the work tree (developers test their edits), so a label naming HEAD alone
    would claim an image that HEAD never produced. Untracked files never enter the
    context (``clean_context``), so they do not count."""
    sha = _git("rev-parse", "HEAD", repo=repo)
    changed = _git("status", "--porcelain", "--untracked-files=no", repo=repo)
    return f"{sha}-dirty" if changed else sha


def clean_context(dest: Path) -> Path:
    """Copy what git tracks (and nothing else) into ``dest``: the build context."""
    for name in _git("ls-files", "-z").split("\0"):
        if not name:
            continue
        src = REPO_ROOT / name
        if not src.is_file():  # deleted in the work tree, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def _project() -> dict[str, Any]:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def project_version() -> str:
    return str(_project()["version"])


def project_urls() -> dict[str, str]:
    """pyproject.toml's [project.urls]: the one place the OCI source and
    documentation labels come from."""
    return {name: str(url) for name, url in _project()["urls"].items()}


# Build argument of deploy/Dockerfile -> the org.opencontainers.image.* label it sets.
LABEL_OF_ARG = {"VERSION": "version", "REVISION": "revision", "CREATED": "created",
                "SOURCE_URL": "source", "DOCUMENTATION_URL": "documentation"}


def build_args() -> dict[str, str]:
    """The OCI annotation values, from git and pyproject.toml."""
    urls = project_urls()
    return {
        "VERSION": project_version(),
        "REVISION": revision(),
        "CREATED": _git("log", "-1", "--format=%cI"),
        "SOURCE_URL": urls["Source"],
        "DOCUMENTATION_URL": urls["Documentation"],
    }


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    args: dict[str, str]
    inspect: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.inspect["Size"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.inspect["Config"].get("Labels") or {})

    @property
    def healthcheck(self) -> dict[str, Any]:
        # podman keeps it beside Config (docker inside it): either place.
        found = self.inspect.get("Healthcheck") or self.inspect["Config"].get("Healthcheck")
        return dict(found or {})

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.inspect["Config"])


def build_image(base: str, tag: str = f"{IMAGE_REPO}:test") -> BuiltImage:
    """deploy/Dockerfile, unchanged, on ``base``, from a clean context.

    --format docker: the OCI image format has no HEALTHCHECK, and podman drops it.
    """
    args = {"PYTHON_IMAGE": base, **build_args()}
    with tempfile.TemporaryDirectory(prefix="image-gateway-context-") as tmp:
        context = clean_context(Path(tmp))
        argv = ["build", "--format", "docker", "--network", "host", *rlimit_args(),
                "-f", str(context / DOCKERFILE.relative_to(REPO_ROOT)), "-t", tag]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        podman(*argv, str(context), timeout=900)
        built = _inspect(tag, base, args)
        if not _labels_carry(built, args):
            # podman 4.3's builder (buildah 1.28) keys a cached LABEL step on its
            # text, not on the build arguments in it: a new commit would keep the
            # last build's revision. Docker has no such cache; build it afresh.
            podman(*argv, "--no-cache", str(context), timeout=900)
            built = _inspect(tag, base, args)
    prune_dangling()
    return built


def prune_dangling() -> None:
    """Drop this project's untagged images: each build moves the tag and leaves the
    previous image behind (251 MB shown, ~100 MB of it its own: the venv layer).
    Only dangling ones carrying the project's label: the layers a next build may
    reuse are parents of the tagged image, and the builder stage's last step (a few
    MB, no label) stays as build cache."""
    podman("image", "prune", "-f", "--filter", f"label={PROJECT_LABEL}", timeout=300)


def dangling_images() -> list[str]:
    """Ids of this project's untagged images."""
    return podman("images", "-q", "--filter", "dangling=true",
                  "--filter", f"label={PROJECT_LABEL}").stdout.split()


def _inspect(tag: str, base: str, args: dict[str, str]) -> BuiltImage:
    inspect = json.loads(podman("image", "inspect", tag).stdout)[0]
    return BuiltImage(tag=tag, base=base, args=args, inspect=inspect)


def _labels_carry(image: BuiltImage, args: dict[str, str]) -> bool:
    return all(image.labels.get(f"org.opencontainers.image.{label}") == args[key]
               for key, label in LABEL_OF_ARG.items())


class Container:
    """One container of the image: ``podman run -d`` with the caller's flags."""

    def __init__(self, image: str, name: str, run_args: Sequence[str] = ()) -> None:
        self.image = image
        self.name = name
        self.run_args = list(run_args)

    def start(self) -> Container:
        podman("rm", "-f", "-i", self.name, check=False)
        podman("run", "-d", "--name", self.name, "--label", TEST_LABEL, *rlimit_args(),
               *self.run_args, self.image)
        return self

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=check, timeout=30)

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(podman("container", "inspect", self.name).stdout)
        return data[0]

    def state(self) -> dict[str, Any]:
        return dict(self.inspect()["State"])

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """Run the container's healthcheck once (exit 0: healthy)."""
        return podman("healthcheck", "run", self.name, check=False, timeout=30)

    def stop(self, timeout: int) -> int:
        """SIGTERM (the image's STOPSIGNAL), SIGKILL after ``timeout`` s; the exit code."""
        podman("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return int(self.state()["ExitCode"])

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-v", "-i", "-t", "0", self.name, check=False)


@contextlib.contextmanager
def volume(name: str) -> Any:
    """A named podman volume, removed afterwards."""
    podman("volume", "rm", "-f", name, check=False)
    podman("volume", "create", "--label", TEST_LABEL, name)
    try:
        yield name
    finally:
        podman("volume", "rm", "-f", name, check=False)


def remove_leftovers() -> None:
    """Containers and volumes of an earlier, interrupted test run."""
    found = podman("ps", "-a", "-q", "--filter", f"label={TEST_LABEL}").stdout.split()
    if found:
        podman("rm", "-f", "-v", "-t", "0", *found, check=False)
    podman("volume", "prune", "-f", "--filter", f"label={TEST_LABEL}", check=False)
