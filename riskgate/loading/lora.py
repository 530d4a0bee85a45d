"""LoRA plans: read a PEFT LoraConfig and attach the adapter it describes to the base model.

A LoRA fine-tune trains, for each targeted linear layer W (out x in), two factors
A (r x in) and B (out x r), and the layer computes

    y = W x + s B A x,    s = lora_alpha / r   (lora_alpha / sqrt(r) with use_rslora).

PEFT's default initialisation draws A from kaiming-uniform with a = sqrt(5), that is
U(-1/sqrt(in), 1/sqrt(in)), and sets B = 0, so the adapted model equals the base model. With
the adapter attached, riskgate analyses the adapter's parameters theta = (A, B) in place of the
base weights. Every diagnostic is then about the update this adapter can make:

- gradients: dL/dB = s (dL/dW) A^T, (out, r), and dL/dA = s B^T (dL/dW) = 0 at B = 0;
- the Hessian in (A, B) includes the cross term d^2L / dA dB, which is s (dL/dW) at B = 0.
  It carries the product of the A and B updates, the second-order effect of the
  factorisation, into gamma_hat and the forecast.

The A factor depends on the random draw: `seed` fixes it, and the report states it, so two
runs with the same seed analyse the same adapter. Dropout on the adapter input
(`lora_dropout`) is not modelled: it scales the expected update by 1 and only adds noise.

A config is PEFT's `adapter_config.json` (JSON) or the same keys in YAML. Keys read: `r`,
`lora_alpha`, `target_modules`, `exclude_modules`, `layers_to_transform`, `layers_pattern`,
`use_rslora`, `init_lora_weights` (true or "gaussian"), `rank_pattern` and `alpha_pattern`.
`fan_in_fan_out` is not read, because the weight layout follows from the module type (GPT-2's
Conv1D stores its weight as in x out). Keys that shape the real run but that the diagnostics
do not model are listed in the report (`lora_dropout`, `bias`, `modules_to_save`), and so are
keys riskgate does not read. DoRA and other initialisations (PiSSA, OLoRA, LoftQ) are rejected
with a message.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskgate.errors import PlanError

ALL_LINEAR = "all-linear"
_DEFAULT_LAYER_PATTERNS = ("layers", "h", "blocks", "layer")
_UNMODELLED = {"lora_dropout": 0.0, "bias": "none", "modules_to_save": None}
"""Keys whose non-default value changes the real run in ways the diagnostics leave out."""
_READ = ("r", "lora_alpha", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "use_rslora",
         "init_lora_weights", "rank_pattern", "alpha_pattern", "peft_type", *_UNMODELLED)
_KNOWN_UNREAD = ("task_type", "base_model_name_or_path", "revision", "inference_mode", "fan_in_fan_out",
                 "auto_mapping", "megatron_config", "megatron_core", "layer_replication", "runtime_config",
                 "lora_bias", "target_parameters", "trainable_token_indices", "eva_config", "corda_config",
                 "use_qalora", "qalora_group_size", "alora_invocation_tokens", "arrow_config", "ensure_weight_tying",
                 "peft_version")
"""LoraConfig keys that do not change the update a zero-initialised adapter makes, or that newer
PEFT versions added. The report lists them as ignored."""
_REJECTED = {
    "use_dora": "DoRA adds a magnitude vector the diagnostics do not model",
    "loftq_config": "LoftQ initialisation changes the base weights",
}


@dataclass(frozen=True)
class LoraPlan:
    """A LoRA adapter as far as the diagnostics model it."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str
    """Module-name suffixes, one regular expression (full match) as a string, or 'all-linear'."""
    source: str
    exclude_modules: tuple[str, ...] | str | None = None
    layers_to_transform: tuple[int, ...] | None = None
    layers_pattern: tuple[str, ...] | None = None
    use_rslora: bool = False
    init: str = "kaiming"
    """'kaiming' (PEFT's default) or 'gaussian'."""
    rank_pattern: tuple[tuple[str, int], ...] = ()
    alpha_pattern: tuple[tuple[str, float], ...] = ()
    unmodelled: tuple[str, ...] = field(default=())
    """Config keys set to values the diagnostics do not model (dropout, trained biases)."""
    ignored: tuple[str, ...] = field(default=())
    """Config keys riskgate does not read (bookkeeping such as task_type, or newer PEFT options)."""

    def rank_and_scaling(self, module_name: str) -> tuple[int, float]:
        """Return (r, s) for one module, after `rank_pattern` and `alpha_pattern`."""
        rank = _pattern_value(self.rank_pattern, module_name, self.r)
        alpha = _pattern_value(self.alpha_pattern, module_name, self.lora_alpha)
        scaling = alpha / math.sqrt(rank) if self.use_rslora else alpha / rank
        return int(rank), float(scaling)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "use_rslora": self.use_rslora,
            "target_modules": self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules),
            "exclude_modules": (self.exclude_modules if isinstance(self.exclude_modules, str) or self.exclude_modules is None
                                else list(self.exclude_modules)),
            "layers_to_transform": None if self.layers_to_transform is None else list(self.layers_to_transform),
            "layers_pattern": None if self.layers_pattern is None else list(self.layers_pattern),
            "rank_pattern": dict(self.rank_pattern),
            "alpha_pattern": dict(self.alpha_pattern),
            "init": self.init,
            "unmodelled": list(self.unmodelled),
            "ignored": list(self.ignored),
        }


