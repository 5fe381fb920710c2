"""The bot's Twitch tokens: one small file in the state directory, readable by us alone.

Twitch's device-code login gives an access token (hours) and a refresh
token; for a public client each refresh token works once, so the new pair
must be on disk before the old one is forgotten. Every save writes a new
file (mode 0600 from the start, never world-readable for an instant) and
renames it over the old one, so a power cut leaves one whole pair.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.durable import write_atomic
from appliance.errors import EX_CONFIG, ApplianceError
from appliance.logs import secret

TOKEN_FILE = "twitch-tokens.json"


class TokenError(ApplianceError):
    """No usable tokens: the bot has to be signed in with `teletype twitch-login`."""

    exit_code = EX_CONFIG


@dataclass(frozen=True)
class TwitchTokens:
    user_id: str
    login: str
    token: str
    refresh: str
    client_id: str  # tokens belong to one application; another's are refused

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"TwitchTokens(user_id={self.user_id!r}, login={self.login!r}, token=<hidden>)"


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def load_tokens(path: Path) -> TwitchTokens:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenError(
            f"the bot is not signed in to Twitch ({path} is missing): run `teletype twitch-login`"
        ) from None
    except (OSError, ValueError) as e:
        raise TokenError(
            f"cannot read the Twitch tokens in {path} ({e}): run `teletype twitch-login` again"
        ) from e
    try:
        return TwitchTokens(**{k: str(data[k]) for k in TwitchTokens.__dataclass_fields__})
    except (KeyError, TypeError) as e:
        raise TokenError(
            f"the Twitch tokens in {path} are incomplete (no {e}): run `teletype twitch-login`"
        ) from e


def save_tokens(path: Path, tokens: TwitchTokens) -> None:
    owner = None
    if os.geteuid() == 0:
        # `sudo teletype twitch-login` (root, not the service user): the file
        # must belong to whoever owns the state directory, or the service
        # could not read it.
        directory = path.parent
        directory.mkdir(parents=True, exist_ok=True)
        owner = (directory.stat().st_uid, directory.stat().st_gid)
    # Atomic and durable, as the history: a refresh token works once, so
    # losing the new pair to a power cut means signing in again.
    write_atomic(path, json.dumps(asdict(tokens)).encode("utf-8"), 0o600, owner)


class TokenKeeper:
    """The bot's tokens on disk, saved at every change (refresh tokens work once)."""

    def __init__(self, path: Path, client_id: str):
        self.path = path
        self.client_id = client_id
        self.current: TwitchTokens | None = None

    def load(self) -> TwitchTokens:
        tokens = load_tokens(self.path)
        if tokens.client_id != self.client_id:
            raise TokenError(
                f"the tokens in {self.path} belong to another Twitch application than "
                "chat.client_id: run `teletype twitch-login` again"
            )
        self.current = tokens
        secret(tokens.token)
        secret(tokens.refresh)
        return tokens

    def forget(self) -> None:
        """Tokens Twitch refuses for good: gone, so that the next start signs in afresh."""
        self.path.unlink(missing_ok=True)
        self.current = None

    def store(self, user_id: str, login: str, token: str, refresh: str) -> None:
        secret(token)
        secret(refresh)
        self.current = TwitchTokens(user_id, login, token, refresh, self.client_id)
        save_tokens(self.path, self.current)
