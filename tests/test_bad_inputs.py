"""A corpus of bad inputs run through `riskgate check`: each must end in one error line.

Every case builds its input files in a fresh folder and runs the command line. The check
asserts the exit code: 2 for invalid input, 3 for the environment. The output must have exactly
one line that starts with `riskgate: error:`, and that line names the file, record or key at
fault. There must be no traceback, no code run from a checkpoint, and no report.json that
claims a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chat_files import write_chat
from click.testing import CliRunner

from riskgate.cli import main

ERROR_PREFIX = "riskgate: error:"
BUDGET = ["--max-safety-examples", "6", "--max-finetune-examples", "4", "--max-seq-len", "96"]
INJECTION = "::error::<script>alert(1)</script>|`x`@octocat"


@dataclass(frozen=True)
class Inputs:
    """Valid inputs that each case starts from and replaces in part."""

    model: Path
    finetune: Path
    safety: Path
    policy: Path


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, the extra flags, and the error it must give."""

    id: str
    build: Callable[[Path, Inputs], dict[str, str]]
    """Function that writes the case's files under its folder and returns placeholder values.

    The placeholders fill `args` and the base flags (model, dataset, safety, policy, out). An
    optional `sentinel` names a file that exists only if code from the input ran."""
    args: tuple[str, ...]
    exit_code: int
    expected: tuple[str, ...]
    """Substrings of the error line: the file, record or key first, then what is wrong."""
    env: dict[str, str] = field(default_factory=dict)
    known_gap: str = ""
    """Why the case fails today (marked xfail, strict), where the fix belongs to another module."""


# Builders: checkpoints


def copy_checkpoint(tmp: Path, inputs: Inputs) -> Path:
    return Path(shutil.copytree(inputs.model, tmp / "ckpt"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def rewrite_tensors(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def broken_checkpoint(corrupt: Callable[[Path], object]) -> Callable[[Path, Inputs], dict[str, str]]:
    """Return a builder that copies the tiny checkpoint and applies `corrupt` to the copy."""

    def build(tmp: Path, inputs: Inputs) -> dict[str, str]:
        folder = copy_checkpoint(tmp, inputs)
        corrupt(folder)
        return {"model": str(folder)}

    return build


def set_tensor_value(name: str, index: tuple[int, ...], value: float) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        def edit(tensors):
            tensors[name][index] = value

        rewrite_tensors(folder, edit)

    return corrupt


def drop_tensor(folder: Path) -> None:
    rewrite_tensors(folder, lambda tensors: tensors.pop("model.layers.1.mlp.down_proj.weight"))


def reshape_tensor(folder: Path) -> None:
    import torch

    def edit(tensors):
        tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3, dtype=torch.float64)

    rewrite_tensors(folder, edit)


def truncate_file(name: str, end: int) -> Callable[[Path], None]:
    """Return a corruption that keeps the bytes data[:end] of file `name` (end may be negative)."""

    def corrupt(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:end])

    return corrupt


def remove_files(*names: str) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return corrupt


def remove_chat_template(folder: Path) -> None:
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))


