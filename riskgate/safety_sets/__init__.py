"""Safety sets shipped with riskgate: harmful requests paired with refusals.

The default set is a JSON Lines file in the `messages` format (one user request, one assistant
refusal) with a `category` column. See README.md in this folder for its categories and license.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

DEFAULT_SAFETY_SET = "default.jsonl"


def default_safety_set_path() -> Path:
    """Return the path of the default safety set inside the installed package."""
    resource = importlib.resources.files(__name__).joinpath(DEFAULT_SAFETY_SET)
    # NOTE: assumes an unpacked install (a wheel or a source tree), where the resource is a
    # real file; a zipped package would need importlib.resources.as_file.
    return Path(str(resource))
