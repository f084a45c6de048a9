"""The explorer's guards, in front of every route and asset: read-only methods, access, strict headers.

- Only GET and HEAD: anything else is 405 before it reaches a route (nothing can write).
- Access: a bearer token (``Authorization: Bearer T``; a browser passes ``?token=T`` once and
  gets an HttpOnly, SameSite=Strict cookie) or HTTP basic auth, when configured. ``cli`` refuses
  to serve a non-loopback address without one.
- Every response carries a strict Content-Security-Policy (scripts, styles, images and requests
  from this origin only; no inline script or style), no-sniff, no framing, no referrer, no caching.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD"})
TOKEN_COOKIE = "secureml_audit_ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """Who may read: a token, basic-auth credentials, both, or (loopback only) anyone."""

    token: str | None = None
    basic_user: str | None = None
    basic_password: str | None = None

    @property
    def required(self) -> bool:
        """True when a request must present a credential."""
        return bool(self.token) or self.basic_user is not None

    def allows(self, request: Request) -> bool:
        """True when the request carries a valid credential (or none is required)."""
        if not self.required:
            return True
        authorization = request.headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        if self.token:
            if scheme.lower() == "bearer" and _same(value.strip(), self.token):
                return True
            if _same(request.cookies.get(TOKEN_COOKIE, ""), self.token):
                return True
        if self.basic_user is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return _same(user, self.basic_user) & _same(password, self.basic_password or "")
        return False


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison (no timing hint about how much of a secret matched)."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """ASGI middleware: 405 for methods that could write, 401 without a credential, headers on every response."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        request = Request(scope)
        response = self._refusal(request)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        if request.method not in READ_METHODS:
            return PlainTextResponse("405 Method Not Allowed: the audit explorer is read-only (GET and HEAD only)\n",
                                     status_code=405, headers={"Allow": "GET, HEAD"})
        token = request.query_params.get("token")
        if self.access.token and token is not None:
            if not _same(token, self.access.token):
                return _unauthorized(self.access)
            # Trade the token in the URL for a cookie, and drop it from the address bar and history.
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        if not self.access.allows(request):
            return _unauthorized(self.access)
        return None


def _unauthorized(access: Access) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="secureml-audit", charset="UTF-8"'} if access.basic_user else {}
    how = []
    if access.token:
        how.append("open the address with ?token=TOKEN once, or send 'Authorization: Bearer TOKEN'")
    if access.basic_user is not None:
        how.append("sign in with the user name and password from the server's basic-auth file")
    return PlainTextResponse(f"401 Unauthorized: {'; or '.join(how)}\n", status_code=401, headers=headers)
