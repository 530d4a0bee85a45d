"""Load a checkpoint for analysis: resolve the spec, check its files, load model and tokenizer.

A spec is a local folder (config.json + safetensors weights), a `.gguf` file, or a hub id
`org/name` that is already in the local Hugging Face cache. riskgate never downloads: every
`from_pretrained` call gets `local_files_only=True`, and hub ids resolve only from the cache.

The loaded model is ready for second-order diagnostics: eval mode, eager attention (fused
attention kernels have no double backward), every parameter frozen (the scope module enables
gradients on the analysed ones), and by default float32 on CPU. Every failure to read the
checkpoint becomes a one-line `CheckpointError` that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import json
import logging
import os
import pickle
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from riskgate.errors import CheckpointError, EnvironmentFailure, UsageError

logger = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1 << 20
_MESSAGE_MAX_CHARS = 240
_MEMORY_FIX = "free memory or pass --dtype bfloat16"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
    "vocab.txt",
)
_SAFETENSORS_FILE = "model.safetensors"
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_PICKLE_FILE = "pytorch_model.bin"
_PICKLE_INDEX = "pytorch_model.bin.index.json"


class ModelKind(str, enum.Enum):
    """Kind of checkpoint a model spec resolves to."""

    FOLDER = "folder"
    """A local folder with config.json and safetensors weights."""
    HUB_CACHE = "hub_cache"
    """A hub id `org/name` whose snapshot is already in the local Hugging Face cache."""
    GGUF = "gguf"
    """A single `.gguf` file; transformers de-quantises its tensors on load."""
    PICKLE = "pickle"
    """A local folder whose weights are only pickle files (pytorch_model.bin); opt-in only."""


class DType(str, enum.Enum):
    """Floating-point type the model is loaded in."""

    FLOAT64 = "float64"
    """Double precision, for reference checks on tiny models."""
    FLOAT32 = "float32"
    """Single precision, the default, because second-order diagnostics in half precision on
    CPU are slow and imprecise."""
    BFLOAT16 = "bfloat16"
    """bfloat16: half the memory of float32, with float32's exponent range but an 8-bit mantissa."""
    FLOAT16 = "float16"
    """Half precision: half the memory of float32. Weights above 65504 overflow to Inf."""


@dataclass
class LoadedModel:
    """A model and tokenizer loaded from one checkpoint, with the facts the report needs."""

    model: Any
    """The `PreTrainedModel`, in eval mode, eager attention, all parameters frozen."""
    tokenizer: Any
    """The tokenizer loaded from the same checkpoint."""
    kind: ModelKind
    source: str
    """The spec as the user gave it."""
    resolved_path: str
    """The folder or .gguf file actually read (the snapshot folder for hub ids)."""
    weights_sha256: str
    """sha256 of the weight file; for several files, see `hash_weight_files`."""
    dtype: str
    """Parameter dtype, a `DType` value such as "float32"."""
    architecture: str
    """`config.architectures[0]`, or the model class name when the config names none."""
    parameters_total: int
    """Number of unique parameters; tied weights are counted once."""
    attention: str = "eager"
    """Attention implementation reported by the loaded config."""