def template_without_assistant(folder: Path) -> None:
    """Install a chat template that renders only user turns, so responses render to nothing."""
    template = (
        "{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '<|im_start|>user\n' + message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    )
    (folder / "chat_template.jinja").write_text(template)


def chat_template(text: str) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        (folder / "chat_template.jinja").write_text(text)

    return corrupt


def small_vocabulary(tmp: Path, inputs: Inputs) -> dict[str, str]:
    """A checkpoint whose embedding has 100 rows while its byte tokenizer has 259 tokens."""
    from tiny_models import save_checkpoint

    return {"model": str(save_checkpoint(tmp / "ckpt", vocab_size=100))}


def shard_index_missing_shard(folder: Path) -> None:
    """Turn the weights into shard 1 of 2 with an index that lists a shard 2 that is absent."""
    from safetensors.torch import load_file

    names = sorted(load_file(folder / "model.safetensors"))
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {
        name: f"model-0000{1 + position % 2}-of-00002.safetensors" for position, name in enumerate(names)
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def shard_index_not_json(folder: Path) -> None:
    shard_index_missing_shard(folder)
    (folder / "model.safetensors.index.json").write_text("{not json")


class CodeOnUnpickle:
    """Pickles into a call of `open(path, "w")`, so unpickling it leaves a file behind."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_checkpoint(tmp: Path, inputs: Inputs, *, payload: bool) -> dict[str, str]:
    import torch
    from safetensors.torch import load_file

    folder = tmp / "pickled"
    folder.mkdir()
    for file in inputs.model.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, folder / file.name)
    state = load_file(inputs.model / "model.safetensors")
    sentinel = tmp / "unpickled.txt"
    if payload:
        state["payload"] = CodeOnUnpickle(sentinel)
    torch.save(state, folder / "pytorch_model.bin")
    return {"model": str(folder), "sentinel": str(sentinel)}


def remote_code_checkpoint(tmp: Path, inputs: Inputs) -> dict[str, str]:
    folder = copy_checkpoint(tmp, inputs)
    sentinel = tmp / "remote-code-ran.txt"
    (folder / "modeling_custom.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    edit_config(folder, auto_map={"AutoModelForCausalLM": "modeling_custom.CustomModel"})
    return {"model": str(folder), "sentinel": str(sentinel)}


def hub_id_not_cached(tmp: Path, inputs: Inputs) -> dict[str, str]:
    (tmp / "hub").mkdir()
    return {"model": "someorg/not-cached-model"}


def write_file(name: str, content: str | bytes, key: str) -> Callable[[Path, Inputs], dict[str, str]]:
    """Return a builder that writes one file and substitutes it for placeholder `key`."""

    def build(tmp: Path, inputs: Inputs) -> dict[str, str]:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return {key: str(path)}

    return build


# Builders: datasets


def chat_line(user: object, assistant: object) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})


GOOD = chat_line("Say hi.", "Hi!")


def dataset(name: str, *lines: str, key: str = "dataset") -> Callable[[Path, Inputs], dict[str, str]]:
    """Return a builder that writes `lines` (one per line) as a dataset file."""
    return write_file(name, "".join(line + "\n" for line in lines), key)


def saved_folder_without_dataset(tmp: Path, inputs: Inputs) -> dict[str, str]:
    folder = tmp / "not-a-dataset"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    return {"dataset": str(folder)}


def long_prompt_dataset(tmp: Path, inputs: Inputs) -> dict[str, str]:
    path = write_chat(tmp / "long-prompts.jsonl", [("x" * 200, "Sure."), ("y" * 300, "Fine.")])
    return {"dataset": str(path)}


# Builders: policies and plans


def policy_file(name: str, text: str) -> Callable[[Path, Inputs], dict[str, str]]:
    return write_file(name, textwrap.dedent(text), "policy")


def extends_cycle(tmp: Path, inputs: Inputs) -> dict[str, str]:
    (tmp / "cycle-a.yaml").write_text("schema_version: 1\nextends: cycle-b.yaml\n")
    (tmp / "cycle-b.yaml").write_text("schema_version: 1\nextends: cycle-a.yaml\n")
    return {"policy": str(tmp / "cycle-a.yaml")}


def train_config(name: str, text: str) -> Callable[[Path, Inputs], dict[str, str]]:
    return write_file(name, textwrap.dedent(text), "config")


def nothing(tmp: Path, inputs: Inputs) -> dict[str, str]:
    return {}


def output_under_file(tmp: Path, inputs: Inputs) -> dict[str, str]:
    (tmp / "a-file").write_text("not a folder")
    return {"out": str(tmp / "a-file" / "reports")}


def output_is_file(tmp: Path, inputs: Inputs) -> dict[str, str]:
    (tmp / "report-file").write_text("not a folder")
    return {"out": str(tmp / "report-file")}


CASES = [
    # Checkpoints
    Case("config_missing", broken_checkpoint(remove_files("config.json")), (), 2, ("config.json", "not found")),
    Case("config_malformed", broken_checkpoint(lambda f: (f / "config.json").write_text('{"model_type": "llama",')),
         (), 2, ("config.json", "invalid JSON at line 1")),
    Case("config_not_object", broken_checkpoint(lambda f: (f / "config.json").write_text("[1, 2]")),
         (), 2, ("config.json", "not a JSON object")),
    Case("config_not_utf8", broken_checkpoint(lambda f: (f / "config.json").write_bytes(b'{"model_type": "\xff"}')),
         (), 2, ("config.json", "cannot be read")),
    Case("config_no_model_type", broken_checkpoint(lambda f: edit_config(f, model_type=None)),
         (), 2, ("config.json", "no `model_type` key")),
    Case("config_unknown_model_type", broken_checkpoint(lambda f: edit_config(f, model_type="nosuchmodel")),
         (), 2, ("config.json", "'nosuchmodel' is unknown")),
    Case("config_not_causal", broken_checkpoint(lambda f: edit_config(f, model_type="vit")),
         (), 2, ("config.json", "not a causal language model")),
    Case("safetensors_truncated", broken_checkpoint(truncate_file("model.safetensors", -100)),
         (), 2, ("model.safetensors", "invalid or truncated safetensors")),
    Case("safetensors_header_cut", broken_checkpoint(truncate_file("model.safetensors", 20)),
         (), 2, ("model.safetensors", "invalid or truncated safetensors")),
    Case("safetensors_garbage",
         broken_checkpoint(lambda f: (f / "model.safetensors").write_bytes(b"\x07" * 4000)),
         (), 2, ("model.safetensors", "invalid or truncated safetensors")),
    Case("safetensors_empty", broken_checkpoint(lambda f: (f / "model.safetensors").write_bytes(b"")),
         (), 2, ("model.safetensors", "invalid or truncated safetensors")),
    Case("weights_missing", broken_checkpoint(remove_files("model.safetensors")),
         (), 2, ("ckpt", "no weight files")),
    Case("adapter_only",
         broken_checkpoint(lambda f: (f / "model.safetensors").rename(f / "adapter_model.safetensors")),
         (), 2, ("adapter_model.safetensors", "not a full checkpoint")),
    Case("tensor_missing", broken_checkpoint(drop_tensor),
         (), 2, ("model.safetensors", "model.layers.1.mlp.down_proj.weight")),
    Case("tensor_wrong_shape", broken_checkpoint(reshape_tensor),
         (), 2, ("model.safetensors", "model.layers.0.mlp.up_proj.weight has shape (3, 3)")),
    Case("weights_nan",
         broken_checkpoint(set_tensor_value("model.layers.1.mlp.up_proj.weight", (0, 0), float("nan"))),
         (), 2, ("model.safetensors", "model.layers.1.mlp.up_proj.weight contains NaN or Inf")),
    Case("weights_inf", broken_checkpoint(set_tensor_value("model.norm.weight", (3,), float("inf"))),
         (), 2, ("model.safetensors", "model.norm.weight contains NaN or Inf")),
    Case("weights_overflow_float16",
         broken_checkpoint(set_tensor_value("model.layers.0.mlp.up_proj.weight", (0, 1), 1e6)),
         ("--dtype", "float16"), 2, ("model.safetensors", "model.layers.0.mlp.up_proj.weight contains NaN or Inf")),
    Case("shard_index_invalid", broken_checkpoint(shard_index_not_json),
         (), 2, ("model.safetensors.index.json", "invalid shard index")),
    Case("shard_missing", broken_checkpoint(shard_index_missing_shard),
         (), 2, ("model-00002-of-00002.safetensors", "not found")),
    Case("pickle_without_opt_in", lambda tmp, inputs: pickle_checkpoint(tmp, inputs, payload=True),
         (), 2, ("pytorch_model.bin", "--allow-pickle")),
    Case("pickle_with_code", lambda tmp, inputs: pickle_checkpoint(tmp, inputs, payload=True),
         ("--allow-pickle",), 2, ("pickled", "objects other than tensors")),
    Case("remote_code_without_opt_in", remote_code_checkpoint,
         (), 2, ("config.json", "--trust-remote-code")),
    Case("hub_id_not_cached", hub_id_not_cached, (), 2,
         ("someorg/not-cached-model", "not found in the local Hugging Face cache"),
         env={"HF_HUB_CACHE": "{tmp}/hub"}),
    Case("model_path_missing", nothing, ("--model", "{tmp}/no/such/model"), 2,
         ("no/such/model", "no such file or folder")),
    Case("model_plain_file", write_file("weights.bin", b"\x00" * 16, "model"),
         (), 2, ("weights.bin", "not a .gguf file")),
    Case("gguf_garbage", write_file("garbage.gguf", b"\x00" * 64, "model"),
         (), 2, ("garbage.gguf", "not a GGUF file")),
    Case("gguf_empty", write_file("empty.gguf", b"", "model"), (), 2, ("empty.gguf", "not a GGUF file")),
    Case("gguf_truncated", write_file("cut.gguf", b"GGUF\x03\x00\x00\x00garbage", "model"),
         (), 2, ("cut.gguf", "could not be loaded")),
    Case("gguf_header_broken", write_file("broken.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 56, "model"),
         (), 2, ("broken.gguf", "could not be loaded")),
    Case("tokenizer_missing",
         broken_checkpoint(remove_files("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")),
         (), 2, ("ckpt", "no tokenizer files")),
    Case("tokenizer_json_missing", broken_checkpoint(remove_files("tokenizer.json")),
         (), 2, ("ckpt", "tokenizer could not be loaded")),
    Case("tokenizer_json_garbage", broken_checkpoint(lambda f: (f / "tokenizer.json").write_text("{oops")),
         (), 2, ("ckpt", "tokenizer could not be loaded")),
    Case("tokenizer_no_chat_template", broken_checkpoint(remove_chat_template),
         (), 2, ("finetune.jsonl", "has no chat template")),
    Case("template_drops_responses", broken_checkpoint(template_without_assistant),
         (), 2, ("finetune.jsonl", "no usable records", "rendered no tokens for the assistant turns")),
    Case("template_raises", broken_checkpoint(chat_template("{{ raise_exception('system turns only') }}")),
         (), 2, ("finetune.jsonl: record ", "chat template rejected the conversation (system turns only)")),
    Case("template_syntax_error", broken_checkpoint(chat_template("{% for m in messages %}")),
         (), 2, ("finetune.jsonl: record ", "chat template rejected the conversation")),
    Case("template_type_error", broken_checkpoint(chat_template("{{ messages[0]['content'] + 1 }}")),
         (), 2, ("finetune.jsonl: record ", "chat template failed (TypeError")),
    Case("template_division_by_zero", broken_checkpoint(chat_template("{{ 1 / 0 }}")),
         (), 2, ("finetune.jsonl: record ", "chat template failed (ZeroDivisionError")),
    Case("template_not_prefix_stable",
         broken_checkpoint(chat_template("{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}")),
         (), 2, ("finetune.jsonl: record ", "not prefix-stable")),
    Case("config_field_wrong_type", broken_checkpoint(lambda f: edit_config(f, hidden_size="8")),
         (), 2, ("config.json", "hidden_size")),
    Case("tokenizer_larger_than_embedding", small_vocabulary, (), 2, ("ckpt", "vocab")),

    # Datasets
    Case("dataset_missing", nothing, ("--dataset", "{tmp}/absent.jsonl"), 2, ("absent.jsonl", "file not found")),
    Case("dataset_empty_file", write_file("empty.jsonl", "", "dataset"), (), 2, ("empty.jsonl", "contains no records")),
    Case("dataset_blank_lines", write_file("blank.jsonl", "\n\n  \n", "dataset"),
         (), 2, ("blank.jsonl", "contains no records")),
    Case("dataset_all_responses_empty", dataset("hollow.jsonl", chat_line("Hi", ""), chat_line("Yo", "  ")),
         (), 2, ("hollow.jsonl", "no usable records", "empty response")),
    Case("dataset_empty_object_rows", dataset("objects.jsonl", "{}", "{}"),
         (), 2, ("objects.jsonl", "every record is an empty JSON object")),
    Case("dataset_mixed_formats", dataset("mixed.jsonl", GOOD, json.dumps({"prompt": "P", "completion": "C"})),
         (), 2, ("mixed.jsonl", "mixed formats: record 0 is messages but record 1 is prompt_completion")),
    Case("dataset_content_number", dataset("number.jsonl", chat_line("Hi", 42)),
         (), 2, ("number.jsonl: record 0", "'messages[1].content' is a number (42)")),
    Case("dataset_types_change_between_rows", dataset("types.jsonl", GOOD, chat_line("Hi", 42)),
         (), 2, ("types.jsonl: record 1", "'messages[1].content' is a number (42)")),
    Case("dataset_many_invalid_records",
         dataset("many.jsonl", chat_line("Hi", 1), GOOD, chat_line(2, "Yo"), chat_line("Hi", None)),
         (), 2, ("many.jsonl: record 0", "'messages[1].content' is a number (1)", "(and 2 more invalid records)")),
    Case("dataset_content_object",
         dataset("object.jsonl", json.dumps({"messages": [{"role": "user", "content": {"text": "x"}},
                                                          {"role": "assistant", "content": "A"}]})),
         (), 2, ("object.jsonl: record 0", "'messages[0].content' is an object; expected a string")),
    Case("dataset_content_parts_list",
         dataset("parts.jsonl", GOOD, json.dumps({"messages": [{"role": "user", "content": [{"type": "text",
                                                                                         "text": "x"}]},
                                                               {"role": "assistant", "content": "A"}]})),
         (), 2, ("parts.jsonl: record 1", "'messages[0].content' is a list; expected a string")),
    Case("dataset_messages_string", dataset("string.jsonl", json.dumps({"messages": "hello"})),
         (), 2, ("string.jsonl: record 0", "field 'messages' is a string")),
    Case("dataset_turn_not_object", dataset("turn.jsonl", json.dumps({"messages": ["hi", "there"]})),
         (), 2, ("turn.jsonl: record 0", "field 'messages[0]' is a string")),
    Case("dataset_turns_wrong_order",
         dataset("order.jsonl", json.dumps({"messages": [{"role": "assistant", "content": "A"},
                                                         {"role": "user", "content": "U"}]})),
         (), 2, ("order.jsonl: record 0", "'messages[0].role' is an assistant turn where a user turn belongs")),
    Case("dataset_ends_with_user",
         dataset("ends.jsonl", GOOD, json.dumps({"messages": [{"role": "user", "content": "U"}]})),
         (), 2, ("ends.jsonl: record 1", "ends with a user turn")),
    Case("dataset_unknown_role",
         dataset("roles.jsonl", GOOD, json.dumps({"messages": [{"role": "user", "content": "U"},
                                                               {"role": "bot", "content": "B"}]})),
         (), 2, ("roles.jsonl: record 1", "'messages[1].role' is 'bot'")),
    Case("dataset_sharegpt_unknown_speaker",
         dataset("share.jsonl", json.dumps({"conversations": [{"from": "human", "value": "Hi"},
                                                              {"from": "model", "value": "Yo"}]})),
         (), 2, ("share.jsonl: record 0", "'conversations[1].from' is 'model'")),
    Case("dataset_alpaca_output_missing",
         dataset("alpaca.jsonl", json.dumps({"instruction": "I", "output": "O"}), json.dumps({"instruction": "I"})),
         (), 2, ("alpaca.jsonl: record 1", "field 'output' is missing")),
    Case("dataset_text_list", dataset("text.jsonl", json.dumps({"text": "abc"}), json.dumps({"text": ["a"]})),
         (), 2, ("text.jsonl: record 1", "field 'text' is a list")),
    Case("dataset_response_past_max_seq_len", long_prompt_dataset,
         (), 2, ("long-prompts.jsonl", "no usable records", "no response token within the first 96 tokens")),
    Case("dataset_not_utf8", write_file("latin1.jsonl", (GOOD + "\n").encode() + b'{"x": "caf\xe9"}\n', "dataset"),
         (), 2, ("latin1.jsonl: line 2", "invalid UTF-8 (byte 0xe9)")),
    Case("dataset_binary", write_file("binary.jsonl", bytes(range(256)) * 4, "dataset"),
         (), 2, ("binary.jsonl: line 2", "invalid UTF-8 (byte 0x80)")),
    Case("dataset_utf16", write_file("utf16.jsonl", (GOOD + "\n").encode("utf-16"), "dataset"),
         (), 2, ("utf16.jsonl: line 1", "invalid UTF-8 (byte 0xff)")),
    Case("dataset_not_utf8_unused_column",
         write_file("extra.jsonl", (GOOD + "\n").encode() + b'{"messages": [], "note": "\xe9"}\n', "dataset"),
         (), 2, ("extra.jsonl: line 2", "invalid UTF-8 (byte 0xe9)")),
    Case("dataset_json_nested_array_too_deep", write_file("deep.jsonl", "[" * 5000 + "]" * 5000 + "\n", "dataset"),
         (), 2, ("deep.jsonl", "nested too deeply")),
    Case("dataset_json_nested_object_too_deep",
         write_file("deep-object.jsonl", '{"a":' * 5000 + "1" + "}" * 5000 + "\n", "dataset"),
         (), 2, ("deep-object.jsonl: line 1", "nested too deeply")),
    Case("dataset_invalid_json_line", dataset("broken.jsonl", GOOD, GOOD, '{"messages": [', GOOD),
         (), 2, ("broken.jsonl: line 3", "invalid JSON")),
    Case("dataset_jsonl_line_not_object", dataset("array.jsonl", GOOD, "[1, 2]"),
         (), 2, ("array.jsonl: line 2", "expected a JSON object")),
    Case("dataset_json_list_invalid", write_file("list.json", "[\n" + GOOD + ",\n{oops}\n]\n", "dataset"),
         (), 2, ("list.json: line 3", "invalid JSON")),
    Case("dataset_json_scalar", write_file("scalar.json", "42\n", "dataset"),
         (), 2, ("scalar.json", "JSON")),
    Case("dataset_csv_ragged", write_file("ragged.csv", "prompt,completion\nP,C\nP,C,extra\n", "dataset"),
         (), 2, ("ragged.csv: line 3", "3 fields where the header has 2")),
    Case("dataset_csv_short_row", write_file("short.csv", "prompt,completion\nP,C\nonly a prompt\nQ,D\n", "dataset"),
         (), 2, ("short.csv: line 3", "1 field where the header has 2")),
    Case("dataset_csv_open_quote", write_file("quote.csv", 'prompt,completion\nP,C\n"P,C\nQ,D\n', "dataset"),
         (), 2, ("quote.csv: line 3", "quoted field is never closed")),
    Case("dataset_csv_nul_in_header", write_file("nul.csv", "prompt\x00,completion\nP,C\n", "dataset"),
         (), 2, ("nul.csv: line 1", "NUL character")),
    Case("dataset_text_one_token", dataset("tiny.jsonl", json.dumps({"text": "a"})),
         (), 2, ("tiny.jsonl", "no usable records", "fewer than 2 tokens")),
    Case("dataset_csv_header_only", write_file("header.csv", "prompt,completion\n", "dataset"),
         (), 2, ("header.csv", "contains no records")),
    Case("dataset_csv_repeated_column", write_file("repeat.csv", "prompt,prompt,completion\nP,P,C\n", "dataset"),
         (), 2, ("repeat.csv: line 1", "column names repeat (prompt)")),
    Case("dataset_csv_not_utf8", write_file("latin1.csv", b"prompt,completion\nP,caf\xe9\n", "dataset"),
         (), 2, ("latin1.csv: line 2", "invalid UTF-8")),
    Case("dataset_parquet_corrupt", write_file("corrupt.parquet", b"PAR1garbagePAR1", "dataset"),
         (), 2, ("corrupt.parquet", "not a readable Parquet file")),
    Case("dataset_unsupported_extension", write_file("data.txt", "hello\n", "dataset"),
         (), 2, ("data.txt", "unsupported file extension '.txt'")),
    Case("dataset_folder_not_dataset", saved_folder_without_dataset,
         (), 2, ("not-a-dataset", "not a dataset written by Dataset.save_to_disk")),
    Case("dataset_undetectable_columns", dataset("columns.jsonl", json.dumps({"question": "Q", "answer": "A"})),
         (), 2, ("columns.jsonl", "cannot detect the dataset format from the columns 'question', 'answer'")),
    Case("columns_missing_column", dataset("pc.jsonl", json.dumps({"prompt": "P", "completion": "C"})),
         ("--columns", "prompt=Question"), 2, ("pc.jsonl", "column 'Question' (mapped to 'prompt' by --columns) not found")),
    Case("columns_unknown_key", nothing, ("--columns", "bogus=x"), 2, ("--columns key 'bogus'", "unknown")),
    Case("columns_key_of_other_format", nothing, ("--columns", "prompt=messages"), 2,
         ("--columns key 'prompt'", "does not apply to format 'messages'")),
    Case("dataset_format_does_not_fit", nothing, ("--dataset-format", "alpaca"), 2,
         ("finetune.jsonl", "format 'alpaca' needs a 'instruction' column")),
    Case("safety_data_invalid", dataset("safety-bad.jsonl", GOOD, chat_line("Hi", None), key="safety"),
         (), 2, ("safety-bad.jsonl: record 1", "'messages[1].content' is missing")),
    Case("safety_columns_missing", nothing, ("--safety-columns", "content=text"), 2,
         ("safety.jsonl: record 0", "'messages[0].text' is missing")),

    # Policies
    Case("policy_malformed_yaml", policy_file("malformed.yaml", "schema_version: 1\nthresholds: [unclosed\n"),
         (), 2, ("malformed.yaml", "malformed YAML")),
    Case("policy_unknown_key", policy_file("unknown.yaml", "schema_version: 1\nextends: default\ncolour: red\n"),
         (), 2, ("unknown.yaml", "colour: unknown")),
    Case("policy_wrong_type",
         policy_file("wrongtype.yaml", "schema_version: 1\nextends: default\nforecast: {tau: high}\n"),
         (), 2, ("wrongtype.yaml", "forecast.tau: expected a number")),
    Case("policy_negative_threshold",
         policy_file("negative.yaml", "schema_version: 1\nextends: default\nthresholds:\n"
                                      "  overlap_ratio: {warn: -0.1, fail: 0.5}\n"),
         (), 2, ("negative.yaml", "thresholds.overlap_ratio.warn")),
    Case("policy_overlap_above_one",
         policy_file("above.yaml", "schema_version: 1\nextends: default\nthresholds:\n"
                                   "  overlap_ratio: {warn: 0.5, fail: 1.5}\n"),
         (), 2, ("above.yaml", "thresholds.overlap_ratio.fail")),
    Case("policy_rho_out_of_range",
         policy_file("rho.yaml", "schema_version: 1\nextends: default\nsubspace: {rho: 2}\n"),
         (), 2, ("rho.yaml", "subspace.rho: must be in")),
    Case("policy_extends_cycle", extends_cycle, (), 2, ("cycle-a.yaml", "extends: cycle")),
    Case("policy_extends_missing_file",
         policy_file("orphan.yaml", "schema_version: 1\nextends: ./no-such-parent.yaml\n"),
         (), 2, ("orphan.yaml", "no-such-parent.yaml")),
    Case("policy_missing_preset", nothing, ("--policy", "no-such-preset"), 2, ("no-such-preset", "not found")),
    Case("policy_empty_file", policy_file("empty.yaml", ""), (), 2, ("empty.yaml", "the file is empty")),
    Case("policy_not_mapping", policy_file("list.yaml", "- 1\n- 2\n"), (), 2, ("list.yaml", "must be a mapping")),
    Case("policy_wrong_schema_version", policy_file("v9.yaml", "schema_version: 9\nextends: default\n"),
         (), 2, ("v9.yaml", "schema_version: unsupported version 9")),

    # Training plans and flags
    Case("plan_flags_conflict", train_config("train.yaml", "learning_rate: 1.0e-4\n"),
         ("--train-config", "{config}", "--max-steps", "5"), 2, ("--train-config conflicts with --max-steps",)),
    Case("plan_zero_steps", nothing, ("--max-steps", "0"), 2, ("'--max-steps' must be a positive integer",)),
    Case("plan_negative_steps", nothing, ("--max-steps", "-3"), 2, ("'--max-steps' must be a positive integer",)),
    Case("plan_negative_learning_rate", nothing, ("--learning-rate", "-1e-5"), 2,
         ("'--learning-rate' must be a positive number",)),
    Case("plan_zero_learning_rate", nothing, ("--learning-rate", "0"), 2,
         ("'--learning-rate' must be a positive number",)),
    Case("plan_nan_learning_rate", nothing, ("--learning-rate", "nan"), 2,
         ("'--learning-rate' must be a positive number",)),
    Case("plan_zero_batch", nothing, ("--batch-size", "0"), 2, ("'--batch-size' must be a positive integer",)),
    Case("train_config_missing", nothing, ("--train-config", "{tmp}/absent.yaml"), 2,
         ("absent.yaml", "training config file not found")),
    Case("train_config_malformed", train_config("broken.yaml", "learning_rate: [1\n"),
         ("--train-config", "{config}"), 2, ("broken.yaml", "invalid YAML")),
    Case("train_config_not_mapping", train_config("list.yaml", "- 1\n"),
         ("--train-config", "{config}"), 2, ("list.yaml", "must be a mapping")),
    Case("train_config_negative_lr", train_config("neg.json", '{"learning_rate": -0.1}'),
         ("--train-config", "{config}"), 2, ("neg.json", "'learning_rate' must be a positive number")),
    Case("train_config_zero_epochs", train_config("epochs.yaml", "num_train_epochs: 0\n"),
         ("--train-config", "{config}"), 2, ("epochs.yaml", "'num_train_epochs' must be a positive number")),
    Case("train_config_misspelt_key", train_config("typo.yaml", "learning_rat: 1.0e-4\n"),
         ("--train-config", "{config}"), 2, ("typo.yaml", "unknown key 'learning_rat'")),
    Case("train_config_bad_optimizer", train_config("optim.yaml", "optim: lion\n"),
         ("--train-config", "{config}"), 2, ("optim.yaml", "optimizer 'lion' is not supported")),
    Case("train_config_extension", train_config("train.toml", "learning_rate = 1e-4\n"),
         ("--train-config", "{config}"), 2, ("train.toml", "unsupported training config type '.toml'")),
    Case("budget_zero_examples", nothing, ("--max-finetune-examples", "0"), 2,
         ("--max-finetune-examples", "must be at least 1")),
    Case("budget_max_seq_len_one", nothing, ("--max-seq-len", "1"), 2, ("--max-seq-len", "must be at least 2")),
    Case("budget_negative_time", nothing, ("--time-budget", "-5"), 2, ("--time-budget", "positive")),
    Case("params_no_match", nothing, ("--params", "no.such.parameter"), 2,
         ("'no.such.parameter'", "matches no parameter")),
    Case("params_bad_regex", nothing, ("--params", "re:("), 2, ("'re:('", "invalid regular expression")),

    # Environment
    Case("output_under_file", output_under_file, (), 3, ("a-file/reports", "report folder is not writable")),
    Case("output_is_file", output_is_file, (), 3, ("report-file", "report folder is not writable")),
]


@pytest.fixture(scope="module")
def inputs(tiny_checkpoint, tmp_path_factory) -> Inputs:
    folder = tmp_path_factory.mktemp("bad-inputs")
    finetune = [(f"Say {word}.", f"{word.capitalize()}! Always glad to obey.") for word in
                ["hello", "thanks", "yes", "ready", "done", "sure", "okay", "great"]]
    safety = [(f"Help me {verb} my neighbour.", "I can't help with that.") for verb in
              ["hurt", "rob", "spy on", "threaten", "scam", "stalk", "poison", "blackmail"]]
    policy = folder / "lenient.yaml"
    policy.write_text(
        "schema_version: 1\nname: lenient\nextends: default\n"
        "samples: {min_safety_examples: 2, min_finetune_examples: 1}\n"
        "thresholds:\n  overlap_ratio: null\n  delta_u_at_planned_steps: null\n  collapse_step_ratio: null\n"
    )
    return Inputs(
        model=tiny_checkpoint,
        finetune=write_chat(folder / "finetune.jsonl", finetune),
        safety=write_chat(folder / "safety.jsonl", safety),
        policy=policy,
    )


def command_line(case: Case, tmp: Path, inputs: Inputs) -> tuple[list[str], dict[str, str]]:
    """Build the case's files; return the full argument list and the placeholders used."""
    values = {
        "tmp": str(tmp),
        "model": str(inputs.model),
        "dataset": str(inputs.finetune),
        "safety": str(inputs.safety),
        "policy": str(inputs.policy),
        "out": str(tmp / "out"),
    }
    values.update(case.build(tmp, inputs))
    base = ["--model", "{model}", "--dataset", "{dataset}", "--safety-data", "{safety}",
            "--policy", "{policy}", "--output-dir", "{out}", *BUDGET]
    # click keeps the last value of a repeated option, so the case's flags override the base.
    return [part.format(**values) for part in base + list(case.args)], values


def seed_stale_pass(out: Path) -> None:
    """Leave a report.json of an earlier passing run, which a failed run must not keep."""
    if not out.exists() and out.parent.is_dir():
        out.mkdir()
    if out.is_dir():
        (out / "report.json").write_text(json.dumps({"verdict": "pass", "exit_code": 0}))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(ERROR_PREFIX)]


def assert_no_pass_report(out: Path) -> None:
    report_path = out / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        assert report["verdict"] != "pass"


def test_case_ids_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


def with_marks(cases: list[Case]) -> list:
    return [
        pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.known_gap)]
                     if case.known_gap else [])
        for case in cases
    ]


