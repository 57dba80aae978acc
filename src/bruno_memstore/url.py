"""Memory URLs: ``engine[+driver]://[user[:password]@]host[:port]/path?option=value``.

Parsing is shared; each backend names its query options and their types, and
:meth:`MemoryURL.apply_options` merges them under its keyword arguments.
Credentials never appear in ``str()``/``repr()`` of a URL or of a memory built from one.

The rule for the user part (docs/backends.md, "URLs and credentials"): after ``://``, an
unencoded ``@`` may appear exactly once, ending the user part, which then holds no ``/``,
``?`` or ``#`` (those end the host part first). Anything else could be read two ways (drivers
disagree on which ``@`` ends the user part), so :meth:`MemoryURL.parse` refuses it and asks
for the user name and password to be percent-encoded. A URL with no host
(``sqlite:///dir/a@b.db``) has no user part, so its path may hold ``@``. No memory URL has
a fragment: ``#`` is refused everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import InvalidArgumentError

__all__ = ["MemoryURL", "check_header_secret", "hide_secrets", "redact_url"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODE_HINT = (
    "percent-encode the user name and password, e.g. urllib.parse.quote(password, safe='') "
    "('@' %40, '/' %2F, '?' %3F, '#' %23, '%' %25); any other '@' is written %40"
)


@dataclass(frozen=True)
class MemoryURL:
    """A parsed memory URL."""

    scheme: str
    driver: str | None
    username: str | None
    password: str | None = field(repr=False)
    host: str | None
    port: int | None
    path: str
    query: dict[str, str]
    raw: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> MemoryURL:
        """Parse ``url``; raise ``InvalidArgumentError`` (with the URL redacted) if malformed
        or if its user part is ambiguous (see the module docstring)."""
        scheme_text, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
        if not sep or not _SCHEME.fullmatch(scheme_text):
            # Not echoed: without a scheme the password cannot be located reliably.
            raise InvalidArgumentError("url", "expected 'scheme://...'")
        problem = _ambiguity(rest)
        if problem is not None:
            raise InvalidArgumentError("url", f"{redact_url(url)!r} {problem}")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            # A bad port, a bad IPv6 address, characters that NFKC-normalise to '@', '/', ':'.
            # Not echoed: the text after '://' may be a password whose '@host' is missing.
            raise InvalidArgumentError(
                "url",
                f"the host or port of this {scheme_text}:// URL is unreadable; {_ENCODE_HINT}",
            ) from None
        scheme, _, driver = parts.scheme.lower().partition("+")
        return cls(
            scheme=scheme,
            driver=driver or None,
            username=_decode(parts.username, url) if parts.username else None,
            password=_decode(parts.password, url) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            raw=url,
        )

    def option(self, name: str, kind: type, default: object = None) -> object:
        """A typed query option; raises ``InvalidArgumentError`` naming ``name`` if unparsable."""
        if name not in self.query:
            return default
        value = self.query[name]
        try:
            if kind is bool:
                lowered = value.lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            return kind(value)
        except ValueError:
            raise InvalidArgumentError(
                f"url option {name}", f"expected {kind.__name__}, got {value!r}"
            ) from None

    def check_options(self, known: set[str]) -> None:
        """Refuse unknown query options, naming them."""
        unknown = sorted(set(self.query) - known)
        if unknown:
            raise InvalidArgumentError(
                "url", f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )

    def apply_options(
        self,
        given: Mapping[str, Any],
        kinds: Mapping[str, type],
        *,
        also: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The keyword options ``given`` over this URL's query options typed by ``kinds``
        (name -> type): a keyword wins over the same option in the URL.

        Query options named neither in ``kinds`` nor in ``also`` (options read elsewhere,
        such as a driver's) are refused, and so is a value ``kinds`` cannot read; see
        :meth:`check_options` and :meth:`option`.
        """
        self.check_options({*kinds, *also})
        read = {name: self.option(name, kind) for name, kind in kinds.items() if name in self.query}
        return {**read, **given}

    def key_options(
        self, given: Mapping[str, Any], kinds: Mapping[str, type], *, example: str
    ) -> dict[str, Any]:
        """:meth:`apply_options` for an engine whose API key is this URL's password (as in
        ``example``): a user name or an ``api_key`` query option (which logs would show) is
        refused, and the password becomes ``api_key`` unless ``given`` has one."""
        if self.username:
            raise InvalidArgumentError("url", f"give the API key as the password: {example}")
        if "api_key" in self.query:
            raise InvalidArgumentError(
                "url",
                "an API key in the query string would be logged; give it as the password "
                f"({example}) or as the api_key keyword",
            )
        merged = self.apply_options(given, kinds)
        if self.password is not None:
            check_header_secret("url password (the API key)", self.password)
            merged.setdefault("api_key", self.password)
        return merged

    def local_path(self, *, remote: str, missing: str) -> str:
        """The path of a URL that names no server (``engine:///relative`` or
        ``engine:////absolute``); refused with the message ``remote`` if the URL has a host,
        user, password or port, with ``missing`` if its path is empty."""
        if self.host or self.username or self.password is not None or self.port:
            raise InvalidArgumentError("url", remote)
        # urlsplit keeps the slash after the empty host: '/relative' or '//absolute'.
        path = self.path[1:] if self.path.startswith("/") else self.path
        if not path:
            raise InvalidArgumentError("url", missing)
        return path

    def redact(self, text: str) -> str:
        """``text`` (a driver's message) with this URL redacted and its password hidden in
        every spelling: decoded, as written in the URL, and percent-encoded."""
        text = text.replace(self.raw, str(self))
        if self.password:
            text = hide_secrets(text, self.password, urlsplit(self.raw).password)
        return text

    def __str__(self) -> str:
        return redact_url(self.raw)

    def __repr__(self) -> str:
        # Query values may hold whole URLs with passwords (hybrid://?cache=...).
        return f"MemoryURL({str(self)!r})"


