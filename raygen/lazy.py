"""Lazy package exports (PEP 562), so that ``import raygen.config`` (hence ``raygen --help`` and config
validation) does not import torch, transformers or Ray.

    __getattr__, __dir__ = lazy_exports(__name__, {"SidTrie": "raygen.generation.trie", ...})
"""
from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """Module-level ``__getattr__``/``__dir__`` for ``package``: ``name`` is imported from the module
    ``exports[name]`` on first access (and then cached on the package)."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


def exports_of(**modules: tuple[str, ...]) -> dict[str, str]:
    """``exports_of(**{"raygen.generation.trie": ("SidTrie",)})`` -> ``{"SidTrie": "raygen.generation.trie"}``."""
    return {name: module for module, names in modules.items() for name in names}