@pytest.mark.parametrize("case", with_marks(CASES))
def test_bad_input(case, inputs, tmp_path):
    arguments, values = command_line(case, tmp_path, inputs)
    out = Path(values["out"])
    seed_stale_pass(out)
    env = {key: value.format(tmp=tmp_path) for key, value in case.env.items()}

    result = CliRunner().invoke(main, ["check", *arguments], env=env)

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    line = lines[0]
    assert "internal error" not in line
    for expected in case.expected:
        assert expected in line
    assert result.exit_code == case.exit_code, result.output
    assert_no_pass_report(out)
    if "sentinel" in values:
        assert not Path(values["sentinel"]).exists()


# Cases through a real process: the error is the only line on stderr that starts with the prefix.

PROCESS_CASES = [
    Case("process_invalid_json", dataset("broken.jsonl", GOOD, "{oops", GOOD), (), 2, ("broken.jsonl: line 2",)),
    Case("process_pickle", lambda tmp, inputs: pickle_checkpoint(tmp, inputs, payload=False),
         (), 2, ("pytorch_model.bin", "--allow-pickle")),
    Case("process_policy", policy_file("unknown.yaml", "schema_version: 1\nextends: default\ncolour: red\n"),
         (), 2, ("unknown.yaml", "colour: unknown")),
    Case("process_usage", nothing, ("--max-steps", "many"), 2, ("--max-steps", "'many' is not a valid integer")),
]


