"""The public Python API: `check()` runs one gate end to end and returns its report.

Flow: policy -> datasets -> training plan -> model and scope -> sampling and tokenisation ->
diagnostics -> policy evaluation -> canonical report. Invalid input raises an
`InvalidInputError`, before any heavy work where possible. Once the model is loaded, a failed
analysis becomes a report with verdict `error` instead of an exception, so a CI job still gets
its reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .assemble import DataSummary, build_report, data_section
from . import __version__
from .budget import Budget, Deadline
from .diagnostics.settings import DiagnosticSettings, Optimizer
from .errors import AnalysisError, UsageError
from .plan import resolve_plan
from .progress import NullProgress, Progress

logger = logging.getLogger(__name__)

# Factor over the gradient matrices' size that leaves room for the model and activations.


@dataclass(frozen=True)
class CheckResult:
    """Outcome of `check()`: the canonical report and the verdict it carries."""

    report: dict
    """The canonical report (schema version 1), JSON-able."""
    verdict: str = field(init=False)
    exit_code: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", self.report["verdict"])
        object.__setattr__(self, "exit_code", self.report["exit_code"])

    def write(self, output_dir: str | Path, formats: Sequence[str] = ("json", "markdown", "html")) -> dict[str, Path]:
        """Write the report files atomically into `output_dir`; return their paths by format."""
        from .report.writer import write_reports

        return write_reports(self.report, Path(output_dir), formats)


def _load_data(path, fmt, columns):
    from .loading.data import load_dataset_file

    return load_dataset_file(path, fmt=fmt, columns=dict(columns) if columns else None)


def _sample_and_encode(loaded, tokenizer, *, max_examples: int | None, max_seq_len: int, seed: int):
    """Tokenise records in a seeded random order until `max_examples` of them are usable.

    Sampling after tokenisation keeps records that the sequence cap leaves without a response
    token from using up the budget. Returns the chosen sequences (in file order) with every
    skip met on the way, the number of records not analysed because the budget was met, and
    the chosen records by index.
    """
    import random

    from .errors import DatasetError
    from .loading.encode import encode_records
    from .loading.records import EncodedSet, Record

    # Shuffle positions, not records, so a large file is read only as far as the sample needs.
    order = list(range(len(loaded.records)))
    random.Random(seed).shuffle(order)
    target = len(order) if max_examples is None else max_examples
    chosen, skipped, position, template = [], [], 0, "chat_template"
    by_index: dict[int, Record] = {}
    while len(chosen) < target and position < len(order):
        chunk = loaded.records.take(order[position : position + max(target - len(chosen), 16)])
        position += len(chunk)
        encoded = encode_records(chunk, tokenizer, max_seq_len=max_seq_len, source=loaded.path)
        template = encoded.template
        skipped.extend(encoded.skipped)
        chosen.extend(encoded.sequences)
        by_index.update((record.index, record) for record in chunk)

    sampled_out = (len(order) - position) + max(0, len(chosen) - target)
    chosen = sorted(chosen[:target], key=lambda sequence: sequence.index)
    skipped.sort(key=lambda record: record.index)
    if not chosen:
        reasons = list(loaded.skipped) + skipped
        first = f" (record {reasons[0].index}: {reasons[0].reason})" if reasons else ""
        raise DatasetError(
            f"{loaded.path}: no usable records: {loaded.num_rows} rows, {len(reasons)} skipped{first}; "
            "fix the records or raise --max-seq-len"
        )
    records = {sequence.index: by_index[sequence.index] for sequence in chosen}
    return EncodedSet(tuple(chosen), tuple(skipped), template), sampled_out, records


def _validate_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise UsageError(f"--seed: must be an integer in [-2^63, 2^63), got {seed!r}")


def _load_scoped_model(model: str, params, *, dtype, allow_pickle: bool, trust_remote_code: bool, device: str,
                       lora=None, seed: int = 0, device_map=None, offload_dir: Path | None = None):
    """Load the model onto `device` (or spread by `device_map`) and select its scope.

    With a LoRA plan the adapter is attached first and its factors are the scope; `params`
    then restricts which targeted modules get an adapter. Returns (loaded model, scope,
    scoped parameters, attached adapter or None).
    """
    import glob

    from .loading.model import load_model
    from .loading.scope import enable_grad_for_scope, select_scope

    loaded_model = load_model(model, dtype=dtype, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                              device_map=device_map, offload_dir=offload_dir)
    if device_map is None:
        loaded_model.model.to(device)
    _check_mapped_modules(loaded_model.model, device_map)
    adapter = None
    if lora is not None:
        from .loading.lora import attach_adapter

        allowed = set(select_scope(loaded_model.model, params).names) if params else None
        adapter = attach_adapter(loaded_model.model, lora, seed=seed,
                                 select=None if allowed is None else allowed.__contains__)
        params = [glob.escape(name) for name in adapter.parameter_names]
    scope = select_scope(loaded_model.model, params)
    scoped = enable_grad_for_scope(loaded_model.model, scope)
    for name, parameter in zip(scope.names, scoped):
        if parameter.device.type == "meta":
            raise UsageError(
                f"--device-map: scoped parameter {name} is offloaded to disk, where it cannot be differentiated; "
                "map its module to a device (cpu or a GPU) or narrow --params"
            )
    return loaded_model, scope, scoped, adapter


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _parse_device_map(device_map, offload_dir) -> tuple[str | dict | None, Path | None]:
    """Return (device map, offload folder) from --device-map (a strategy or a JSON file) and --offload-dir."""
    if device_map is None:
        if offload_dir is not None:
            raise UsageError("--offload-dir is only used with --device-map, for the modules it sends to disk; "
                         "add --device-map or drop --offload-dir")
        return None, None
    if isinstance(device_map, Mapping):
        mapping = dict(device_map)
    elif str(device_map) in DEVICE_MAP_STRATEGIES:
        mapping = str(device_map)
    else:
        path = Path(device_map)
        if not path.is_file():
            if path.suffix or len(path.parts) > 1:
                raise UsageError(f"--device-map {device_map}: file not found; pass an existing JSON file or a strategy "
                                 f"({', '.join(DEVICE_MAP_STRATEGIES)})")
            raise UsageError(f"--device-map {device_map}: neither one of {', '.join(DEVICE_MAP_STRATEGIES)} nor a "
                             "JSON file; pass a strategy or a file mapping module names to devices")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"--device-map {path}: not a readable JSON file ({exc}); fix it") from None
    if not isinstance(mapping, (str, dict)) or isinstance(mapping, dict) and not all(
        isinstance(key, str) and isinstance(value, (str, int)) and not isinstance(value, bool)
        for key, value in mapping.items()
    ):
        raise UsageError(f"--device-map {device_map}: must map module names to devices (\"cpu\", \"disk\", 0, \"cuda:1\")")
    if isinstance(mapping, dict):
        for module, device in mapping.items():
            _check_placement_device(module, device)
    if offload_dir is not None:
        offload_dir = Path(offload_dir)
        if not offload_dir.is_dir():
            raise UsageError(f"--offload-dir {offload_dir}: not a folder; create it or choose an existing folder")
        _check_writable(offload_dir, f"--offload-dir {offload_dir}")
    elif isinstance(mapping, dict) and "disk" in mapping.values():
        raise UsageError("--device-map sends modules to disk: give --offload-dir for their weights")
    return mapping, offload_dir


def _check_placement_device(module: str, device) -> None:
    """Raise UsageError unless `device` is cpu, disk, or a CUDA or MPS device this machine has."""
    import torch

    text = str(device).strip().lower()
    if text in ("cpu", "disk"):
        return
    if text == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return
    index = text.removeprefix("cuda:") if text.startswith("cuda:") else text
    if text == "cuda" or index.isdigit():
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if text == "cuda" and count:
            return
        if index.isdigit() and int(index) < count:
            return
        raise UsageError(f"--device-map: module {module!r} is mapped to {device!r}, but this machine has "
                         f"{count} CUDA devices; map it to cpu or disk, or to a device that exists")
    raise UsageError(f"--device-map: module {module!r} is mapped to {device!r}, which is not a device; "
                     "use cpu, disk, mps, a CUDA index such as 0, or cuda:N")


def _check_mapped_modules(model, device_map) -> None:
    """Raise UsageError when a --device-map file names a module the model does not have."""
    if not isinstance(device_map, dict):
        return
    modules = dict(model.named_modules())
    unknown = [name for name in device_map if name and name not in modules]
    if unknown:
        examples = ", ".join(name for name in list(modules)[1:6])
        raise UsageError(f"--device-map: {unknown[0]!r} is not a module of this model; module names look like "
                         f"{examples}")


def _placement_summary(loaded_model, device_map) -> dict | None:
    """Return the report's `engine.device_map`: parameters per device ("disk" for offloaded ones), or None."""
    if device_map is None:
        return None
    counts: dict[str, int] = {}
    for parameter in loaded_model.model.parameters():
        device = "disk" if parameter.device.type == "meta" else str(parameter.device)
        counts[device] = counts.get(device, 0) + parameter.numel()
    return counts


