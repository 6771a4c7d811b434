"""The models of the whole cluster (sans-I/O): what ``GET /api/models`` and ``/api/info`` list on
any node, and which node to ask for a model this node does not serve.

Every node announces the cards of the models it serves (``NodeInfo.cards``: what its own
``GET /api/models`` would list) and which of them are loaded. A node lists its own cards first,
then the models only other live nodes serve (in node order). A model several nodes serve is
listed once: the card of a node that has it loaded (this node's first), else this node's (else the
first node's); ``loaded`` says whether some node has it loaded, ``default`` whether it is this
node's default (what a room created here without a model gets). A model that some node has loaded
carries no load ``error`` of another node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.cluster.placement import NodeInfo


def node_cards(node: NodeInfo) -> list[dict[str, Any]]:
    """The cards a node announced; for a model it names without a card (a node of an older
    version), a minimal card from its name and resolution."""
    cards = [c for c in node.cards if isinstance(c, dict) and isinstance(c.get("name"), str)]
    named = {c["name"] for c in cards}
    for name in node.models:
        if name not in named:
            cards.append(
                {
                    "name": name,
                    "resolution": int(node.resolutions.get(name, 0)),
                    "licence": "unknown",
                    "source": "",
                    "modes": ["optimize"],
                    "projection": ["optimize"],
                }
            )
    return cards


def merge_models(
    local: list[dict[str, Any]], nodes: Iterable[NodeInfo], default: str, me: str
) -> list[dict[str, Any]]:
    """This node's cards (``local``, with their ``loaded``) merged with the other live nodes'
    (see the module docstring). ``nodes`` may include this node's own announcement: it is skipped."""
    found: dict[str, list[dict[str, Any]]] = {}  # name -> its cards, this node's first
    for card in local:
        found.setdefault(card["name"], []).append(card)
    for node in sorted(nodes, key=lambda n: n.id):
        if node.id == me:
            continue
        for card in node_cards(node):
            found.setdefault(card["name"], []).append({**card, "loaded": card["name"] in node.loaded})
    out = []
    for name, cards in found.items():
        loaded = [c for c in cards if c.get("loaded")]
        card = dict(loaded[0] if loaded else cards[0])
        card["loaded"] = bool(loaded)
        card["default"] = name == default
        if loaded:
            card.pop("error", None)
        out.append(card)
    return out


def node_for_model(nodes: Iterable[NodeInfo], model: str, me: str) -> NodeInfo | None:
    """Another live node that serves ``model`` and can be reached over HTTP: one that has it
    loaded first, then by name (None: no other node serves it)."""
    able = [n for n in nodes if n.id != me and n.url and model in n.models]
    return min(able, key=lambda n: (model not in n.loaded, n.id)) if able else None