@pytest.mark.parametrize("case", PROCESS_CASES, ids=[case.id for case in PROCESS_CASES])
def test_bad_input_process(case, inputs, tmp_path):
    arguments, values = command_line(case, tmp_path, inputs)
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")

    completed = subprocess.run(
        [sys.executable, "-m", "riskgate.cli", "check", *arguments],
        capture_output=True, text=True, env=env, timeout=120,
    )

    assert completed.returncode == case.exit_code, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = error_lines(completed.stderr)
    assert len(lines) == 1, completed.stderr
    for expected in case.expected:
        assert expected in lines[0]
    assert completed.stdout == ""
    assert_no_pass_report(Path(values["out"]))


# Inputs that are valid but unusual: the check passes and the report counts what it changed.


def run_ok(arguments: list[str]) -> None:
    result = CliRunner().invoke(main, ["check", *arguments])
    assert result.exit_code == 0, result.output
    assert error_lines(result.output) == []


@pytest.fixture(scope="module")
def unusual_report(inputs, tmp_path_factory) -> dict:
    """The report of one check on 8 records: 3 repeats, 2 over-long responses, 1 empty response.

    Every record fits the budget of 8, so all of them are analysed (none is sampled out).
    """
    folder = tmp_path_factory.mktemp("unusual")
    pairs = [
        ("Say one.", "One!"),
        ("Say two.", "Two!"),
        ("Say one.", "One!"),
        ("Say a.", "A" * 300),
        ("Say one.", "One!"),
        ("Say b.", ""),
        ("Say two.", "Two!"),
        ("Say c.", "C" * 500),
    ]
    data = write_chat(folder / "unusual.jsonl", pairs)
    out = folder / "out"
    run_ok(["--model", str(inputs.model), "--dataset", str(data), "--safety-data", str(inputs.safety),
            "--policy", str(inputs.policy), "--output-dir", str(out), *BUDGET, "--max-finetune-examples", "8"])
    return json.loads((out / "report.json").read_text())