def _pattern_value(patterns, module_name: str, default):
    for key, value in patterns:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def read_lora_config(path: str | Path) -> LoraPlan:
    """Read a PEFT LoraConfig from a JSON or YAML file (or a folder's adapter_config.json).

    Raises PlanError naming the file and the key at fault.
    """
    from riskgate.plan import read_config_file

    path = Path(path)
    if path.is_dir():
        path = path / "adapter_config.json"
    if not path.is_file():
        raise PlanError(f"--lora-config {path}: file not found; pass PEFT's adapter_config.json, the adapter folder "
                        "that holds it, or a YAML file with LoraConfig keys")
    config = read_config_file(path, "LoRA config", "LoraConfig keys (r, lora_alpha, target_modules)")
    return lora_plan_from_dict(config, source=str(path))


def lora_plan_from_dict(config: dict[str, Any], *, source: str = "api") -> LoraPlan:
    """Build a LoraPlan from LoraConfig keys; raise PlanError for a missing, wrong or unsupported key."""
    where = f"--lora-config {source}"
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise PlanError(f"{where}: 'peft_type' is {peft_type!r}; only LORA adapters are supported")
    for key, reason in _REJECTED.items():
        if config.get(key):
            raise PlanError(f"{where}: '{key}' is set, but {reason}; remove it or analyse the full weights with --params")

    for key in config:
        if key in _READ or key in _REJECTED or key in _KNOWN_UNREAD:
            continue
        close = difflib.get_close_matches(key, _READ, n=1, cutoff=0.8)
        if close:
            raise PlanError(f"{where}: unknown key '{key}'; did you mean '{close[0]}'?")
    ignored = tuple(key for key in config if key not in _READ and key not in _REJECTED)

    rank = config.get("r", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise PlanError(f"{where}: 'r' must be a positive integer, got {rank!r}")
    alpha = config.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise PlanError(f"{where}: 'lora_alpha' must be a positive number, got {alpha!r}")

    targets = config.get("target_modules")
    if targets is None:
        raise PlanError(f"{where}: 'target_modules' is missing; list the module names to adapt "
                        "(for example [q_proj, v_proj]) or write 'all-linear'")
    if isinstance(targets, str):
        target_modules: tuple[str, ...] | str = targets
        if targets != ALL_LINEAR:
            _compile(targets, where, "target_modules")
    elif isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) and t for t in targets):
        target_modules = tuple(targets)
    else:
        raise PlanError(f"{where}: 'target_modules' must be a list of module names or one regular expression, "
                        f"got {targets!r}")

    excluded = config.get("exclude_modules")
    if isinstance(excluded, str):
        _compile(excluded, where, "exclude_modules")
    elif excluded is not None:
        if not isinstance(excluded, (list, tuple)) or not all(isinstance(t, str) for t in excluded):
            raise PlanError(f"{where}: 'exclude_modules' must be a list of module names or one regular expression")
        excluded = tuple(excluded)

    layers = config.get("layers_to_transform")
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if layers is not None and (not isinstance(layers, list) or not all(isinstance(i, int) and i >= 0 for i in layers)):
        raise PlanError(f"{where}: 'layers_to_transform' must be a layer index or a list of them, got {layers!r}")
    pattern = config.get("layers_pattern")
    if isinstance(pattern, str):
        pattern = [pattern]

    init = config.get("init_lora_weights", True)
    if init is True:
        init_name = "kaiming"
    elif init == "gaussian":
        init_name = "gaussian"
    else:
        raise PlanError(f"{where}: 'init_lora_weights' = {init!r} is not supported; riskgate models "
                        "adapters that start at zero (true or \"gaussian\")")

    rank_pattern = _patterns(config.get("rank_pattern"), where, "rank_pattern", integer=True)
    alpha_pattern = _patterns(config.get("alpha_pattern"), where, "alpha_pattern", integer=False)
    unmodelled = tuple(
        key for key, default in _UNMODELLED.items() if config.get(key, default) not in (default, [], 0)
    )
    dropout = config.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise PlanError(f"{where}: 'lora_dropout' must be a probability in [0, 1), got {dropout!r}")
    return LoraPlan(
        r=rank, lora_alpha=float(alpha), target_modules=target_modules, source=source, ignored=ignored,
        exclude_modules=excluded, layers_to_transform=None if layers is None else tuple(layers),
        layers_pattern=None if pattern is None else tuple(pattern), use_rslora=bool(config.get("use_rslora", False)),
        init=init_name, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, unmodelled=unmodelled,
    )


