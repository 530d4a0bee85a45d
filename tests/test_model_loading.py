"""Tests for riskgate.loading.model: spec resolution, file checks, loading and hashing."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
from pathlib import Path

import pytest

from riskgate.errors import CheckpointError, UsageError
from riskgate.loading.model import DType, ModelKind, hash_weight_files, load_model, model_summary
from riskgate.loading.scope import select_scope

TINY_PARAMETERS = 3264  # build_model defaults: embeddings 259 x 8 (tied head) + 2 blocks + final norm
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A writable copy of the tiny checkpoint folder."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"))


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _rewrite_tensors(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


# Loading a folder


def test_folder_loads_ready_for_diagnostics(tiny_checkpoint):
    loaded = load_model(str(tiny_checkpoint))

    assert loaded.kind is ModelKind.FOLDER
    assert loaded.source == str(tiny_checkpoint)
    assert loaded.resolved_path == str(tiny_checkpoint.resolve())
    assert loaded.architecture == "LlamaForCausalLM"
    assert loaded.model.config._attn_implementation == "eager"
    assert loaded.attention == "eager"
    assert loaded.model.training is False
    assert not any(parameter.requires_grad for parameter in loaded.model.parameters())
    assert loaded.parameters_total == TINY_PARAMETERS
    assert loaded.tokenizer.eos_token == "<|im_end|>"


def test_folder_default_dtype_float32(tiny_checkpoint):
    import torch

    loaded = load_model(str(tiny_checkpoint))

    assert loaded.dtype == "float32"
    assert {parameter.dtype for parameter in loaded.model.parameters()} == {torch.float32}


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16", DType.FLOAT32])
def test_folder_dtype_override(tiny_checkpoint, dtype):
    import torch

    loaded = load_model(str(tiny_checkpoint), dtype=dtype)

    expected = DType(dtype).value
    assert loaded.dtype == expected
    assert {parameter.dtype for parameter in loaded.model.parameters()} == {getattr(torch, expected)}


def test_dtype_unknown_rejected(tiny_checkpoint):
    with pytest.raises(UsageError, match="float64, float32, bfloat16, float16"):
        load_model(str(tiny_checkpoint), dtype="int8")


def test_folder_weights_match_checkpoint(tiny_checkpoint):
    from safetensors.torch import load_file

    loaded = load_model(str(tiny_checkpoint), dtype="float64")

    saved = load_file(tiny_checkpoint / "model.safetensors")
    state = loaded.model.state_dict()
    for name, tensor in saved.items():
        assert state[name].equal(tensor), name


def test_folder_model_second_derivatives(tiny_checkpoint):
    import torch

    loaded = load_model(str(tiny_checkpoint), dtype="float64")
    weight = loaded.model.model.layers[1].mlp.up_proj.weight
    weight.requires_grad_(True)
    input_ids = torch.tensor([[5, 40, 41, 42, 7]])

    loss = loaded.model(input_ids=input_ids, labels=input_ids).loss
    (gradient,) = torch.autograd.grad(loss, weight, create_graph=True)
    (hessian_vector,) = torch.autograd.grad((gradient * gradient.detach()).sum(), weight)

    assert torch.isfinite(hessian_vector).all()
    assert hessian_vector.abs().max() > 0


def test_sha256_is_file_hash_and_stable(tiny_checkpoint):
    first = load_model(str(tiny_checkpoint))
    second = load_model(str(tiny_checkpoint))

    assert first.weights_sha256 == _sha256(tiny_checkpoint / "model.safetensors")
    assert second.weights_sha256 == first.weights_sha256


def test_sha256_changes_with_one_byte(checkpoint_copy):
    before = load_model(str(checkpoint_copy)).weights_sha256

    # The last 8 bytes are one little-endian float64 element. Flipping the lowest mantissa
    # bit changes that weight slightly and keeps it finite.
    data = bytearray((checkpoint_copy / "model.safetensors").read_bytes())
    data[-8] ^= 0x01
    (checkpoint_copy / "model.safetensors").write_bytes(bytes(data))
    after = load_model(str(checkpoint_copy)).weights_sha256

    assert after != before
    assert after == _sha256(checkpoint_copy / "model.safetensors")


def test_sharded_folder_hash_of_lines(tmp_path):
    from tiny_models import build_model, build_tokenizer

    folder = tmp_path / "sharded"
    build_model().save_pretrained(folder, max_shard_size="10KB")
    build_tokenizer().save_pretrained(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 2

    loaded = load_model(str(folder))

    lines = "".join(f"{shard.name}:{_sha256(shard)}\n" for shard in shards)
    assert loaded.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert hash_weight_files(list(reversed(shards))) == loaded.weights_sha256
    assert loaded.parameters_total == TINY_PARAMETERS


def test_model_summary_fields(tiny_checkpoint):
    loaded = load_model(str(tiny_checkpoint))

    summary = model_summary(loaded)

    assert summary == {
        "source": str(tiny_checkpoint),
        "kind": "folder",
        "sha256": _sha256(tiny_checkpoint / "model.safetensors"),
        "dtype": "float32",
        "architecture": "LlamaForCausalLM",
        "parameters_total": TINY_PARAMETERS,
        "attention": "eager",
    }


def test_unused_tensor_logged_not_fatal(checkpoint_copy, caplog):
    import torch

    _rewrite_tensors(checkpoint_copy, lambda tensors: tensors.update(extra=torch.zeros(2, 2, dtype=torch.float64)))

    with caplog.at_level(logging.WARNING, logger="riskgate.loading.model"):
        loaded = load_model(str(checkpoint_copy))

    assert loaded.parameters_total == TINY_PARAMETERS
    assert "extra" in caplog.text


# Resolution errors


def test_missing_path_rejected(tmp_path):
    spec = str(tmp_path / "nowhere")

    with pytest.raises(CheckpointError, match="no such file or folder") as caught:
        load_model(spec)

    assert str(caught.value).startswith(spec)


def test_plain_file_rejected(checkpoint_copy):
    spec = str(checkpoint_copy / "model.safetensors")

    with pytest.raises(CheckpointError, match="not a .gguf file"):
        load_model(spec)


def test_revision_with_local_path_rejected(tiny_checkpoint):
    with pytest.raises(UsageError, match="--revision"):
        load_model(str(tiny_checkpoint), revision="main")


# Hugging Face cache


@pytest.fixture
def fake_hub_cache(tiny_checkpoint, tmp_path, monkeypatch) -> Path:
    """A hub cache holding org/tiny-llama at FAKE_COMMIT, with refs/main pointing to it."""
    cache = tmp_path / "hf-home" / "hub"
    repo = cache / "models--org--tiny-llama"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / FAKE_COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return cache


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Record (and block) every outgoing socket connection attempt."""
    attempts: list = []

    def blocked(*args, **kwargs):
        attempts.append(args)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    return attempts