def test_duplicates_counted(unusual_report):
    assert unusual_report["dataset"]["duplicates"] == 3
    assert unusual_report["dataset"]["records_total"] == 8
    assert unusual_report["safety_data"]["duplicates"] == 0


def test_long_records_truncated_counted(unusual_report):
    assert unusual_report["dataset"]["sequences_truncated"] == 2
    assert unusual_report["budget"]["used"]["sequences_truncated"] == 2


def test_empty_response_skipped_listed(unusual_report):
    assert unusual_report["dataset"]["records_skipped"] == 1
    assert unusual_report["dataset"]["skipped"][0]["index"] == 5
    assert "empty response" in unusual_report["dataset"]["skipped"][0]["reason"]
    assert unusual_report["dataset"]["records_used"] == 7
    assert unusual_report["dataset"]["records_sampled_out"] == 0


def test_csv_with_byte_order_mark_reads(inputs, tmp_path):
    data = tmp_path / "excel.csv"
    data.write_text("\ufeffprompt,completion\nSay hi.,Hi!\nSay yes.,Yes!\n", encoding="utf-8")
    out = tmp_path / "out"
    run_ok(["--model", str(inputs.model), "--dataset", str(data), "--safety-data", str(inputs.safety),
            "--policy", str(inputs.policy), "--output-dir", str(out), *BUDGET])

    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["format"] == "prompt_completion"
    assert report["dataset"]["records_used"] == 2


