"""The stream overlay: a read-only page of the paper for OBS, with its own token.

The page (/overlay, no data of its own) draws the paper from GET /v1/paper and
the paper events of /v1/events, as the panel does. Those two reads are all its
token opens: it is not the API token nor the panel's password, it changes
nothing, and a leak of it (it sits in OBS's scene files, and a stream may show
it) shows only what the stream shows anyway.

The token is `engine.overlay_token`, or, when that is empty, one made at the
first start and kept in the state directory (overlay-token). The panel shows
the overlay's address with it to whoever is signed in.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from aiohttp import web

from appliance.durable import write_atomic
from appliance.engine.guesses import same_secret

TOKEN_FILE = "overlay-token"
QUERY = "token"  # OBS's browser source takes an address: the token rides in it
READS = frozenset({"/v1/paper", "/v1/events"})


def overlay_token(configured: str, state_dir: Path) -> str:
    """The configured token, else the one kept in the state directory (made if missing)."""
    if configured:
        return configured
    path = state_dir / TOKEN_FILE
    with contextlib.suppress(OSError, UnicodeDecodeError):
        kept = path.read_text(encoding="ascii").strip()
        if len(kept) >= 16:
            return kept
    token = secrets.token_urlsafe(18)
    with contextlib.suppress(OSError):  # a card that refuses: this run's token still works
        write_atomic(path, (token + "\n").encode(), 0o600)
    return token


def is_overlay_read(request: web.Request, token: str) -> bool:
    """A read of the paper carrying the overlay's token: the only thing that token opens."""
    if not token or request.method != "GET" or request.path not in READS:
        return False
    return same_secret(request.query.get(QUERY, ""), token)


def overlay_address(token: str) -> str:
    return f"/overlay?{QUERY}={token}"