def test_hub_cache_loads_from_hf_home(fake_hub_cache, no_network):
    loaded = load_model("org/tiny-llama")

    assert loaded.kind is ModelKind.HUB_CACHE
    assert loaded.source == "org/tiny-llama"
    assert Path(loaded.resolved_path) == fake_hub_cache / "models--org--tiny-llama" / "snapshots" / FAKE_COMMIT
    assert loaded.parameters_total == TINY_PARAMETERS
    assert no_network == []


def test_hub_cache_honours_hf_hub_cache(fake_hub_cache, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub_cache))

    loaded = load_model("org/tiny-llama", revision=FAKE_COMMIT)

    assert loaded.kind is ModelKind.HUB_CACHE
    assert loaded.resolved_path.endswith(FAKE_COMMIT)


def test_hub_cache_unknown_revision(fake_hub_cache, no_network):
    with pytest.raises(CheckpointError, match="not found in the local Hugging Face cache"):
        load_model("org/tiny-llama", revision="v9")

    assert no_network == []


def test_hub_id_absent_never_downloads(fake_hub_cache, no_network):
    with pytest.raises(CheckpointError) as caught:
        load_model("org/absent-model")

    message = str(caught.value)
    assert message.startswith("org/absent-model: not found in the local Hugging Face cache")
    assert f"({fake_hub_cache})" in message
    assert "hf download org/absent-model" in message
    assert no_network == []


