"""Names of parameters from jax key paths into an nnx State."""

from __future__ import annotations

import jax


def param_path(path) -> tuple:
    """('layers', 0, 'attn', 'q_proj', 'kernel') from a key path; a Variable's `value` slot is dropped."""
    names = []
    for entry in path:
        name = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", None)))
        if isinstance(entry, jax.tree_util.GetAttrKey) and name == "value":
            continue
        names.append(name)
    return tuple(names)
