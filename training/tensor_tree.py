"""Nested training state (optimiser, scheduler and RNG states, counters, histories) as a JSON skeleton plus a
flat dict of tensors, so that it is saved as safetensors + JSON and read back without unpickling anything.

In the skeleton a tensor is ``{"$tensor": name}`` (with ``"$stride"`` when its layout is not the contiguous
one, e.g. channels-last), a tuple ``{"$tuple": [...]}``, a dict whose keys are not all
plain strings (an optimiser's parameter ids) ``{"$items": [[key, value], ...]}`` and a NaN or infinite float
``{"$float": "nan"}``; everything else is plain JSON. Floats are written with ``repr`` and read back exactly.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

TAGS = ("$tensor", "$stride", "$tuple", "$items", "$float")


def split(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(skeleton, tensors)`` of ``tree``: dicts, lists, tuples, tensors, numbers, strings, booleans and None.

    Tensors are detached, moved to the CPU, made contiguous and named by their path in the tree; a tensor sharing
    memory with one met before is copied (safetensors stores each storage once). Anything else is a TypeError.
    """
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def name_for(path: str) -> str:
        name, n = path or "tensor", 1
        while name in tensors:
            name, n = f"{path}#{n}", n + 1
        return name

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            ptr = t.untyped_storage().data_ptr()
            if t.numel() and ptr in storages:
                t = t.clone()
            elif t.numel():
                storages.add(ptr)
            name = name_for(path)
            tensors[name] = t
            if _dense_strided(node):  # channels-last and other dense layouts come back as they were
                return {"$tensor": name, "$stride": list(node.stride())}
            return {"$tensor": name}
        if isinstance(node, np.generic):
            node = node.item()
        if node is None or isinstance(node, (bool, int, str)):
            return node
        if isinstance(node, float):
            return node if math.isfinite(node) else {"$float": repr(node)}
        if isinstance(node, tuple):
            return {"$tuple": [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if isinstance(node, Mapping):
            plain = all(isinstance(k, str) and k not in TAGS for k in node)
            if plain:
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
            return {"$items": [[walk(k, f"{path}.key"), walk(v, f"{path}.{k}" if path else str(k))]
                               for k, v in node.items()]}
        raise TypeError(f"cannot store a {type(node).__name__} at {path or 'the top'} of a training state")

    return walk(tree, ""), tensors


def join(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The tree :func:`split` took apart (a KeyError names a missing tensor, a ValueError a malformed node)."""
    if isinstance(skeleton, list):
        return [join(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "$tensor" in skeleton:
        return _tensor(skeleton, tensors)
    if len(skeleton) == 1:
        (tag, value), = skeleton.items()
        if tag == "$tuple":
            return tuple(join(v, tensors) for v in value)
        if tag == "$items":
            return {_key(join(k, tensors)): join(v, tensors) for k, v in value}
        if tag == "$float":
            return float(value)
    return {k: join(v, tensors) for k, v in skeleton.items()}


def _dense_strided(t: torch.Tensor) -> bool:
    """Whether ``t`` fills its own storage in a non-contiguous order (a permutation of the contiguous layout)."""
    canonical, step = [], 1
    for size in reversed(t.shape):
        canonical.insert(0, step)
        step *= size
    if t.stride() == tuple(canonical) or t.storage_offset() or not t.numel():
        return False
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return False
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _tensor(node: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    name = node["$tensor"]
    if name not in tensors:
        raise KeyError(f"tensor {name!r} is missing")
    value = tensors[name]
    stride = node.get("$stride")
    if stride is None:
        return value
    out = torch.empty_strided(value.shape, tuple(int(s) for s in stride), dtype=value.dtype)
    return out.copy_(value)


def _key(key: Any) -> Any:
    if isinstance(key, list):  # a tuple key survives as a tuple only inside "$tuple"
        raise ValueError("a list cannot be a dictionary key")
    return key
