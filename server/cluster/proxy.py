"""HTTP between nodes: a request about a room another node owns is forwarded to that node.

Downloads (image, latent, trajectory), uploads and deletion act on the live room, which only its
owner holds; any node may receive them (a load balancer picks), so the receiving node forwards the
request (method, path, query, body, the headers that matter) and returns the answer unchanged.
The forwarded request carries ``x-livedrag-forwarded``: a node never forwards it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

FORWARDED = "x-livedrag-forwarded"
PASS_REQUEST = ("content-type", "origin", "host", "x-livedrag-cap", "accept")
DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "content-encoding"}
_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=3.0), trust_env=False)
    return _client


async def forward(
    base: str, method: str, url: Any, headers: Mapping[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """Send the request to the node at ``base``; (status, headers, body) of its answer. A node
    that does not answer gives 503."""
    target = base.rstrip("/") + url.path + (f"?{url.query}" if url.query else "")
    sent = {k: v for k, v in headers.items() if k.lower() in PASS_REQUEST}
    sent[FORWARDED] = "1"
    try:
        r = await _http().request(method, target, headers=sent, content=body)
    except httpx.HTTPError as e:
        return (
            503,
            {"content-type": "application/json"},
            f'{{"error": "the room\'s node: {type(e).__name__}"}}'.encode(),
        )
    kept = {k: v for k, v in r.headers.items() if k.lower() not in DROP_RESPONSE}
    return r.status_code, kept, r.content