def _compile(pattern: str, where: str, key: str):
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PlanError(f"{where}: '{key}' is not a valid regular expression ({exc})") from None


def _patterns(value, where: str, key: str, *, integer: bool) -> tuple:
    if not value:
        return ()
    if not isinstance(value, dict):
        raise PlanError(f"{where}: '{key}' must map module-name patterns to values")
    pairs = []
    for pattern, number in value.items():
        _compile(pattern, where, key)
        valid = isinstance(number, int) if integer else isinstance(number, (int, float))
        if isinstance(number, bool) or not valid or number <= 0:
            raise PlanError(f"{where}: '{key}' entry {pattern!r} must be a positive "
                            f"{'integer' if integer else 'number'}, got {number!r}")
        pairs.append((pattern, number))
    return tuple(pairs)


def _lora_linear_class():
    """Return the LoRA layer class (defined here so that importing this module needs no torch)."""
    import torch

    class _LoraLinear(torch.nn.Module):
        """y = base(x) + s * lora_B(lora_A(x)): a frozen linear layer plus a low-rank update.

        `base` is an nn.Linear or a transformers Conv1D; lora_A is (r x in), lora_B (out x r).
        """

        def __init__(self, base: torch.nn.Module, in_features: int, out_features: int, rank: int,
                     scaling: float, init: str, generator: torch.Generator) -> None:
            super().__init__()
            self.base = base
            weight = base.weight
            self.lora_A = torch.nn.Linear(in_features, rank, bias=False, device=weight.device, dtype=weight.dtype)
            self.lora_B = torch.nn.Linear(rank, out_features, bias=False, device=weight.device, dtype=weight.dtype)
            self.scaling = scaling
            with torch.no_grad():
                values = torch.empty((rank, in_features), dtype=torch.float64)
                if init == "gaussian":
                    values.normal_(0.0, 1.0 / rank, generator=generator)
                else:  # kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
                    bound = 1.0 / math.sqrt(in_features)
                    values.uniform_(-bound, bound, generator=generator)
                self.lora_A.weight.copy_(values)
                self.lora_B.weight.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling

    return _LoraLinear


@dataclass(frozen=True)
class AttachedAdapter:
    """The modules and parameters that `attach_adapter` added to the model."""

    modules: tuple[str, ...]
    """Names of the adapted modules, in model order."""
    modules_targeted: int
    """Modules the config targets before --params narrows them; the difference is reported."""
    parameter_names: tuple[str, ...]
    """`<module>.lora_A.weight` and `<module>.lora_B.weight` for each adapted module."""
    numel: int


def _layer_index(name: str, patterns: tuple[str, ...]) -> int | None:
    for pattern in patterns:
        found = re.search(rf"(?:^|\.){re.escape(pattern)}\.(\d+)(?:\.|$)", name)
        if found:
            return int(found.group(1))
    return None


