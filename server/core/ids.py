"""Room ids and capability tokens: unguessable, stored only as sha256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

ROOM_ID_BYTES = 9  # 12 url-safe characters: not secret (it is in URLs and logs), only unique
TOKEN_BYTES = 24  # 32 url-safe characters, 192 bits: the capability itself


def new_room_id() -> str:
    return secrets.token_urlsafe(ROOM_ID_BYTES)


def new_token() -> str:
    """A fresh edit or view capability."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What the server keeps of a capability: sha256 hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Whether a presented capability hashes to a stored hash (constant-time comparison)."""
    return hmac.compare_digest(hash_token(token), token_hash)


def latent_key(data: bytes) -> str:
    """Content key of a serialised latent: sha256 hex (what state.image.latent holds)."""
    return hashlib.sha256(data).hexdigest()
