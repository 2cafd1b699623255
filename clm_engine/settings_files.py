"""Settings kept in a JSON file an environment variable names: read once, read again when the
file changes, and refused with the file and the field when unusable.

The cross-channel policies (``$CLM_CHANNEL_POLICY``) and the channel plugins' settings files
read theirs through :func:`settings_from_file`, so each answers a bad file the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .models import describe_validation_error

__all__ = ["settings_from_file"]

M = TypeVar("M", bound=BaseModel)

_cache: dict[tuple[Any, ...], Any] = {}


def settings_from_file(variable: str, path: str, model: type[M], what: str) -> M:
    """``model`` from the JSON file at ``path`` (named by ``$variable``), cached until the file
    changes; ``ValueError`` naming ``what``, the file and the field when it is unusable."""
    try:
        info = os.stat(path)
    except OSError:
        raise ValueError(f"${variable} names {path!r}, which cannot be read") from None
    key = (model, path, info.st_mtime_ns, info.st_size)
    found = _cache.get(key)
    if found is None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{what} {path}: {error}") from None
        try:
            found = _cache[key] = model.model_validate(data)
        except ValidationError as error:
            reason = describe_validation_error(error)
            raise ValueError(f"{what} {path} is not valid: {reason}") from None
    return found
