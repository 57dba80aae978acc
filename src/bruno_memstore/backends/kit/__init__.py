"""Machinery shared by backends whose engines lack a native feature."""