def _resolve_lora(lora_config):
    """Return a LoraPlan from a file path or a mapping of LoraConfig keys, or None."""
    if lora_config is None:
        return None
    from .loading.lora import lora_plan_from_dict, read_lora_config

    if isinstance(lora_config, Mapping):
        return lora_plan_from_dict(dict(lora_config))
    return read_lora_config(lora_config)


def _lora_section(lora, adapter, seed: int) -> dict | None:
    """Return the report's `lora` block: the adapter analysed in place of the base weights."""
    if lora is None:
        return None
    return {**lora.to_dict(), "seed": seed, "modules_targeted": adapter.modules_targeted,
            "modules_adapted": len(adapter.modules), "modules": list(adapter.modules), "parameters": adapter.numel}


def resolve_device(device: str, shard=None) -> str:
    """Return a torch device string for --device: auto, cpu, cuda, cuda:N or mps.

    Under torchrun, auto and cuda mean this rank's GPU, cuda:LOCAL_RANK.

    NOTE: the CUDA and MPS paths are written for, but this project's CI has no GPU; only CPU
    runs are tested.
    """
    import torch

    text = str(device).strip().lower()
    if shard is not None and text in ("auto", "cuda") and torch.cuda.is_available():
        import os

        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: MPS is not available on this machine; use --device cpu")
        return "mps"
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available; use --device cpu or auto")
        if ":" in text and int(text[5:]) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices are visible")
        return text
    raise UsageError(f"--device: {device!r} is not one of auto, cpu, cuda, cuda:N, mps")