# Pickle weights


_unpickled_calls: list = []


def _record_unpickle() -> str:
    _unpickled_calls.append(True)
    return "ran"


class _CodeOnLoad:
    def __reduce__(self):
        return (_record_unpickle, ())


def _pickle_folder(tiny_checkpoint: Path, folder: Path, extra: dict | None = None, name: str = "pytorch_model.bin"):
    import torch
    from safetensors.torch import load_file

    folder.mkdir()
    for file in tiny_checkpoint.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, folder / file.name)
    state = load_file(tiny_checkpoint / "model.safetensors")
    state.update(extra or {})
    torch.save(state, folder / name)
    return folder


def test_pickle_rejected_without_opt_in(tiny_checkpoint, tmp_path):
    folder = _pickle_folder(tiny_checkpoint, tmp_path / "pickled")

    with pytest.raises(CheckpointError, match="--allow-pickle") as caught:
        load_model(str(folder))

    assert str(caught.value).startswith(str(folder.resolve()))
    assert "pytorch_model.bin" in str(caught.value)


def test_pickle_loads_with_opt_in(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    folder = _pickle_folder(tiny_checkpoint, tmp_path / "pickled")

    loaded = load_model(str(folder), allow_pickle=True, dtype="float64")

    assert loaded.kind is ModelKind.PICKLE
    assert loaded.weights_sha256 == _sha256(folder / "pytorch_model.bin")
    saved = load_file(tiny_checkpoint / "model.safetensors")
    state = loaded.model.state_dict()
    assert state["model.layers.1.mlp.up_proj.weight"].equal(saved["model.layers.1.mlp.up_proj.weight"])


def test_pickle_code_never_runs(tiny_checkpoint, tmp_path):
    folder = _pickle_folder(tiny_checkpoint, tmp_path / "pickled", extra={"payload": _CodeOnLoad()})
    _unpickled_calls.clear()

    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_model(str(folder), allow_pickle=True)

    assert _unpickled_calls == []


def test_pickle_other_name_rejected(tiny_checkpoint, tmp_path):
    folder = _pickle_folder(tiny_checkpoint, tmp_path / "pickled", name="weights.pt")

    with pytest.raises(CheckpointError, match="must be named pytorch_model.bin"):
        load_model(str(folder), allow_pickle=True)


# Remote code


def test_remote_code_rejected(checkpoint_copy):
    _edit_config(checkpoint_copy, auto_map={"AutoModelForCausalLM": "modeling_custom.CustomModel"})

    with pytest.raises(CheckpointError, match="--trust-remote-code") as caught:
        load_model(str(checkpoint_copy))

    assert str(caught.value).startswith(str(checkpoint_copy.resolve() / "config.json"))


def test_remote_code_opt_in_passes_check(checkpoint_copy):
    _edit_config(checkpoint_copy, auto_map={"AutoModelForCausalLM": "modeling_custom.CustomModel"})

    # With the opt-in the check passes, and loading fails only because the code file is absent.
    with pytest.raises(CheckpointError) as caught:
        load_model(str(checkpoint_copy), trust_remote_code=True)

    assert "--trust-remote-code" not in str(caught.value)
    assert "modeling_custom" in str(caught.value)


# Corrupt checkpoints: each error names the file at fault


def _break_nan(folder: Path) -> None:
    def edit(tensors):
        tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")

    _rewrite_tensors(folder, edit)


def _break_inf(folder: Path) -> None:
    def edit(tensors):
        tensors["model.norm.weight"][3] = float("inf")

    _rewrite_tensors(folder, edit)


def _truncate_safetensors(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 100])


def _drop_tensor(folder: Path) -> None:
    _rewrite_tensors(folder, lambda tensors: tensors.pop("model.layers.1.mlp.down_proj.weight"))


def _reshape_tensor(folder: Path) -> None:
    import torch

    def edit(tensors):
        tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3, dtype=torch.float64)

    _rewrite_tensors(folder, edit)


