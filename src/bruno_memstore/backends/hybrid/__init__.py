"""The hybrid backend."""

from .backend import HybridMemory

__all__ = ["HybridMemory"]
