"""The container's definitions agree with each other (quick checks for `make test`;
tests/container builds and runs the image itself)."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support import REPO_ROOT, compose
from tests.support.nginx import SHIPPED_CONF, TLS_VARIABLES, envsubst
from tests.support.podman import (
    DOCKERFILE,
    LABEL_OF_ARG,
    build_args,
    project_urls,
    project_version,
    revision,
)

# Instructions of the Dockerfile reference (plain Docker / BuildKit builds it too).
DOCKER_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "LABEL", "USER",
                       "VOLUME", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "CMD", "ENTRYPOINT",
                       "SHELL", "ONBUILD"}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0], line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def _dockerfile_healthcheck() -> dict[str, object]:
    """The HEALTHCHECK instruction in `docker inspect` form."""
    [args] = [a for i, a in _instructions() if i == "HEALTHCHECK"]
    options, command = args.split(" CMD ", 1)
    result: dict[str, object] = {"Test": ["CMD", *json.loads(command)]}
    names = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod"}
    for option in shlex.split(options):
        key, value = option.removeprefix("--").split("=", 1)
        if key == "retries":
            result["Retries"] = int(value)
        else:
            result[names[key]] = round(compose.seconds(value) * 1e9)
    return result


def test_dockerfile_uses_only_docker_instructions() -> None:
    used = {instruction for instruction, _ in _instructions()}
    assert used <= DOCKER_INSTRUCTIONS, used - DOCKER_INSTRUCTIONS


def test_dockerfile_version_default_is_the_projects() -> None:
    args = dict(a.split("=", 1) for i, a in _instructions() if i == "ARG" and "=" in a)
    assert args["VERSION"] == project_version()
    # A plain `docker build` labels the image with pyproject.toml's URLs too.
    urls = project_urls()
    assert args["SOURCE_URL"] == urls["Source"]
    assert args["DOCUMENTATION_URL"] == urls["Documentation"]
    for label in ("version", "revision", "created", "source", "documentation"):
        assert any(i == "LABEL" and f"org.opencontainers.image.{label}=" in a
                   for i, a in _instructions()), label


def test_compose_healthcheck_is_the_dockerfiles() -> None:
    for name, service in compose.gateway_services().items():
        diffs = compose.image_healthcheck_matches(service["healthcheck"],
                                                  _dockerfile_healthcheck())
        assert diffs == [], name


def test_compose_gateway_service_translates_for_the_test_run() -> None:
    services = compose.gateway_services()
    assert len(services) == 2
    for service in services.values():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        run = compose.podman_run(service, overrides={"GATEWAY_SERVER_PORT": "1"},
                                 cache_volume="v")
        assert run.cache_path == "/var/cache/image-gateway"
        assert "--read-only" in run.args and "--init" in run.args
        assert run.stop_timeout == 15
        assert f"GATEWAY_SERVER_WORKERS={run.env['GATEWAY_SERVER_WORKERS']}" in run.args


def test_compose_translation_refuses_what_it_does_not_know() -> None:
    service = {**compose.gateway_service(), "cap_add": ["NET_ADMIN"]}
    with pytest.raises(ValueError, match="cap_add"):
        compose.podman_run(service, overrides={}, cache_volume="v")
    with pytest.raises(ValueError, match="GATEWAY_LIMITS_RATE"):
        compose.podman_run(compose.gateway_service(),
                           overrides={"GATEWAY_LIMITS_RATE": "0"}, cache_volume="v")


def test_compose_interpolation_and_durations() -> None:
    assert compose.interpolate("${A:-x}") == "x"
    assert compose.interpolate("${A:-x}", {"A": "y"}) == "y"
    assert compose.interpolate("$$HOME ${B}") == "$HOME "
    assert compose.seconds("1m30s") == 90
    assert compose.seconds("500ms") == 0.5
    with pytest.raises(ValueError):
        compose.seconds("15 seconds")


def test_default_run_leaves_only_the_container_tests_out() -> None:
    """`make test` (pytest's testpaths) runs every test folder but tests/container,
    which `make test-container` runs."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        testpaths = tomllib.load(f)["tool"]["pytest"]["ini_options"]["testpaths"]
    folders = {str(p.parent.relative_to(REPO_ROOT)).split("/")[:2][-1]
               for p in (REPO_ROOT / "tests").rglob("test_*.py")}
    assert {f"tests/{f}" for f in folders} - set(testpaths) == {"tests/container"}
    # pyproject.toml's comment names the test that keeps the list whole: this one.
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    named = set(re.findall(r"tests/[\w/]+\.py", pyproject))
    assert "tests/unit/test_deploy_container.py" in named
    assert all((REPO_ROOT / path).is_file() for path in named), named
    assert "test_default_run_leaves_only_the_container_tests_out" in pyproject
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"(?m)^test-container:.*\n(\t.*\n)*\t\$\(BIN\)/pytest tests/container",
                     makefile)
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert ci.index("make test\n") < ci.index("make test-container\n")



def _deploy_env_names() -> set[str]:
    """Every environment variable the deploy files set."""
    names: set[str] = set()
    for service in compose.gateway_services().values():
        names |= set(compose.environment(service))
    k8s = REPO_ROOT / "deploy" / "k8s"
    names |= set(yaml.safe_load((k8s / "configmap.yaml").read_text())["data"])
    names |= set(yaml.safe_load((k8s / "secret.example.yaml").read_text())["stringData"])
    for doc in yaml.safe_load_all((k8s / "deployment.yaml").read_text()):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            names |= {item["name"] for item in container.get("env", [])}
    stage = ""
    for instruction, args in _instructions():
        if instruction == "FROM":
            stage = args.split()[-1]
        elif instruction == "ENV" and stage == "runtime":  # the builder's never ship
            names |= set(re.findall(r"(\w+)=", args))
    return names