def load_model(
    spec: str,
    *,
    dtype: str | DType | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    offload_dir: str | Path | None = None,
) -> LoadedModel:
    """Resolve `spec`, check the checkpoint files and load model and tokenizer on CPU.

    With `device_map` ("auto", "balanced", "sequential" or a {module name: device} mapping,
    where a device is "cpu", "disk", a CUDA index or "cuda:N"), accelerate's big-model placement
    spreads the modules over the devices, and modules mapped to "disk" are kept in
    `offload_dir` and loaded at each forward pass. Their weights are then checked for NaN and
    Inf in the checkpoint file.

    Resolution order: an existing `.gguf` file is GGUF. An existing folder is FOLDER, or
    PICKLE when its only weights are pickle files. A non-existing `org/name` is looked up in
    the local Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub). `dtype` None means
    float32. `revision` (branch, tag or commit) applies to hub ids only.

    Raises `CheckpointError` for anything wrong with the checkpoint, `UsageError` for an
    unknown dtype or a revision given with a local path.
    """
    torch_dtype_name = _parse_dtype(dtype)
    kind, path = _resolve_spec(spec, revision)

    # Check the files first, so that each problem is reported against the file at fault.
    pickled = False
    if kind is ModelKind.GGUF and isinstance(device_map, dict) and "disk" in device_map.values():
        raise UsageError(f"--device-map: {path} is a GGUF file, which transformers cannot offload to disk; map "
                         "every module to a device, or save the model as safetensors with save_pretrained first")
    if kind is ModelKind.GGUF:
        folder, weight_files, tensor_files = path.parent, [path], {}
        _check_gguf_magic(path)
    else:
        folder = path
        _check_config(folder, trust_remote_code)
        pickled, weight_files = _find_weight_files(folder, allow_pickle)
        if pickled and kind is ModelKind.FOLDER:
            kind = ModelKind.PICKLE
        tensor_files = {} if pickled else _check_safetensors(weight_files)
        _check_tokenizer_files(folder)

    from huggingface_hub.errors import StrictDataclassError

    try:
        with _quiet_loading():
            tokenizer = _load_tokenizer(kind, path, trust_remote_code)
            model, loading_info = _load_weights(kind, path, torch_dtype_name, pickled, trust_remote_code,
                                                device_map, offload_dir)
    except StrictDataclassError as error:
        # huggingface_hub validates config fields, e.g. a string where an int belongs; both the
        # tokenizer and the model read config.json.
        raise CheckpointError(f"{path}: config.json has an invalid field ({_one_line(error)}); fix config.json") from None

    # transformers fills missing or mismatched tensors with random values; reject them instead.
    default_file = _index_or_single(folder, weight_files)
    _check_loading_info(model, loading_info, default_file)
    _check_finite(model, tensor_files, default_file)
    _check_vocabulary(model, tokenizer, path)

    attention = getattr(model.config, "_attn_implementation", None)
    if attention != "eager":
        raise CheckpointError(
            f"{path}: {type(model).__name__} loaded with {attention!r} attention, not eager; "
            "riskgate needs eager attention for second derivatives, so this architecture is not supported"
        )
    model.eval()
    model.requires_grad_(False)

    architectures = getattr(model.config, "architectures", None) or [type(model).__name__]
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        source=spec,
        resolved_path=str(path),
        weights_sha256=hash_weight_files(weight_files),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        architecture=architectures[0],
        parameters_total=sum(parameter.numel() for parameter in model.parameters()),
        attention=attention,
    )
    logger.info("loaded %s (%s, %s parameters, %s)", spec, kind.value, loaded.parameters_total, loaded.dtype)
    return loaded


def model_summary(loaded: LoadedModel) -> dict[str, Any]:
    """Return the report's `model` section for a loaded model."""
    return {
        "source": loaded.source,
        "kind": loaded.kind.value,
        "sha256": loaded.weights_sha256,
        "dtype": loaded.dtype,
        "architecture": loaded.architecture,
        "parameters_total": loaded.parameters_total,
        "attention": loaded.attention,
    }


def hash_weight_files(files: list[Path]) -> str:
    """Hash weight files: one file gives its plain sha256 (what `sha256sum` prints).

    Several files (shards) give the sha256 of the UTF-8 text made of one `name:sha256` line
    per file, each ending in a newline, sorted by file name.
    """
    digests = {file.name: _sha256_file(file) for file in files}
    if len(digests) == 1:
        return next(iter(digests.values()))
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def hub_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder from the environment, read at call time.

    Mirrors huggingface_hub 2.4 (`constants.py`), which reads these variables once at import:
    HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def _parse_dtype(dtype: str | DType | None) -> str:
    if dtype is None:
        return DType.FLOAT32.value
    try:
        return DType(dtype).value
    except ValueError:
        choices = ", ".join(member.value for member in DType)
        raise UsageError(f"dtype {dtype!r}: not supported; use one of {choices}") from None


