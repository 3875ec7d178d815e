"""The deployment files agree with the code they deploy.

Every manifest under deploy/kubernetes is read: an environment variable a container gets
(`env`, or every key of a ConfigMap or Secret it takes with `envFrom`) must be a setting of
`app.config.Settings`, and every probe must ask for a path the container's command serves, on
the port it serves it on. The command is parsed by `replicator`'s own parser, so it must be
a real one; the Dockerfile's ENTRYPOINT and CMD too. Nothing is built or applied.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from packaging.markers import Marker
from packaging.requirements import Requirement
from pydantic import AliasChoices
from starlette.routing import Match

from app import cli, config, main
from app.worker import health

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]


DOCUMENTS = _documents()


@dataclass
class Container:
    where: str  # "worker.yaml: replicator-worker/worker", for the failure messages
    spec: dict[str, Any]


def _containers() -> Iterator[Container]:
    for file, doc in DOCUMENTS:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for spec in pod.get("initContainers", []) + pod.get("containers", []):
            yield Container(f"{file}: {doc['metadata']['name']}/{spec['name']}", spec)


CONTAINERS = list(_containers())


def setting_names() -> set[str]:
    """The variables Settings reads: each field's name, or its aliases when it has them."""
    names = set()
    for name, field in config.Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(name.upper())
    return names


def _source(kind: str, name: str) -> dict[str, str]:
    """The keys and values of the ConfigMap or Secret `name`, as the manifests define it."""
    for _, doc in DOCUMENTS:
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return {**doc.get("data", {}), **doc.get("stringData", {})}
    raise AssertionError(f"envFrom names {kind} {name!r}, which no manifest defines")


def environment(container: Container) -> dict[str, str | None]:
    """What the container's environment holds: envFrom's keys, then env (None: from a ref)."""
    variables: dict[str, str | None] = {}
    for source in container.spec.get("envFrom", []):
        prefix = source.get("prefix", "")
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in source:
                keys = _source(kind, source[field]["name"])
                variables |= {prefix + key: str(value) for key, value in keys.items()}
    for variable in container.spec.get("env", []):
        variables[variable["name"]] = variable.get("value")
    return variables


def _command(container: Container) -> list[str]:
    """The container's `replicator` arguments: its own, or the image's CMD."""
    entrypoint, cmd = dockerfile_entrypoint_and_cmd()
    assert container.spec.get("command", entrypoint) == entrypoint, (
        f"{container.where}: command is not the image's entrypoint {entrypoint}"
    )
    return list(container.spec.get("args", cmd))


def parse_command(args: list[str], where: str) -> argparse.Namespace:
    try:
        return cli.build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `replicator {' '.join(args)}` is not a command replicator takes")


def served(container: Container) -> tuple[int, Callable[[str], bool]]:
    """The port the container's command listens on, and whether it answers GET on a path."""
    command = parse_command(_command(container), container.where)
    if command.run is cli.serve.run:
        return command.port, _routed(main.create_app())
    assert command.run is cli.worker.run, f"{container.where}: a command this test does not know"
    port = environment(container).get("WORKER_PORT")
    default = config.Settings.model_fields["worker_port"].default
    return int(port) if port is not None else default, set(health.PATHS).__contains__


def _routed(app: FastAPI) -> Callable[[str], bool]:
    """Whether the app's router sends GET `path` to a route (asked the way Starlette asks)."""

    def routes(path: str) -> bool:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] is Match.FULL for route in app.routes)

    return routes


def dockerfile_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    """The final stage's ENTRYPOINT and CMD, in exec form (JSON arrays)."""
    found: dict[str, list[str]] = {}
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        instruction, _, rest = line.partition(" ")
        if instruction == "FROM":
            found.clear()
        elif instruction in ("ENTRYPOINT", "CMD"):
            found[instruction] = json.loads(rest)
    return found["ENTRYPOINT"], found["CMD"]


