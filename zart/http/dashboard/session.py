"""The dashboard's sessions and CSRF tokens: signed values, no server-side state.

A browser cannot send the API's `Authorization: Bearer` header on a page load, so the dashboard
trades the token once, at its login form, for a session cookie: `HttpOnly` (scripts cannot read it),
`SameSite=Strict` (no other site's page or link sends it), `Path=/`. The cookie is
`ISSUED.NONCE.SIGNATURE`, an HMAC-SHA256 under a key derived from the token, so every process of
`zart serve --workers N`, and every replica behind a load balancer, accepts the others' sessions, and
changing the token ends them all. A session lasts SESSION_SECONDS.

Every action (a POST) must also carry the session's CSRF token, a second HMAC of the session cookie
under another derived key: a page of another origin can neither read it nor guess it. An `Origin`
header, when the browser sends one, must be the dashboard's own.

Without a token (`zart serve` with no ZART_API_TOKEN, meant for a trusted network) there is nothing
to log in with: each browser gets a session at its first page, signed with a key drawn at start-up,
so the CSRF check still holds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import attrs

COOKIE = "zart_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600


def _derive(root: bytes, purpose: str) -> bytes:
    return hmac.new(root, f"zart dashboard {purpose}".encode(), hashlib.sha256).digest()


@attrs.frozen
class Signer:
    """Issues and checks session cookies and their CSRF tokens under keys derived from one root."""

    session_key: bytes = attrs.field(repr=False)
    csrf_key: bytes = attrs.field(repr=False)

    @classmethod
    def for_token(cls, token: str | None, fallback: bytes) -> Signer:
        """Keys from the API token, or from `fallback` (random per start) when there is none."""
        root = token.encode() if token is not None else fallback
        return cls(_derive(root, "session"), _derive(root, "csrf"))

    def _mac(self, key: bytes, value: str) -> str:
        return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        """A new session cookie's value."""
        issued = int(time.time() if now is None else now)
        body = f"{issued}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac(self.session_key, body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        """The cookie was issued by this dashboard's key, less than SESSION_SECONDS ago."""
        if not cookie or len(cookie) > 200:
            return False
        body, _, signature = cookie.rpartition(".")
        issued, _, _nonce = body.partition(".")
        if not (issued.isascii() and issued.isdigit()):
            return False
        if not hmac.compare_digest(signature, self._mac(self.session_key, body)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return -60 <= age < SESSION_SECONDS

    def csrf(self, cookie: str) -> str:
        """The CSRF token of a session: in every form of its pages, required by every action."""
        return self._mac(self.csrf_key, cookie)

    def csrf_valid(self, cookie: str, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf(cookie).encode())


def token_matches(expected: str, presented: str) -> bool:
    """The login form's token, compared in time independent of where it differs."""
    return hmac.compare_digest(presented.encode(), expected.encode())
