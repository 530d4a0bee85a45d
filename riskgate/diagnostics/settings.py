"""Settings of a diagnostics run (torch-free, so plans and policies load without torch)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Optimizer(str, enum.Enum):
    """Optimizer of the planned fine-tune; it decides the update direction the forecast uses."""

    SGD = "sgd"
    """Plain SGD: the update direction is the fine-tune gradient g."""
    ADAMW = "adamw"
    """Adam or AdamW: g preconditioned by D = diag(1 / (sqrt(v_hat) + eps)), where v_hat is the
    mean of squared per-example fine-tune gradients. Weight decay is left out of the forecast."""


class HvpMethod(str, enum.Enum):
    """Method of the curvature pass's Hessian-vector products."""

    AUTO = "auto"
    """Double backward, then forward over reverse, then finite differences: the first that works."""
    FORWARD_OVER_REVERSE = "forward_over_reverse"
    """torch.func.jvp of torch.func.grad."""
    DOUBLE_BACKWARD = "double_backward"
    """Gradient of <grad L, v>, keeping the first backward's graph."""
    FINITE_DIFFERENCE = "finite_difference"
    """Central differences of gradients along v; needs first derivatives only."""


class Stage(str, enum.Enum):
    """Stages of a diagnostics run, in order, for progress reporting."""

    SAFETY_GRADIENTS = "safety gradients"
    FINETUNE_GRADIENTS = "fine-tune gradients"
    CURVATURE = "curvature"
    SAFETY_PRODUCTS = "exact safety products"
    """Sketched path only: one more safety pass for exact G v, G g and G h."""


@dataclass(frozen=True)
class DiagnosticSettings:
    """Numbers the diagnostics need from the policy and the training plan."""

    rho: float
    k_max: int
    orthogonality_level: float
    tau: float
    learning_rate: float
    batch_size: int
    planned_steps: int
    optimizer: Optimizer = Optimizer.ADAMW
    adam_epsilon: float = 1e-8
    bootstrap_resamples: int = 200
    """Bootstrap resamples for the uncertainty intervals; 0 skips them."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    micro_batch_size: int = 4
    """Sequences per forward pass in the gradient and curvature passes; results do not depend on it."""
    hvp_method: HvpMethod = HvpMethod.AUTO
    """Method of the curvature pass's Hessian-vector products (diagnostics/hvp.py)."""
    sketch_width: int | None = None
    """None keeps gradients exactly in memory; r > 0 keeps CountSketches of width r (sketch.py)."""
    spill_dir: str | None = None
    """With sketch_width None: a folder where the exact gradient rows live in memory-mapped
    files (the streamed path), for scopes whose rows do not fit in memory. None keeps them in memory."""