def _check_writable(folder: Path, label: str) -> None:
    """Raise UsageError, naming `label`, unless a file can be created in `folder` (checked before the work)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".riskgate-write-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"{label}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None


def _parse_memory(max_memory: int | str | None) -> int | None:
    from .diagnostics.memory import parse_size

    if isinstance(max_memory, str):
        return parse_size(max_memory)
    if max_memory is not None and (isinstance(max_memory, bool) or max_memory <= 0):
        raise UsageError(f"--max-memory: must be a positive size, got {max_memory!r}")
    return max_memory


def _memory_plan(loaded_model, scope, scoped_params, rows: int, max_memory: int | None, spill_dir: Path | None = None):
    """Choose exact, streamed (with `spill_dir`) or sketched gradients for `rows` sequences within the memory limit."""
    import shutil

    import torch

    from .diagnostics.memory import plan_memory

    from .diagnostics.memory import format_size

    available = _available_memory_bytes()
    if max_memory is not None:
        limit = max_memory
    elif available is not None:
        limit = int(0.8 * available)
    else:
        limit = 16 * 2**30
    if max_memory is not None and available is not None and max_memory > available:
        logger.warning("--max-memory %s is more than the %s this machine has available; the run may swap "
                       "or be killed before it reaches the limit", format_size(max_memory), format_size(available))
    return plan_memory(
        parameters_total=loaded_model.parameters_total, model_itemsize=scoped_params[0].element_size(),
        numel=scope.numel, rows=rows, itemsize=8 if scoped_params[0].dtype == torch.float64 else 4,
        limit_bytes=limit, limit_given=max_memory is not None,
        spill_free_bytes=None if spill_dir is None else shutil.disk_usage(spill_dir).free,
    )


def _spill_folder(memory, spill_dir: Path | None) -> str | None:
    """Return the folder for the engine's row files when the memory plan chose the streamed path."""
    return str(spill_dir) if memory.path == "streamed" and spill_dir is not None else None


def _validate_spill_dir(spill_dir: str | Path | None) -> Path | None:
    """Return --spill-dir as a Path after checking that it is a writable folder, or None."""
    if spill_dir is None:
        return None
    if not str(spill_dir).strip():
        raise UsageError("--spill-dir: empty path; name a folder on a disk with room for the gradient rows")
    folder = Path(spill_dir)
    if not folder.is_dir():
        raise UsageError(f"--spill-dir {folder}: not a folder; create it or choose an existing folder")
    _check_writable(folder, f"--spill-dir {folder}")
    return folder


def _cached_memory_plan(cached, max_memory: int | None):
    """Return the gradient path of a subspace file, which the check must keep, within the memory limit.

    The file's estimate covers the rows a check keeps, so a limit below it is an error: UsageError
    for a --max-memory the user gave, EnvironmentFailure for the default share of the machine.
    """
    from .diagnostics.memory import MemoryPlan, format_size
    from .errors import EnvironmentFailure

    limit = max_memory if max_memory is not None else int(0.8 * (_available_memory_bytes() or 20 * 2**30))
    width = cached.metadata.get("sketch_width")
    estimated = int(cached.metadata.get("estimated_bytes", 0))
    if estimated > limit:
        error = UsageError if max_memory is not None else EnvironmentFailure
        raise error(
            f"--subspace {cached.path}: built for a run estimated at {format_size(estimated)}, above the memory "
            f"limit of {format_size(limit)}; rebuild it with `riskgate subspace build --max-memory "
            f"{format_size(limit).replace(' ', '')}` or raise --max-memory"
        )
    return MemoryPlan(cached.metadata.get("path", "exact"), width, limit, estimated)


