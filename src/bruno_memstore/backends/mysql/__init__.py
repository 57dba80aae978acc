"""The mysql backend."""

from .backend import MySQLMemory

__all__ = ["MySQLMemory"]