def _resolve_spec(spec: str, revision: str | None) -> tuple[ModelKind, Path]:
    path = Path(spec).expanduser()
    if path.exists():
        if revision is not None:
            raise UsageError(f"{spec}: --revision applies only to hub ids, not to a local path; drop it")
        if path.is_dir():
            return ModelKind.FOLDER, path.resolve()
        if path.suffix.lower() == ".gguf":
            return ModelKind.GGUF, path.resolve()
        raise CheckpointError(
            f"{spec}: is a file but not a .gguf file; pass the folder that contains config.json and the weights"
        )
    if _HUB_ID.match(spec) and ".." not in spec and not spec.lower().endswith(".gguf"):
        return ModelKind.HUB_CACHE, _find_in_hub_cache(spec, revision)
    raise CheckpointError(
        f"{spec}: no such file or folder; pass a checkpoint folder, a .gguf file, "
        "or a hub id org/name that is in the local Hugging Face cache"
    )


def _find_in_hub_cache(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    # NOTE: the snapshot is read as a checkpoint folder. A repository that contains only a
    # .gguf file fails that way, so pass the path of the .gguf file inside the snapshot.
    cache = hub_cache_dir()
    try:
        snapshot = snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=True)
    except (OSError, ValueError) as error:
        at_revision = f" at revision {revision}" if revision else ""
        # NOTE: huggingface_hub 1.0 replaced the `huggingface-cli` command with `hf`.
        raise CheckpointError(
            f"{repo_id}: not found in the local Hugging Face cache ({cache}){at_revision}; "
            f"riskgate never downloads weights: run `hf download {repo_id}` on a machine with network "
            "access and mount that cache, or pass a local folder"
        ) from error
    return Path(snapshot)


def _check_config(folder: Path, trust_remote_code: bool) -> None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{config_path}: not found; a checkpoint folder needs config.json next to its weights "
            "(model.save_pretrained writes it)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{config_path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}; "
            "fix the file or save the config again"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path}: cannot be read ({error}); check the file") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: top level is not a JSON object; save the config again")

    if "auto_map" in config and not trust_remote_code:
        raise CheckpointError(
            f"{config_path}: asks for custom model code (auto_map); riskgate runs code from a "
            "checkpoint only with --trust-remote-code (trust_remote_code=True)"
        )
    model_type = config.get("model_type")
    if not model_type:
        raise CheckpointError(
            f"{config_path}: no `model_type` key; add it (for example \"llama\") or save the config "
            "again with transformers"
        )
    if "auto_map" not in config:
        _check_architecture_supported(config_path, str(model_type))


def _check_architecture_supported(config_path: Path, model_type: str) -> None:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise CheckpointError(
            f"{config_path}: model_type {model_type!r} is unknown to the installed transformers "
            f"{transformers.__version__}; upgrade transformers or check the config"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CheckpointError(
            f"{config_path}: model_type {model_type!r} is not a causal language model architecture; "
            "riskgate analyses decoder-only chat models"
        )


def _find_weight_files(folder: Path, allow_pickle: bool) -> tuple[bool, list[Path]]:
    """Return (pickled, files): the weight files transformers will read from `folder`."""
    if (folder / _SAFETENSORS_FILE).is_file():
        return False, [folder / _SAFETENSORS_FILE]
    if (folder / _SAFETENSORS_INDEX).is_file():
        return False, _shards_from_index(folder / _SAFETENSORS_INDEX)
    other_safetensors = sorted(file.name for file in folder.glob("*.safetensors"))
    if other_safetensors:
        raise CheckpointError(
            f"{folder}: has {', '.join(other_safetensors)} but no {_SAFETENSORS_FILE} or {_SAFETENSORS_INDEX}; "
            "an adapter folder is not a full checkpoint (merge the adapter into its base model first), "
            f"and a single-file checkpoint must be named {_SAFETENSORS_FILE}"
        )

    pickles = sorted(file.name for pattern in ("*.bin", "*.pt", "*.pth") for file in folder.glob(pattern))
    if not pickles:
        raise CheckpointError(
            f"{folder}: no weight files ({_SAFETENSORS_FILE} or {_SAFETENSORS_INDEX}); "
            "save the model with model.save_pretrained"
        )
    if not allow_pickle:
        raise CheckpointError(
            f"{folder}: weights are pickle files only ({', '.join(pickles)}); unpickling can run code, "
            "so riskgate reads them only with --allow-pickle (allow_pickle=True), and then with "
            "torch.load(weights_only=True); converting them to safetensors avoids the flag"
        )
    if (folder / _PICKLE_FILE).is_file():
        return True, [folder / _PICKLE_FILE]
    if (folder / _PICKLE_INDEX).is_file():
        return True, _shards_from_index(folder / _PICKLE_INDEX)
    raise CheckpointError(
        f"{folder}: pickle weights ({', '.join(pickles)}) must be named {_PICKLE_FILE} "
        f"(or sharded with {_PICKLE_INDEX}) for transformers to read them; rename the file"
    )


def _shards_from_index(index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{index_path}: invalid shard index ({type(error).__name__}: {error}); save the checkpoint again"
        ) from None
    shards = [index_path.parent / name for name in shard_names]
    for shard in shards:
        if not shard.is_file():
            raise CheckpointError(f"{shard}: listed in {index_path.name} but not found; copy the missing shard")
    return shards


def _check_safetensors(files: list[Path]) -> dict[str, Path]:
    """Read every safetensors header; return tensor name -> file. Truncated files fail here."""
    from safetensors import SafetensorError, safe_open

    tensor_files: dict[str, Path] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    tensor_files[name] = file
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"{file}: invalid or truncated safetensors file ({_one_line(error)}); "
                "copy or save the checkpoint again"
            ) from None
    return tensor_files


