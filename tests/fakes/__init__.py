"""Fake servers that speak real engines' protocols, for engines that cannot run here."""