def test_deploy_readme_describes_every_variable_the_deploy_files_set() -> None:
    readme = (REPO_ROOT / "deploy" / "README.md").read_text()
    table = readme[readme.index("<!-- deploy-env"):readme.index("<!-- /deploy-env -->")]
    described = {name for row in table.splitlines()[3:]
                 for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert _deploy_env_names() - described == set()
    assert described - _deploy_env_names() == set()  # no row for a variable nobody sets


def test_the_image_installs_the_tracing_extra_and_never_the_test_one() -> None:
    """Operators run the image: OpenTelemetry is in it, off until OTEL_* turns it on.
    The requirements are the very lines the builder's python -c prints."""
    [command] = [a for i, a in _instructions()
                 if i == "RUN" and "requirements.txt" in a and "tomllib" in a]
    code = re.search(r'python -c "(.*?)"\s*>', command)
    assert code is not None
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    namespace: dict[str, object] = {}
    printed: list[str] = []
    exec(code.group(1).replace("print(", "printed.append("),
         {"printed": printed,
          "open": lambda *_: io.BytesIO((REPO_ROOT / "pyproject.toml").read_bytes())},
         namespace)
    lines = printed[0].splitlines()
    assert lines == project["dependencies"] + project["optional-dependencies"]["tracing"]
    assert not set(lines) & set(project["optional-dependencies"]["test"])
    assert any(line.startswith("opentelemetry-instrumentation-aiohttp-server")
               for line in lines)


def test_compose_renders_nginx_conf_once_with_the_images_templates() -> None:
    """compose's nginx gets deploy/nginx.conf as a template of the official image's
    entrypoint (20-envsubst-on-templates.sh): rendered into /etc/nginx/nginx.conf at
    start, only the certificate placeholders substituted."""
    nginx = compose.load()["services"]["nginx"]
    env = compose.environment(nginx)
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in nginx["volumes"]}
    assert mounts["/etc/nginx/templates/nginx.conf.template"] == "./nginx.conf"
    assert "/etc/nginx/nginx.conf" not in mounts  # the entrypoint writes it
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    placeholders = set(re.findall(r"\$\{(\w+)\}", SHIPPED_CONF.read_text()))
    assert placeholders == set(TLS_VARIABLES)
    # The entrypoint substitutes the variables of its environment whose names match
    # the filter: exactly the placeholders, never the image's own (NGINX_VERSION...).
    matches = re.compile(env["NGINX_ENVSUBST_FILTER"]).search
    assert {name for name in env if matches(name)} == placeholders
    for name in ("NGINX_VERSION", "NJS_VERSION", "PKG_RELEASE", "PATH", "HOME", "HOSTNAME"):
        assert not matches(name), name
    # The paths are in the volume tls-init fills.
    assert mounts["/etc/nginx/tls"] == "tls"
    assert {env[name] for name in placeholders} == {"/etc/nginx/tls/tls.crt",
                                                     "/etc/nginx/tls/tls.key"}
    rendered = envsubst(SHIPPED_CONF.read_text(), {n: env[n] for n in placeholders})
    assert "${" not in rendered
    assert "ssl_certificate     /etc/nginx/tls/tls.crt;" in rendered
    assert "ssl_certificate_key /etc/nginx/tls/tls.key;" in rendered


def test_revision_label_says_dirty_when_a_tracked_file_changed(tmp_path: Path) -> None:
    """The image is built from the work tree: its revision label must not name HEAD
    alone when tracked files differ from HEAD."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "tracked.txt").write_text("one\n")
    git("add", "tracked.txt")
    git("commit", "-q", "-m", "one")
    sha = git("rev-parse", "HEAD")
    assert revision(tmp_path) == sha
    (tmp_path / "untracked.txt").write_text("never in the context\n")
    assert revision(tmp_path) == sha
    (tmp_path / "tracked.txt").write_text("two\n")
    assert revision(tmp_path) == f"{sha}-dirty"
    git("add", "tracked.txt")  # staged counts as well: it is in the work tree
    assert revision(tmp_path) == f"{sha}-dirty"
    git("commit", "-q", "-m", "two")
    assert revision(tmp_path) == git("rev-parse", "HEAD")
    (tmp_path / "tracked.txt").unlink()  # deleted from the work tree: not HEAD's tree
    assert revision(tmp_path).endswith("-dirty")


def test_build_args_set_every_oci_label_of_the_dockerfile() -> None:
    """Each label built from an argument gets it from build_args (pyproject.toml, git)."""
    [labels] = [a for i, a in _instructions() if i == "LABEL"]
    from_args = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="\$\{(\w+)\}"', labels))
    assert from_args == {label: arg for arg, label in LABEL_OF_ARG.items()}
    args = build_args()
    assert set(args) == set(LABEL_OF_ARG)
    urls = project_urls()
    assert (args["SOURCE_URL"], args["DOCUMENTATION_URL"]) == (
        urls["Source"], urls["Documentation"])


COMPOSE_SCHEMA = REPO_ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"


def _compose_schema_errors(document: object) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_is_valid_for_the_compose_specification() -> None:
    """deploy/compose.yaml against the Compose Specification's own JSON schema
    (vendored: tests/data/compose-spec/README.md), so `docker compose` would take it."""
    assert _compose_schema_errors(compose.load()) == []
    # The schema catches a misspelt key (services are additionalProperties: false).
    broken = compose.load()
    broken["services"]["nginx"]["volumez"] = broken["services"]["nginx"].pop("volumes")
    assert any("volumez" in error for error in _compose_schema_errors(broken))