def _linear_shape(module: Any) -> tuple[int, int] | None:
    """Return (in, out) of an nn.Linear or a transformers Conv1D, else None."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None and module.weight.ndim == 2:
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


def _targeted(plan: LoraPlan, name: str, output_head: Any, module: Any) -> bool:
    if isinstance(plan.target_modules, str):
        if plan.target_modules == ALL_LINEAR:
            hit = module is not output_head
        else:
            hit = re.fullmatch(plan.target_modules, name) is not None
    else:
        hit = any(name == key or name.endswith("." + key) for key in plan.target_modules)
    if hit and plan.exclude_modules:
        if isinstance(plan.exclude_modules, str):
            hit = re.fullmatch(plan.exclude_modules, name) is None
        else:
            hit = not any(name == key or name.endswith("." + key) for key in plan.exclude_modules)
    if hit and plan.layers_to_transform is not None:
        index = _layer_index(name, plan.layers_pattern or _DEFAULT_LAYER_PATTERNS)
        hit = index is not None and index in plan.layers_to_transform
    return hit


def _check_layers(model: Any, plan: LoraPlan, output_head: Any, where: str) -> None:
    """Raise PlanError when `layers_to_transform` names a layer index the model does not have."""
    patterns = plan.layers_pattern or _DEFAULT_LAYER_PATTERNS
    indices = {_layer_index(name, patterns) for name, module in model.named_modules()
               if name and _linear_shape(module) is not None and module is not output_head}
    indices.discard(None)
    if not indices:
        raise PlanError(f"{where}: 'layers_pattern' {list(patterns)} finds no numbered layers in this model; "
                        "remove layers_to_transform or fix layers_pattern")
    missing = sorted(set(plan.layers_to_transform) - indices)
    if missing or not plan.layers_to_transform:
        raise PlanError(f"{where}: 'layers_to_transform' {list(plan.layers_to_transform)} must list layers of this model, "
                        f"{min(indices)} to {max(indices)}")


def attach_adapter(model: Any, plan: LoraPlan, *, seed: int, select=None) -> AttachedAdapter:
    """Wrap each targeted linear layer of `model` in a LoRA layer, in place; freeze everything else.

    `select(weight_name)` (optional) restricts the adapter to modules whose base weight name
    it accepts, for --params. Raises PlanError when no module matches.
    """
    import torch

    get_output = getattr(model, "get_output_embeddings", None)
    output_head = get_output() if callable(get_output) else None
    candidates = [(name, module) for name, module in model.named_modules()
                  if name and _linear_shape(module) is not None and _targeted(plan, name, output_head, module)]
    targeted = len(candidates)
    if select is not None:
        candidates = [(name, module) for name, module in candidates if select(f"{name}.weight")]
    where = f"--lora-config {plan.source}"
    if plan.layers_to_transform is not None:
        _check_layers(model, plan, output_head, where)
    if not candidates:
        linear = [name for name, module in model.named_modules() if name and _linear_shape(module) is not None]
        examples = ", ".join(sorted({name.rsplit(".", 1)[-1] for name in linear})[:8])
        hint = ""
        if isinstance(plan.target_modules, str) and plan.target_modules != ALL_LINEAR:
            hint = (f" (a string is a regular expression that must match the whole module name; write "
                    f"[\"{plan.target_modules}\"] for a list of names)")
        raise PlanError(
            f"{where}: 'target_modules' {plan.target_modules!r} matches no linear layer"
            f"{' within --params' if select is not None else ''}{hint}; this model's linear layers end in {examples}"
        )

    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    lora_linear = _lora_linear_class()
    names: list[str] = []
    for name, module in candidates:
        in_features, out_features = _linear_shape(module)
        rank, scaling = plan.rank_and_scaling(name)
        wrapped = lora_linear(module, in_features, out_features, rank, scaling, plan.init, generator)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, wrapped)
        for part in ("lora_A", "lora_B"):
            getattr(wrapped, part).weight.requires_grad_(True)
            names.append(f"{name}.{part}.weight")
    table = dict(model.named_parameters())
    return AttachedAdapter(
        modules=tuple(name for name, _ in candidates),
        modules_targeted=targeted,
        parameter_names=tuple(names),
        numel=sum(table[name].numel() for name in names),
    )