def check_header_secret(argument: str, secret: str | None) -> str | None:
    """``secret`` (a token or API key), refused unless it can travel in an HTTP header:
    printable ASCII. The message does not quote it."""
    if secret is not None and (
        not isinstance(secret, str) or not secret.isascii() or not secret.isprintable()
    ):
        raise InvalidArgumentError(argument, "expected printable ASCII (it is sent in a header)")
    return secret


def hide_secrets(text: str, *secrets: str | None) -> str:
    """``text`` with each non-empty secret, as given and percent-encoded, replaced by ``***``."""
    spellings = {s for secret in secrets if secret for s in (secret, quote(secret, safe=""))}
    for secret in sorted(spellings, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """``url`` for display: its user part hidden, also in URLs nested in query values.

    ``user:password@`` shows as ``user:***@``; a user part without ``:`` (which may be a
    token) as ``***@``. When the user part cannot be located for sure (see the module
    docstring), everything from ``://`` to the last ``@`` is hidden. Text that is not a URL
    is shown from its last ``@`` on. A URL without credentials is returned unchanged.
    """
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return _redact_text(url)
    userinfo, tail = _split_userinfo(rest)
    return f"{scheme}://{userinfo}{_redact_query(tail)}"


def _ambiguity(rest: str) -> str | None:
    """Why the text after ``://`` cannot be read one way only, or ``None``."""
    if _CONTROL.search(rest):
        return "holds control characters (percent-encode them)"
    if "#" in rest:
        return f"has a '#' (a memory URL takes no fragment): {_ENCODE_HINT}"
    end = _userinfo_end(rest)
    if end is None:
        return f"is ambiguous (where its user part ends cannot be told): {_ENCODE_HINT}"
    if _BAD_ESCAPE.search(rest[: max(end, 0)]):
        return f"has a '%' that starts no escape in its user part: {_ENCODE_HINT}"
    return None


def _userinfo_end(rest: str) -> int | None:
    """Index of the '@' that ends the user part of the text after ``://``; -1 when there is
    no user part, ``None`` when where it ends cannot be known for sure."""
    authority_end = _end(rest, "/?#")
    at = rest.find("@")
    if at < 0:
        return -1
    if at < authority_end and rest.count("@") == 1:
        return at
    if authority_end == 0 and "@" not in rest[_end(rest, "?#") :]:
        return -1  # no host: the '@' are in a file path (sqlite:///dir/a@b.db)
    return None


def _decode(text: str, url: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            "url", f"{redact_url(url)!r} has escapes in its user part that are not UTF-8"
        ) from None


def _end(text: str, stops: str) -> int:
    """Index of the first of ``stops`` in ``text``, or its length."""
    return min((i for i in (text.find(c) for c in stops) if i >= 0), default=len(text))


def _split_userinfo(rest: str) -> tuple[str, str]:
    """``(redacted user part with its '@', or '', the rest)`` of the text after ``://``."""
    end = _userinfo_end(rest)
    if end is None:  # unsure: hide all that could be a user part
        return "***@", rest.rpartition("@")[2]
    if end < 0:
        return "", rest
    user, colon, _ = rest[:end].partition(":")
    return (f"{user}:***@" if colon else "***@"), rest[end + 1 :]


def _redact_query(tail: str) -> str:
    """``tail`` (path, query) with percent-encoded URLs in query values redacted."""
    path, sep, query = tail.partition("?")
    if not sep or "%" not in query:
        return tail
    return f"{path}?{'&'.join(_redact_piece(piece) for piece in query.split('&'))}"


def _redact_piece(piece: str) -> str:
    """One ``key=value`` of a query: shown decoded and redacted if an encoded '@' is in it."""
    decoded = _decode_until_at(piece)
    if decoded is None:
        return piece
    key, eq, value = decoded.partition("=")
    return f"{key}{eq}{redact_url(value)}" if "@" not in key else _redact_text(decoded)


def _decode_until_at(text: str) -> str | None:
    """``text`` percent-decoded as many times as it takes to show an '@', or ``None``."""
    for _ in range(8):
        decoded = unquote(text)
        if decoded == text:
            return None
        if "@" in decoded:
            return decoded
        text = decoded
    return None


def _redact_text(text: str) -> str:
    """Text that is not a URL: everything before its last '@' (raw or encoded) hidden."""
    if "@" not in text:
        text = _decode_until_at(text) or text
    if "@" not in text:
        return text
    return "***@" + text.rpartition("@")[2]