def _subspace_key(loaded_model, safety_sha256: str, scope, scoped_params, budget: Budget, seed: int,
                  lora=None) -> dict:
    """The values a subspace file must share with a check to be reused (subspace.MATCHED_KEYS)."""
    return {
        "lora": None if lora is None else lora.to_dict() | {"source": None, "ignored": None},
        "model_sha256": loaded_model.weights_sha256,
        "safety_sha256": safety_sha256,
        "scope": list(scope.names),
        "dtype": str(scoped_params[0].dtype).removeprefix("torch."),
        "max_seq_len": budget.max_seq_len,
        "max_safety_examples": budget.max_safety_examples,
        "seed": seed,
    }


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check(
    model: str,
    dataset: str | Path,
    policy: str | Path = "default",
    *,
    safety_data: str | Path | None = None,
    dataset_format: str | None = None,
    dataset_columns: Mapping[str, str] | None = None,
    safety_format: str | None = None,
    safety_columns: Mapping[str, str] | None = None,
    params: Sequence[str] | None = None,
    learning_rate: float | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    optimizer: str | Optimizer | None = None,
    train_config: str | Path | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    dtype: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    fail_on_warn: bool = False,
    waivers: str | Path | None = None,
    what_if_drop: int = 0,
    export_filtered: str | Path | None = None,
    max_memory: int | str | None = None,
    hvp_method: str = "auto",
    subspace: str | Path | None = None,
    device: str = "auto",
    lora_config: str | Path | Mapping | None = None,
    spill_dir: str | Path | None = None,
    device_map: str | Path | Mapping | None = None,
    offload_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> CheckResult:
    """Run the gate: diagnose `model` against a fine-tune on `dataset` under `policy`.

    `policy` is a preset name (default, strict, permissive) or a YAML file. The training plan
    comes from `train_config` or from learning_rate/max_steps/batch_size/optimizer, with
    documented defaults for what is unset. Raises `InvalidInputError` subclasses for bad
    input; returns a report with verdict `error` when the analysis cannot finish.
    `what_if_drop` K > 0 reruns the fine-tune side without the K records with the largest share
    of the forecast drift, and `export_filtered` writes the dataset without them.
    `max_memory` (bytes, or a size such as "16G") caps the estimated memory of the diagnostics:
    gradients stay exact when they fit, else they stay exact in a memory-mapped file in the
    `spill_dir` folder when one is given (the streamed path), and are sketched otherwise
    (diagnostics/memory.py); the default limit is 80% of the available memory. `hvp_method` is one of auto,
    forward_over_reverse, double_backward, finite_difference (diagnostics/hvp.py).
    `device` is auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps.
    `subspace` is a file from `build_subspace` for the same model, safety data, scope, caps
    and seed; its safety side is reused after those are verified (riskgate/subspace.py).
    `waivers` is a waivers YAML file (see `riskgate.policy.waivers`); an expired entry that
    still matches a failing or warning finding raises `WaiverError` after the analysis.
    `lora_config` (a PEFT adapter_config.json, a YAML file or a mapping of LoraConfig keys)
    makes the plan a LoRA fine-tune: the adapter is attached with A drawn from `seed` and the
    diagnostics describe the update it can make (riskgate/loading/lora.py).
    `device_map` (auto, balanced, balanced_low_0, sequential, a JSON file or a mapping of module
    names to devices) spreads a model that does not fit one device with accelerate's big-model
    placement; modules sent to "disk" live in `offload_dir`. Hessian-vector products then
    default to finite differences, which need only gradients.
    """
    from .loading.formats import DatasetFormat
    from .policy import evaluate, exit_code_for, load_policy
    from .policy.waivers import apply_waivers, load_waivers
    from .safety_sets import default_safety_set_path

    budget = budget or Budget()
    progress = progress or NullProgress()
    if what_if_drop < 0:
        raise UsageError(f"--what-if-drop: must be 0 or more records, got {what_if_drop}")
    if export_filtered is not None and not what_if_drop:
        raise UsageError("--export-filtered needs --what-if-drop K: it writes the dataset without those K records")
    _validate_seed(seed)
    if export_filtered is not None:
        from .loading.export import check_destination

        check_destination(dataset, export_filtered)
    if isinstance(params, str):
        params = [params]
    from .diagnostics.settings import HvpMethod

    max_memory = _parse_memory(max_memory)
    spill_dir = _validate_spill_dir(spill_dir)
    device_map, offload_dir = _parse_device_map(device_map, offload_dir)
    from .diagnostics.distributed import init_from_environment

    shard = init_from_environment()
    torch_device = resolve_device(device, shard)
    methods = [m.value for m in HvpMethod]
    if hvp_method not in methods:
        raise UsageError(f"--hvp-method: {hvp_method!r} is not one of {', '.join(methods)}")
    deadline = Deadline(budget.time_budget_s)
    _validate_budget(budget)

    # Inputs that fail fast: policy, datasets, plan.
    progress.start("loading inputs")
    resolved_policy = load_policy(policy)
    waiver_set = load_waivers(waivers) if waivers is not None else None
    fine_fmt = DatasetFormat(dataset_format) if dataset_format else None
    safety_fmt = DatasetFormat(safety_format) if safety_format else None
    fine_loaded = _load_data(dataset, fine_fmt, dataset_columns)
    builtin_safety = safety_data is None
    safety_path = default_safety_set_path() if builtin_safety else safety_data
    safety_loaded = _load_data(safety_path, safety_fmt, safety_columns)
    plan = resolve_plan(
        train_config=train_config,
        learning_rate=learning_rate,
        max_steps=max_steps,
        batch_size=batch_size,
        optimizer=optimizer,
        num_records=len(fine_loaded.records),
    )
    lora = _resolve_lora(lora_config)
    progress.finish("loading inputs")

    # The model, its scope, and tokenisation.
    from .loading.model import model_summary

    progress.start("loading model")
    loaded_model, scope, scoped_params, adapter = _load_scoped_model(
        model, params, dtype=dtype, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, device=torch_device,
        lora=lora, seed=seed, device_map=device_map, offload_dir=offload_dir,
    )
    fine_encoded, fine_sampled_out, fine_records = _sample_and_encode(
        fine_loaded, loaded_model.tokenizer, max_examples=budget.max_finetune_examples,
        max_seq_len=budget.max_seq_len, seed=seed,
    )
    safety_encoded, safety_sampled_out, _ = _sample_and_encode(
        safety_loaded, loaded_model.tokenizer, max_examples=budget.max_safety_examples,
        max_seq_len=budget.max_seq_len, seed=seed,
    )
    progress.finish("loading model")

    cached = None
    subspace_key = _subspace_key(loaded_model, safety_loaded.sha256, scope, scoped_params, budget, seed, lora)
    if subspace is not None:
        from .subspace import check_matches, read_subspace

        cached = read_subspace(subspace)
        check_matches(cached, subspace_key, safety_encoded.sequences)
        memory = _cached_memory_plan(cached, max_memory)
    else:
        memory = _memory_plan(loaded_model, scope, scoped_params,
                              len(safety_encoded.sequences) + len(fine_encoded.sequences), max_memory, spill_dir)

    if what_if_drop >= len(fine_encoded.sequences):
        raise UsageError(
            f"--what-if-drop {what_if_drop}: must be smaller than the {len(fine_encoded.sequences)} "
            "fine-tune records analysed, so that some remain; lower K"
        )
    settings = DiagnosticSettings(
        rho=resolved_policy.rho,
        k_max=resolved_policy.k_max,
        orthogonality_level=resolved_policy.orthogonality_level,
        tau=resolved_policy.tau,
        learning_rate=plan.learning_rate,
        batch_size=plan.batch_size,
        planned_steps=plan.max_steps,
        optimizer=plan.optimizer,
        adam_epsilon=plan.adam_epsilon,
        seed=seed,
        # A spread model runs its curvature pass by finite differences unless asked otherwise.
        hvp_method=HvpMethod.FINITE_DIFFERENCE if device_map is not None and hvp_method == "auto" else HvpMethod(hvp_method),
        sketch_width=memory.sketch_width,
        spill_dir=_spill_folder(memory, spill_dir),
    )
    pad_token_id = _pad_token_id(loaded_model.tokenizer)
    runner, diagnostics, errors = _run(loaded_model.model, scoped_params, scope.names, safety_encoded, fine_encoded,
                                       settings, pad_token_id, deadline, progress,
                                       cached=None if cached is None else (cached.gradients, cached.gram, cached.losses))

    # Policy evaluation and the report.
    progress.start("report")
    metrics = _metrics(
        diagnostics, errors, plan.max_steps, len(safety_encoded.sequences), len(fine_encoded.sequences)
    )
    summary = model_summary(loaded_model)
    waived = apply_waivers(
        evaluate(resolved_policy, metrics), waiver_set,
        model_sha256=summary.get("sha256"), dataset_sha256=fine_loaded.sha256,
    )
    evaluation = waived.evaluation
    exit_code = int(exit_code_for(evaluation.verdict, fail_on_warn))

    summary.update(
        parameters_analysed=scope.numel,
        scope_patterns=list(scope.patterns),
        scope_tensors=list(scope.names),
        scope_default=scope.default_used,
    )
    fine_summary = DataSummary(
        path=str(dataset), sha256=fine_loaded.sha256, format=fine_loaded.format.value,
        records_total=fine_loaded.num_rows, records_sampled_out=fine_sampled_out,
        skipped=tuple(fine_loaded.skipped) + tuple(fine_encoded.skipped),
        duplicates=fine_loaded.num_duplicates, encoded=fine_encoded,
    )
    safety_summary = DataSummary(
        path="builtin:default" if builtin_safety else str(safety_data), sha256=safety_loaded.sha256,
        format=safety_loaded.format.value, records_total=safety_loaded.num_rows,
        records_sampled_out=safety_sampled_out,
        skipped=tuple(safety_loaded.skipped) + tuple(safety_encoded.skipped),
        duplicates=safety_loaded.num_duplicates, encoded=safety_encoded, builtin=builtin_safety,
    )
    report = build_report(
        verdict=evaluation.verdict.value,
        exit_code=exit_code,
        reason=evaluation.reason,
        errors=errors + ([diagnostics.incomplete_reason] if diagnostics and diagnostics.incomplete_reason else []),
        model=summary,
        dataset=data_section(fine_summary, diagnostics.finetune.mean_loss if diagnostics else None,
                             len(fine_encoded.sequences)),
        safety_data=data_section(safety_summary, diagnostics.safety.mean_loss if diagnostics else None,
                                 len(safety_encoded.sequences)),
        policy={
            "name": resolved_policy.name,
            "source": resolved_policy.source,
            "sha256": resolved_policy.sha256,
            "extends_chain": list(resolved_policy.extends_chain),
            "resolved": resolved_policy.to_dict(),
        },
        plan=plan,
        budget=budget,
        budget_used={
            "safety_examples": len(safety_encoded.sequences),
            "finetune_examples": len(fine_encoded.sequences),
            "safety_tokens": safety_encoded.num_tokens,
            "finetune_tokens": fine_encoded.num_tokens,
            "safety_examples_sampled_out": safety_sampled_out,
            "finetune_examples_sampled_out": fine_sampled_out,
            "sequences_truncated": safety_encoded.num_truncated + fine_encoded.num_truncated,
            "elapsed_s": round(deadline.elapsed_s, 3),
        },
        seed=seed,
        diagnostics=diagnostics,
        findings=[finding.to_dict() for finding in evaluation.findings],
    )
    report["waivers"] = waived.to_dict()
    report["lora"] = _lora_section(lora, adapter, seed)
    info = runner.engine_info()
    report["engine"] = {
        "path": info.path,
        "sketch_width": info.sketch_width,
        "error_scale": info.error_scale,
        "hvp_method": info.hvp_method,
        "device": str(torch_device) if device_map is None else "device_map",
        "device_map": _placement_summary(loaded_model, device_map),
        "ranks": 1 if shard is None else shard.world,
        "rank": 0 if shard is None else shard.rank,
        "micro_batch_size": settings.micro_batch_size,
        "max_memory_bytes": memory.limit_bytes,
        "estimated_bytes": memory.estimated_bytes,
    }

    # Which records carry the risk, and what dropping the riskiest would change.
    from .attribution_report import attribution_section

    report["attribution"] = attribution_section(diagnostics.records if diagnostics else (), fine_records)
    report["what_if"] = None
    if what_if_drop and diagnostics is not None and diagnostics.complete:
        report["what_if"] = _what_if(
            runner, diagnostics, resolved_policy, metrics, evaluation.verdict.value, drop=what_if_drop,
            plan=plan, safety_count=len(safety_encoded.sequences), dataset=dataset,
            export_filtered=export_filtered,
        )
    progress.finish("report")
    return CheckResult(report)


@dataclass(frozen=True)
class SubspaceSummary:
    """Summary of the subspace file that `build_subspace` wrote."""

    path: Path
    sequences: int
    parameters: int
    path_kind: str
    """`exact` or `sketched`."""
    sketch_width: int | None
    k: int
    eigenvalues: tuple[float, ...]
    elapsed_s: float
    file_bytes: int


def build_subspace(
    model: str,
    output: str | Path,
    *,
    safety_data: str | Path | None = None,
    safety_format: str | None = None,
    safety_columns: Mapping[str, str] | None = None,
    params: Sequence[str] | None = None,
    policy: str | Path = "default",
    budget: Budget | None = None,
    seed: int = 0,
    dtype: str | None = None,
    max_memory: int | str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device: str = "auto",
    lora_config: str | Path | Mapping | None = None,
    spill_dir: str | Path | None = None,
    device_map: str | Path | Mapping | None = None,
    offload_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> SubspaceSummary:
    """Run the safety pass of a check once and save it to `output` for `check(subspace=...)`.

    The file is tied to the model's weights, the safety data, the scope, --max-seq-len,
    --max-safety-examples, the seed and the LoRA adapter (`lora_config`, as in `check`); a
    check with other values rejects it. `policy` only
    sets the rank rule shown in the summary: checks apply their own. The memory plan leaves
    room for `budget.max_finetune_examples` fine-tune rows, as the later check needs.
    """
    from .loading.formats import DatasetFormat
    from .policy import load_policy
    from .safety_sets import default_safety_set_path
    from .subspace import write_subspace

    budget = budget or Budget()
    progress = progress or NullProgress()
    if isinstance(params, str):
        params = [params]
    _validate_seed(seed)
    max_memory = _parse_memory(max_memory)
    spill_dir = _validate_spill_dir(spill_dir)
    device_map, offload_dir = _parse_device_map(device_map, offload_dir)
    torch_device = resolve_device(device)
    _validate_budget(budget)
    output = Path(output)
    if output.is_dir() or not output.parent.is_dir():
        raise UsageError(f"--output {output}: must be a file path in an existing folder")
    _check_writable(output.parent, f"--output {output}")
    deadline = Deadline(budget.time_budget_s)

    progress.start("loading inputs")
    resolved_policy = load_policy(policy)
    safety_path = default_safety_set_path() if safety_data is None else safety_data
    safety_loaded = _load_data(safety_path, DatasetFormat(safety_format) if safety_format else None, safety_columns)
    lora = _resolve_lora(lora_config)
    progress.finish("loading inputs")
    progress.start("loading model")
    loaded_model, scope, scoped_params, _ = _load_scoped_model(
        model, params, dtype=dtype, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, device=torch_device,
        lora=lora, seed=seed, device_map=device_map, offload_dir=offload_dir,
    )
    safety_encoded, _, _ = _sample_and_encode(
        safety_loaded, loaded_model.tokenizer, max_examples=budget.max_safety_examples,
        max_seq_len=budget.max_seq_len, seed=seed,
    )
    progress.finish("loading model")
    rows = len(safety_encoded.sequences) + (budget.max_finetune_examples or 64)
    memory = _memory_plan(loaded_model, scope, scoped_params, rows, max_memory, spill_dir)

    from .diagnostics.engine import DiagnosticsRun

    settings = DiagnosticSettings(
        rho=resolved_policy.rho, k_max=resolved_policy.k_max, orthogonality_level=resolved_policy.orthogonality_level,
        tau=resolved_policy.tau, learning_rate=1e-5, batch_size=1, planned_steps=1, seed=seed,
        sketch_width=memory.sketch_width, spill_dir=_spill_folder(memory, spill_dir),
    )
    runner = DiagnosticsRun(loaded_model.model, scoped_params, scope.names, settings,
                            pad_token_id=_pad_token_id(loaded_model.tokenizer), deadline=deadline)
    progress.start("safety gradients", len(safety_encoded.sequences))
    runner.progress = lambda stage, done, total: progress.update(done, total)
    try:
        side = runner._safety_pass(safety_encoded.sequences)
    finally:
        progress.finish("safety gradients")
    metadata = _subspace_key(loaded_model, safety_loaded.sha256, scope, scoped_params, budget, seed, lora)
    metadata.update(
        path=memory.path, sketch_width=memory.sketch_width, estimated_bytes=memory.estimated_bytes,
        riskgate_version=__version__, rank_rule={"rho": settings.rho, "k_max": settings.k_max},
        safety_source="builtin:default" if safety_data is None else str(safety_data),
    )
    write_subspace(output, gradients=side.gradients, gram=side.gram, losses=side.losses,
                   sequences=side.sequences, metadata=metadata)
    subspace = side.subspace
    return SubspaceSummary(
        path=output, sequences=len(side.sequences), parameters=scope.numel, path_kind=memory.path,
        sketch_width=runner.engine_info().sketch_width, k=subspace.k,
        eigenvalues=tuple(float(x) for x in subspace.eigenvalues), elapsed_s=deadline.elapsed_s,
        file_bytes=output.stat().st_size,
    )


def _validate_budget(budget: Budget) -> None:
    for name, value in (
        ("--max-safety-examples", budget.max_safety_examples),
        ("--max-finetune-examples", budget.max_finetune_examples),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{name}: must be at least 1, got {value}")
    if budget.max_seq_len < 2:
        raise UsageError(f"--max-seq-len: must be at least 2 tokens, got {budget.max_seq_len}")
    if budget.time_budget_s is not None and budget.time_budget_s <= 0:
        raise UsageError(f"--time-budget: must be a positive number of seconds, got {budget.time_budget_s}")


def _pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _run(model, params, names, safety, finetune, settings, pad_token_id, deadline, progress, cached=None):
    """Run the diagnostics; an AnalysisError becomes an error message instead of an exception."""
    from .diagnostics.engine import DiagnosticsRun

    runner = DiagnosticsRun(model, params, names, settings, pad_token_id=pad_token_id, deadline=deadline)
    if not safety.sequences or not finetune.sequences:
        which = "safety" if not safety.sequences else "fine-tune"
        return runner, None, [f"no {which} sequences left to analyse after loading and tokenisation"]

    current = {"stage": None}

    def on_progress(stage, done, total):
        if current["stage"] is not stage:
            if current["stage"] is not None:
                progress.finish(current["stage"].value)
            current["stage"] = stage
            progress.start(stage.value, total)
        progress.update(done, total)

    runner.progress = on_progress
    try:
        result = runner.run(safety.sequences, finetune.sequences, cached=cached)
    except AnalysisError as exc:
        logger.error("diagnostics failed: %s", exc)
        return runner, None, [str(exc)]
    finally:
        if current["stage"] is not None:
            progress.finish(current["stage"].value)
    return runner, result, []


def _metrics(diagnostics, errors: list[str], planned_steps: int, safety_count: int, finetune_count: int):
    """Collect what the policy gates from a diagnostics result (None when it did not run)."""
    from .policy.model import Metrics

    forecast = diagnostics.forecast if diagnostics else None
    if errors:
        incomplete_reason = errors[0]
    elif diagnostics is not None:
        incomplete_reason = diagnostics.incomplete_reason
    else:
        incomplete_reason = None
    return Metrics(
        overlap_ratio=diagnostics.overlap.overlap_ratio if diagnostics and diagnostics.overlap else None,
        gamma_hat=diagnostics.curvature.gamma_hat if diagnostics and diagnostics.curvature else None,
        delta_u_at_planned_steps=forecast.at_planned_steps.delta_u if forecast else None,
        collapse_step=forecast.collapse_step if forecast else None,
        collapse_search_limit=forecast.search_limit_step if forecast else None,
        planned_steps=planned_steps,
        safety_examples=safety_count,
        finetune_examples=finetune_count,
        linear_dominates=forecast.linear_dominates if forecast else False,
        complete=diagnostics is not None and diagnostics.complete and not errors,
        incomplete_reason=incomplete_reason,
    )


def _key_numbers(verdict: str, metrics) -> dict:
    return {
        "verdict": verdict,
        "overlap_ratio": metrics.overlap_ratio,
        "gamma_hat": metrics.gamma_hat,
        "delta_u_at_planned_steps": metrics.delta_u_at_planned_steps,
        "collapse_step": metrics.collapse_step,
        "finetune_examples": metrics.finetune_examples,
    }


def _what_if(runner, diagnostics, policy, metrics_before, verdict_before: str, *, drop: int,
             plan, safety_count: int, dataset, export_filtered):
    """Rerun the fine-tune side without the `drop` riskiest records; optionally export the rest."""
    from .attribution_report import rank_records, what_if_section
    from .policy import evaluate

    dropped = [score.index for score in rank_records(diagnostics.records)[:drop]]
    after = runner.rerun_without(set(dropped))
    metrics_after = _metrics(after, [], plan.max_steps, safety_count, after.finetune.sequences)
    verdict_after = evaluate(policy, metrics_after).verdict.value
    exported = None
    if export_filtered is not None:
        from .loading.export import export_without

        written = export_without(dataset, set(dropped), export_filtered)
        exported = {"path": str(export_filtered), "records_written": written}
    return what_if_section(
        dropped, _key_numbers(verdict_before, metrics_before), _key_numbers(verdict_after, metrics_after), exported
    )