def _remove_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).unlink()


CORRUPTIONS = [
    ("config_missing", lambda f: (f / "config.json").unlink(), "config.json", "not found"),
    ("config_malformed", lambda f: (f / "config.json").write_text('{"model_type": "llama",'), "config.json",
     "invalid JSON at line 1"),
    ("config_no_model_type", lambda f: _edit_config(f, model_type=None), "config.json", "model_type"),
    ("architecture_unknown", lambda f: _edit_config(f, model_type="nosuchmodel"), "config.json", "'nosuchmodel'"),
    ("architecture_not_causal", lambda f: _edit_config(f, model_type="vit"), "config.json",
     "not a causal language model"),
    ("safetensors_garbage", lambda f: (f / "model.safetensors").write_bytes(b"\x07" * 4000), "model.safetensors",
     "invalid or truncated safetensors"),
    ("safetensors_truncated", _truncate_safetensors, "model.safetensors", "invalid or truncated safetensors"),
    ("weights_missing", lambda f: (f / "model.safetensors").unlink(), "model.safetensors", "no weight files"),
    ("adapter_only", lambda f: (f / "model.safetensors").rename(f / "adapter_model.safetensors"),
     "adapter_model.safetensors", "not a full checkpoint"),
    ("tensor_missing", _drop_tensor, "model.safetensors", "model.layers.1.mlp.down_proj.weight"),
    ("tensor_shape", _reshape_tensor, "model.safetensors", "shape (3, 3)"),
    ("weights_nan", _break_nan, "model.safetensors", "model.layers.1.mlp.up_proj.weight contains NaN or Inf"),
    ("weights_inf", _break_inf, "model.safetensors", "model.norm.weight contains NaN or Inf"),
    ("tokenizer_missing", _remove_tokenizer, "tokenizer.json", "no tokenizer files"),
    ("tokenizer_broken", lambda f: (f / "tokenizer.json").unlink(), "checkpoint", "tokenizer could not be loaded"),
]


@pytest.mark.parametrize(
    ("corrupt", "file_name", "expected"),
    [case[1:] for case in CORRUPTIONS],
    ids=[case[0] for case in CORRUPTIONS],
)
def test_corrupt_checkpoint_names_file(checkpoint_copy, corrupt, file_name, expected):
    corrupt(checkpoint_copy)

    with pytest.raises(CheckpointError) as caught:
        load_model(str(checkpoint_copy))

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(checkpoint_copy.resolve()))
    assert file_name in message
    assert expected in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00" * 64, "not a GGUF file"),
        (b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 56, "could not be loaded"),
        (b"GGUF" + b"\x03\x00\x00\x00" + b"garbage", "could not be loaded"),
    ],
    ids=["garbage", "header_broken", "header_truncated"],
)
def test_corrupt_gguf_names_file(tmp_path, content, expected):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)

    with pytest.raises(CheckpointError) as caught:
        load_model(str(path))

    message = str(caught.value)
    assert "broken.gguf" in message
    assert expected in message


# The real model (one GGUF load for the whole module)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_model(str(smollm2_gguf))


@pytest.mark.real_model
def test_gguf_loads_smollm2(smollm2, smollm2_gguf):
    assert smollm2.kind is ModelKind.GGUF
    assert smollm2.architecture == "LlamaForCausalLM"
    assert smollm2.parameters_total == 134_515_008
    assert smollm2.dtype == "float32"
    assert smollm2.model.config._attn_implementation == "eager"
    assert smollm2.resolved_path == str(smollm2_gguf.resolve())
    assert smollm2.weights_sha256 == _sha256(smollm2_gguf)


@pytest.mark.real_model
def test_gguf_tokenizer_chat_template(smollm2):
    text = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
    )

    assert smollm2.tokenizer.chat_template
    assert "<|im_start|>user\nHello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.real_model
def test_gguf_default_scope_size(smollm2):
    scope = select_scope(smollm2.model, None)

    assert scope.numel == 7_077_888
    assert len(scope.names) == 14
    assert all(name.startswith(("model.layers.28.", "model.layers.29.")) for name in scope.names)
