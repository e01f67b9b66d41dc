"""Models: the registry (`spec`), pulling into a plain transformers folder, and loading.

Public API::

    from emarena import models
    folder = models.pull("smollm2-135m-q4")         # idempotent; <cache>/models/<id>/
    model, tokenizer = models.load("smollm2-135m-q4")   # from that folder only
    spec = models.get_spec("qwen2.5-7b-instruct")
    spec.default_system_prompt, spec.identity.name

Importing this package does not import torch (`load` imports it when called).
"""

from __future__ import annotations

from emarena.models.load import load, local_path, model_dir, pull, read_done
from emarena.models.spec import (
    HfSource,
    Identity,
    ModelSpec,
    PypiWheelSource,
    all_specs,
    default_model_id,
    get_spec,
)

__all__ = [
    "HfSource",
    "Identity",
    "ModelSpec",
    "PypiWheelSource",
    "all_specs",
    "default_model_id",
    "get_spec",
    "load",
    "local_path",
    "model_dir",
    "pull",
    "read_done",
]
