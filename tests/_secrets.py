"""Passwords that break naive URL handling, and the check that none of them ever shows."""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["NASTY", "PLAIN", "pieces", "shows_nothing_of"]

# Distinct letter groups, so that any piece of a password showing up is noticed.
# Unencoded in a URL, each of these makes its user part ambiguous: the URL is refused.
NASTY = [
    "Pw1x/Qz2y",
    "Pw1x#Qz2y",
    "Pw1x?Qz2y",
    "Pw1x@Qz2y",
    "Pw1x:Qz2y@Rk3w",
    "Pw1x%zzQz2y",
    "Pw1x%Qz2y",
    "Pw1xä/Qz2y\uff20Rk3w",  # \uff20: a fullwidth @, refused by urlsplit in a host part
    "Pw1x\uff20Qz2y",
    "4729/Qz2y",  # 'u:4729' before the '/' reads as host u, port 4729
    "Pw1x/Qz2y@Rk3w#",
]
# Characters a user part may hold unencoded: these work as they are.
PLAIN = ["Pw1x&Qz2y=Rk3w", "Pw1x:Qz2y", "Pw1xäQz2y", "Pw1x$Qz2y!Rk3w"]


def pieces(password: str) -> list[str]:
    """The password, its encoded form and each run of 3+ letters or digits in it."""
    return [password, quote(password, safe=""), *re.findall(r"[^\W_]{3,}", password)]


def shows_nothing_of(password: str, *texts: str) -> None:
    """Fail if any piece of ``password`` is in any of ``texts``."""
    for text in texts:
        for piece in pieces(password):
            assert piece not in text, f"{piece!r} shows in {text!r}"
