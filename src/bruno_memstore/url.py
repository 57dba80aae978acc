"""Memory URLs: ``engine[+driver]://[user[:password]@]host[:port]/path?option=value``.

Parsing is shared; each backend reads its own options from :attr:`MemoryURL.query`.
Passwords never appear in ``str()``/``repr()`` of a URL or of a memory built from one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import InvalidArgumentError

__all__ = ["MemoryURL", "redact_url"]


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
        """Parse ``url``; raise ``InvalidArgumentError`` (with the URL redacted) if malformed."""
        if not isinstance(url, str) or "://" not in url:
            # Not echoed: without a scheme the password cannot be located reliably.
            raise InvalidArgumentError("url", "expected 'scheme://...'")
        parts = urlsplit(url)
        scheme, _, driver = parts.scheme.lower().partition("+")
        try:
            port = parts.port
        except ValueError:
            raise InvalidArgumentError("url", f"bad port in {redact_url(url)!r}") from None
        return cls(
            scheme=scheme,
            driver=driver or None,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
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

    def __str__(self) -> str:
        return redact_url(self.raw)

    def __repr__(self) -> str:
        # Query values may hold whole URLs with passwords (hybrid://?cache=...).
        return f"MemoryURL({str(self)!r})"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, also in URLs nested in query values."""
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
        if query and "://" in unquote(query):
            pairs = parse_qsl(query, keep_blank_values=True)
            query = "&".join(f"{k}={redact_url(v) if '://' in v else v}" for k, v in pairs)
        if parts.password is not None:
            user = quote(unquote(parts.username or ""), safe="")
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        if (netloc, query) == (parts.netloc, parts.query):
            return url  # untouched: geturl() would also normalise "sqlite:///x" to "sqlite:/x"
        rest = (
            parts.path
            + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else "")
        )
        return f"{parts.scheme}://{netloc}{rest}"
    except ValueError:
        return "<unparsable url>"