def _check_gguf_magic(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error}); check the file") from None
    if magic != b"GGUF":
        raise CheckpointError(f"{path}: not a GGUF file (no GGUF magic bytes); copy or convert it again")


def _check_vocabulary(model: Any, tokenizer: Any, path: Path) -> None:
    """Reject a tokenizer that can produce ids past the model's embedding rows."""
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise CheckpointError(
            f"{path}: the tokenizer's vocabulary ({len(tokenizer)} tokens) is larger than the model's "
            f"embedding ({rows} rows); use the tokenizer that was saved with this model"
        )


def _check_tokenizer_files(folder: Path) -> None:
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"{folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); save the tokenizer into "
            "the checkpoint folder with tokenizer.save_pretrained"
        )


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence transformers' logging, progress bars and Python warnings while loading."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _load_tokenizer(kind: ModelKind, path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    location, extra = _pretrained_location(kind, path)
    try:
        return AutoTokenizer.from_pretrained(
            location, local_files_only=True, trust_remote_code=trust_remote_code, **extra
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError, IndexError, struct.error) as error:
        # The gguf reader raises struct.error or IndexError on a truncated header.
        if kind is ModelKind.GGUF:
            fix = "the GGUF file is corrupt or contains no tokenizer; copy or convert it again"
        else:
            fix = "save the tokenizer into the checkpoint folder with tokenizer.save_pretrained"
        raise CheckpointError(
            f"{path}: tokenizer could not be loaded ({type(error).__name__}: {_one_line(error)}); {fix}"
        ) from None


def _load_weights(
    kind: ModelKind, path: Path, dtype_name: str, pickled: bool, trust_remote_code: bool,
    device_map: str | dict[str, Any] | None = None, offload_dir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run `from_pretrained` with output_loading_info; return (model, loading_info)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    location, extra = _pretrained_location(kind, path)
    if device_map is not None:
        extra["device_map"] = device_map
        if offload_dir is not None:
            extra["offload_folder"] = str(offload_dir)
    if kind is not ModelKind.GGUF:
        # transformers 5.25 reads .bin files through `modeling_utils.load_state_dict`, which
        # calls torch.load(weights_only=True) unless the caller passes weights_only=False.
        extra["use_safetensors"] = not pickled

    # The GGUF de-quantiser draws its own tqdm bar on stderr, which disable_progress_bar does
    # not reach, so stderr is captured during the load and logged at debug level.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return AutoModelForCausalLM.from_pretrained(
                location,
                dtype=getattr(torch, dtype_name),
                attn_implementation="eager",
                local_files_only=True,
                trust_remote_code=trust_remote_code,
                weights_only=True,
                output_loading_info=True,
                # Mismatched shapes come back in the loading info, so the error can name the tensor.
                ignore_mismatched_sizes=True,
                **extra,
            )
    except MemoryError:
        raise EnvironmentFailure(f"{path}: out of memory while loading the model; {_MEMORY_FIX}") from None
    except (ValueError, KeyError, RuntimeError, AssertionError) as error:
        if device_map is not None and "allocate" not in str(error):
            # The files were checked above, so a failure here is almost always the placement.
            raise UsageError(
                f"--device-map: transformers could not place the model ({type(error).__name__}: {_one_line(error)}); "
                "map every module once, keep tied weights (embedding and LM head) on one device, and do not "
                "split a module between disk and a device"
            ) from None
        _raise_load_error(path, error)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: pickle weights contain objects other than tensors, which torch.load(weights_only=True) "
            f"rejects (UnpicklingError: {_one_line(error)}); convert them to safetensors where the "
            "source is trusted"
        ) from None
    except (OSError, EOFError, IndexError, struct.error, SafetensorError) as error:
        _raise_load_error(path, error)
    finally:
        if captured.getvalue():
            logger.debug("stderr while loading %s: %s", path, captured.getvalue()[-2000:])


