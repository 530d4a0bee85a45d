"""The Dockerfile: hadolint, its pins and settings, and its install steps in a fresh virtualenv.

No Docker daemon is needed. The install test builds the wheel with the Dockerfile's own
`pip wheel` command and installs it with its `pip install` command into a new virtualenv.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in dockerfile_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(entry.split(None, 1)[0].upper(), entry.split(None, 1)[1]) for entry in logical]


def pip_commands() -> list[list[str]]:
    """Return every `pip ...` command of the RUN instructions, split into arguments."""
    commands = []
    for name, arguments in instructions():
        if name != "RUN":
            continue
        for part in arguments.split("&&"):
            words = shlex.split(part)
            if words and words[0] == "pip":
                commands.append(words)
    return commands


def test_hadolint_clean():
    tool = shutil.which("hadolint") or str(VENV_BIN / "hadolint")
    if not Path(tool).exists():
        pytest.skip("hadolint is not installed: pip install -e '.[test]'")
    result = subprocess.run([tool, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_base_image_exact_tag():
    args = dict(arguments.split("=", 1) for name, arguments in instructions() if name == "ARG" and "=" in arguments)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", args["PYTHON_IMAGE"])
    froms = [arguments for name, arguments in instructions() if name == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_torch_pin_matches_action():
    args = dict(arguments.split("=", 1) for name, arguments in instructions() if name == "ARG" and "=" in arguments)
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
    assert args["TORCH_VERSION"] == action["inputs"]["torch-version"]["default"]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_INDEX_URL"] == action["inputs"]["torch-index-url"]["default"]


def test_runtime_settings():
    steps = instructions()
    runtime = steps[[name for name, _ in steps].index("FROM", 1):]
    env_text = " ".join(arguments for name, arguments in runtime if name == "ENV")
    assert "HF_HOME=/cache/huggingface" in env_text.split()
    assert "HF_HUB_OFFLINE=1" in env_text.split()
    assert ("VOLUME", '["/cache/huggingface"]') in runtime
    assert ("ENTRYPOINT", '["riskgate"]') in runtime
    assert ("WORKDIR", "/reports") in runtime
    users = [arguments for name, arguments in runtime if name == "USER"]
    assert users == ["10001:10001"]
    assert runtime[-2:] == [("ENTRYPOINT", '["riskgate"]'), ("CMD", '["--help"]')]


def test_copy_sources_exist():
    for name, arguments in instructions():
        if name != "COPY" or arguments.startswith("--from="):
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), source


def test_pip_commands_pinned():
    commands = pip_commands()
    assert [command[:2] for command in commands] == [["pip", "wheel"], ["pip", "install"], ["pip", "install"]]
    assert all("--no-cache-dir" in command for command in commands)
    assert 'torch==${TORCH_VERSION}' in commands[1]
    assert commands[1][commands[1].index("--index-url") + 1] == "${TORCH_INDEX_URL}"


def test_install_steps_fresh_venv(tmp_path):
    # NOTE: the wheel build needs hatchling. Without it in this environment, pip's build
    # isolation fetches it from a package index (50 s measured without network, waiting for the
    # unreachable index), so that path runs only with RISKGATE_SLOW_TESTS=1.
    build_isolated = importlib.util.find_spec("hatchling") is None
    if build_isolated and not os.environ.get("RISKGATE_SLOW_TESTS"):
        pytest.skip("hatchling is not installed; set RISKGATE_SLOW_TESTS=1 to build the wheel with build isolation")

    wheel_command, _torch_command, install_command = pip_commands()
    wheel_dir = tmp_path / "wheels"
    build = [sys.executable, "-m", *[word.replace("/wheels", str(wheel_dir)) for word in wheel_command[:-1]], str(REPO_ROOT)]
    if not build_isolated:
        build.insert(4, "--no-build-isolation")
    result = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheels = list(wheel_dir.glob("riskgate-*.whl"))
    assert len(wheels) == 1

    # The runtime install without dependencies: they come from this test's environment.
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(fresh)
    python = fresh / "bin" / "python"
    wheel_glob = install_command[-1]
    assert wheel_glob == "/wheels/riskgate-*.whl"
    install = [str(python), "-m", *install_command[:-1], "--no-deps", "--no-index", str(wheels[0])]
    result = subprocess.run(install, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    # Dependencies from this environment's site-packages, riskgate from the fresh install; the
    # working folder is tmp_path, so the source tree is not on sys.path.
    site_packages = next(Path(path) for path in sys.path if path.endswith("site-packages"))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site_packages), "HOME": str(tmp_path)}
    located = subprocess.run(
        [str(python), "-c", "import riskgate; print(riskgate.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert located.stdout.startswith(str(fresh)), located.stdout + located.stderr
    for preset in ("default", "strict", "permissive"):
        result = subprocess.run(
            [str(fresh / "bin" / "riskgate"), "policy", "validate", preset],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{preset}: valid policy {preset}\n"
    schema = list(fresh.glob("lib/python*/site-packages/riskgate/policy/policy.schema.json"))
    assert len(schema) == 1
