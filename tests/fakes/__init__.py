"""Fake servers that speak an engine's real wire protocol, for tests without the engine."""