def _raise_load_error(path: Path, error: BaseException) -> None:
    """Raise the one-line error for a failed `from_pretrained`: out of memory, or a broken checkpoint."""
    # PyTorch reports a failed CPU allocation as RuntimeError("... can't allocate memory ...").
    if isinstance(error, RuntimeError) and "allocate" in str(error):
        raise EnvironmentFailure(f"{path}: out of memory while loading the model; {_MEMORY_FIX}") from None
    raise CheckpointError(
        f"{path}: checkpoint could not be loaded ({type(error).__name__}: {_one_line(error)}); "
        "check the files or save the checkpoint again"
    ) from None


def _pretrained_location(kind: ModelKind, path: Path) -> tuple[str, dict[str, Any]]:
    if kind is ModelKind.GGUF:
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


def _check_loading_info(model: Any, info: dict[str, Any], weight_file: Path) -> None:
    """Raise for tensors that transformers would otherwise initialise at random."""
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CheckpointError(
            f"{weight_file}: {len(missing)} tensor(s) that {type(model).__name__} needs are missing "
            f"({listed}); the checkpoint is incomplete, so copy or save it again"
        )
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        name, checkpoint_shape, model_shape = mismatched[0]
        raise CheckpointError(
            f"{weight_file}: tensor {name} has shape {tuple(checkpoint_shape)} but config.json implies "
            f"{tuple(model_shape)}; the weights and config.json come from different models"
        )
    errors = list(info.get("error_msgs") or ())
    if errors:
        raise CheckpointError(f"{weight_file}: {_one_line(errors[0])}; copy or save the checkpoint again")
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        logger.warning("%s: %d tensor(s) not used by the model, ignored (%s)", weight_file, len(unexpected),
                       ", ".join(unexpected[:3]))


def _check_finite(model: Any, tensor_files: dict[str, Path], default_file: Path) -> None:
    import torch

    for name, parameter in model.named_parameters():
        if parameter.device.type == "meta":
            # Offloaded by the device map: read the tensor from its checkpoint file instead.
            parameter = _read_checkpoint_tensor(name, tensor_files.get(name))
            if parameter is None:
                raise CheckpointError(
                    f"{default_file}: tensor {name} is offloaded by the device map and cannot be read back "
                    "from a safetensors file to check it; keep it on a device or convert the checkpoint to safetensors"
                )
        if not bool(torch.isfinite(parameter).all()):
            file = tensor_files.get(name, default_file)
            raise CheckpointError(
                f"{file}: tensor {name} contains NaN or Inf values; the checkpoint is corrupt, or the "
                f"weights overflow {parameter.dtype} (try --dtype float32)"
            )


def _read_checkpoint_tensor(name: str, file: Path | None) -> Any:
    """Return tensor `name` from a safetensors file, or None when there is no such file or tensor."""
    if file is None or file.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(name) if name in handle.keys() else None


def _index_or_single(folder: Path, weight_files: list[Path]) -> Path:
    if len(weight_files) == 1:
        return weight_files[0]
    for index_name in (_SAFETENSORS_INDEX, _PICKLE_INDEX):
        if (folder / index_name).is_file():
            return folder / index_name
    return folder


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(error: object) -> str:
    """Return an error's text as one line: ANSI codes removed, whitespace collapsed, shortened."""
    text = " ".join(_ANSI_ESCAPE.sub("", str(error)).split())
    if len(text) > _MESSAGE_MAX_CHARS:
        text = text[: _MESSAGE_MAX_CHARS - 3].rstrip() + "..."
    return text or type(error).__name__