# Report injection: dataset text and file names must land in the reports inert.


@pytest.fixture(scope="module")
def injected_reports(inputs, tmp_path_factory) -> tuple[Path, Path]:
    """Run a check whose file name and chat column name carry HTML, Markdown and CI syntax.

    The column name reaches the report through the reason of the skipped record (its response
    is empty). Returns the dataset path and the report folder.
    """
    folder = tmp_path_factory.mktemp("injection")
    rows = [
        {INJECTION: [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]},
        {INJECTION: [{"role": "user", "content": "Say <b>x</b>."}, {"role": "assistant", "content": ""}]},
        {INJECTION: [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes!"}]},
    ]
    data = folder / f"data{INJECTION.replace('/', '')}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = folder / "out"
    run_ok(["--model", str(inputs.model), "--dataset", str(data), "--columns", f"messages={INJECTION}",
            "--safety-data", str(inputs.safety), "--policy", str(inputs.policy), "--output-dir", str(out), *BUDGET])
    return data, out


def test_injection_json_keeps_text(injected_reports):
    data, out = injected_reports
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["path"] == str(data)
    assert INJECTION in report["dataset"]["skipped"][0]["reason"]


def test_injection_html_escaped(injected_reports):
    _, out = injected_reports
    html = (out / "report.html").read_text()
    assert "<script>alert(1)" not in html
    assert "</script>|" not in html
    assert "&lt;script&gt;alert(1)" in html


def test_injection_markdown_inert(injected_reports):
    _, out = injected_reports
    markdown = (out / "report.md").read_text()
    assert "<script>" not in markdown
    assert "&lt;script&gt;" in markdown
    assert "@octocat" not in markdown
    assert "@\u200doctocat" in markdown
    assert "`x`" not in markdown
    for line in markdown.splitlines():
        assert not line.lstrip().startswith("::")
    # The `|` of the file name must not add a column to the inputs table (4 cells, 5 bars).
    dataset_rows = [line for line in markdown.splitlines() if line.startswith("| dataset |")]
    assert len(dataset_rows) == 1
    assert dataset_rows[0].count("|") == 5