def test_manifests_are_found() -> None:
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {"Deployment", "ConfigMap", "Secret", "ScaledObject"} <= kinds
    assert {c.spec["name"] for c in CONTAINERS} >= {"api", "worker"}


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.where)
def test_every_environment_variable_is_a_setting(container: Container) -> None:
    unknown = set(environment(container)) - setting_names()
    assert not unknown, f"{container.where} sets {sorted(unknown)}: not settings of the service"


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.where)
def test_probes_ask_for_paths_the_container_serves(container: Container) -> None:
    port, serves = served(container)
    ports = {p.get("name"): p["containerPort"] for p in container.spec.get("ports", [])}
    assert port in ports.values(), f"{container.where}: serves on {port}, declares {ports}"
    assert {"livenessProbe", "readinessProbe"} <= set(container.spec), container.where
    for probe in PROBES:
        if probe not in container.spec:
            continue
        get = container.spec[probe]["httpGet"]
        probed = ports.get(get["port"], get["port"])  # a port's name, or its number
        assert probed == port, f"{container.where}: {probe} asks port {get['port']}, not {port}"
        assert serves(get["path"]), f"{container.where}: {probe} asks for {get['path']}: a 404"


def test_the_image_runs_replicator_serve_on_a_port_it_exposes() -> None:
    entrypoint, cmd = dockerfile_entrypoint_and_cmd()
    assert entrypoint == ["replicator"]
    command = parse_command(cmd, "Dockerfile CMD")
    assert command.run is cli.serve.run
    exposed = {
        int(port)
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("EXPOSE ")
        for port in line.split()[1:]
    }
    assert {command.port, config.Settings.model_fields["worker_port"].default} <= exposed


def test_the_image_copies_files_that_exist() -> None:
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not here"


def test_the_scaled_object_drains_the_workers_queue() -> None:
    scaled = next(doc for _, doc in DOCUMENTS if doc["kind"] == "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    target = scaled["spec"]["scaleTargetRef"]["name"]
    (worker,) = [c for c in CONTAINERS if c.where.split(": ")[1].startswith(f"{target}/")]
    assert parse_command(_command(worker), worker.where).run is cli.worker.run
    settings = environment(worker)
    assert trigger["metadata"]["queueURL"] == settings["SQS_QUEUE_URL"]
    assert trigger["metadata"]["awsRegion"] == settings["AWS_REGION"]


# The image installs the part of requirements.lock that deploy/runtime_requirements.py picks.


def _runtime_requirements() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runtime_requirements", ROOT / "deploy" / "runtime_requirements.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _applies_here(pin: str) -> bool:
    """Whether a lock line's environment marker (after ';') holds for this interpreter."""
    _, _, marker = pin.partition(";")
    return not marker.strip(" \\") or Marker(marker.strip(" \\")).evaluate()


@pytest.mark.parametrize(
    ("roots", "absent"),
    [
        (None, {"pytest", "moto", "mypy", "ruff", "hatchling", "httpx", "google-cloud-storage"}),
        ({"hatchling"}, {"pytest", "fastapi", "boto3"}),
    ],
    ids=["runtime", "hatchling"],
)
def test_the_image_gets_the_closure_of_what_it_needs(
    roots: set[str] | None, absent: set[str]
) -> None:
    """Every package the picked set holds has what it requires (as installed in this
    environment, extras aside) in the set too; the dev group stays out."""
    module = _runtime_requirements()
    entries = module.parse((ROOT / "requirements.lock").read_text(encoding="utf-8"))
    chosen = module.closure(entries, roots or {module.PROJECT})
    picked = {e.name for e in chosen}
    # Packages the lock pins for other Pythons only (async-timeout below 3.11.3) are not
    # installed here, so there is nothing to read their requirements from.
    here = {e.name for e in chosen if _applies_here(e.text.splitlines()[0])}
    if roots is None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        roots = {Requirement(r).name for r in project["project"]["dependencies"]}
    assert {_normalise(r) for r in roots} <= picked
    assert not absent & picked
    for name in here:
        missing = {
            _normalise(requirement.name)
            for requirement in map(Requirement, metadata.requires(name) or [])
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
        } - picked
        assert not missing, f"{name} requires {sorted(missing)}, which the image would lack"
