"""Big-model placement: a model spread by a device map, with modules offloaded to disk.

On this CPU-only machine the map spreads a tiny model over "cpu" and "disk", which runs
accelerate's placement hooks for real. The offloaded blocks are read back from disk at every
forward pass; for a safetensors checkpoint, accelerate reads them from the checkpoint file. The numbers must match an undivided run with the same
Hessian-vector product method.
"""

from __future__ import annotations

import json
import math

import pytest

import riskgate
from chat_files import write_chat
from riskgate.budget import Budget
from riskgate.errors import UsageError
from riskgate.report.summary import input_rows
from tiny_models import save_checkpoint

BUDGET = Budget(max_safety_examples=6, max_finetune_examples=4, max_seq_len=64)
DISK_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "disk", "model.layers.2": "cpu",
            "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("device-map")
    checkpoint = save_checkpoint(folder / "model", num_layers=4)
    finetune = write_chat(folder / "finetune.jsonl", [(f"Spell {i}.", f"{i}: done.") for i in range(8)])
    safety = write_chat(folder / "safety.jsonl", [(f"Poison person {i}.", "I won't help with that.") for i in range(8)])
    policy = folder / "policy.yaml"
    policy.write_text("schema_version: 1\nname: m\nextends: default\nsamples: {min_safety_examples: 4, min_finetune_examples: 2}\n")
    device_map = folder / "device_map.json"
    device_map.write_text(json.dumps(DISK_MAP))
    return checkpoint, finetune, safety, policy, device_map


def _check(setup, **overrides):
    checkpoint, finetune, safety, policy, _ = setup
    arguments = dict(safety_data=safety, learning_rate=1e-3, max_steps=20, batch_size=2, optimizer="sgd", budget=BUDGET)
    arguments.update(overrides)
    return riskgate.check(str(checkpoint), finetune, policy, **arguments).report


def test_disk_offload_matches_undivided_model(setup, tmp_path):
    _, _, _, _, device_map = setup
    spread = _check(setup, device_map=device_map, offload_dir=tmp_path)
    whole = _check(setup, hvp_method="finite_difference")

    # Per block: q and o 8 x 8, k and v 4 x 8 (one key-value head of 4), MLP 3 x 8 x 16, two norms of 8.
    block = 2 * 64 + 2 * 32 + 3 * 8 * 16 + 2 * 8
    assert spread["engine"]["device_map"] == {"cpu": spread["model"]["parameters_total"] - 2 * block, "disk": 2 * block}
    assert spread["engine"]["hvp_method"] == "finite_difference"
    model_row = input_rows(spread)[0]
    assert f"spread by a device map (parameters per device: cpu {spread['engine']['device_map']['cpu']:,}" in model_row[3]
    for section in ("initial_orthogonality", "curvature_coupling"):
        for key, value in whole["checks"][section].items():
            if isinstance(value, float):
                assert math.isclose(value, spread["checks"][section][key], rel_tol=1e-9, abs_tol=1e-12), key


def test_strategy_auto_keeps_a_small_model_whole(setup):
    report = _check(setup, device_map="auto")
    assert report["engine"]["device_map"] == {"cpu": report["model"]["parameters_total"]}
    assert report["engine"]["hvp_method"] == "finite_difference"


def test_scope_on_disk_is_rejected(setup, tmp_path):
    _, _, _, _, device_map = setup
    with pytest.raises(UsageError, match="model.layers.0.self_attn.q_proj.weight is offloaded to disk"):
        _check(setup, device_map=device_map, offload_dir=tmp_path, params=["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize(("device_map", "offload", "message"), [
    ("everywhere", None, "neither one of auto"),
    (None, "offload", "--offload-dir is only used with --device-map"),
    ("map", None, "give --offload-dir"),
])
def test_bad_device_map_options(setup, tmp_path, device_map, offload, message):
    if device_map == "map":
        device_map = setup[4]
    with pytest.raises(UsageError, match=message):
        _check(setup, device_map=device_map, offload_dir=None if offload is None else tmp_path)


def test_device_map_file_must_map_names_to_devices(setup, tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"model.layers.0": True}))
    with pytest.raises(UsageError, match="must map module names to devices"):
        _check(setup, device_map=bad)


def test_gguf_cannot_be_offloaded_to_disk(tmp_path):
    from riskgate.loading.model import load_model

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(UsageError, match="GGUF file, which transformers cannot offload to disk"):
        load_model(str(gguf), device_map={"model.layers.0": "disk"})


def test_cli_bad_device_map_exits_2(setup, tmp_path):
    from click.testing import CliRunner

    from riskgate.cli import main
    from riskgate.errors import ExitCode

    checkpoint, finetune, safety, policy, _ = setup
    result = CliRunner().invoke(main, ["check", "--model", str(checkpoint), "--dataset", str(finetune),
                                       "--policy", str(policy), "--safety-data", str(safety),
                                       "--device-map", "everywhere", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "--device-map everywhere: neither one of auto" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("entry", "message"), [
    ({"lm_head": "cuda:99"}, r"'lm_head' is mapped to 'cuda:99', but this machine has \d+ CUDA devices"),
    ({"lm_head": "tpu"}, "'lm_head' is mapped to 'tpu', which is not a device"),
    ({"model.layers.9": "cpu"}, "'model.layers.9' is not a module of this model"),
    ({"model.embed_tokens": "disk"}, "transformers could not place the model"),
])
def test_bad_map_entries_are_named(setup, tmp_path, entry, message):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({**DISK_MAP, **entry}))
    with pytest.raises(UsageError, match=message):
        _check(setup, device_map=path, offload_dir=tmp_path)


def test_missing_map_file_is_not_found(setup, tmp_path):
    with pytest.raises(UsageError, match="missing.json: file not found"):
        _check(setup, device_map=tmp_path / "missing.json")


def test_api_mapping_entries_are_checked(setup):
    with pytest.raises(UsageError, match="must map module names to devices"):
        _check(setup, device_map={"model.layers.0": True})
