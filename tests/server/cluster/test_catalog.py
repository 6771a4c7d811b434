"""The cluster's model list (sans-I/O): the union of the live nodes' cards, ``loaded`` meaning
loaded on some node, and which node to ask for a model this node does not serve."""

from __future__ import annotations

from server.cluster.catalog import merge_models, node_for_model
from server.cluster.placement import NodeInfo


def card(name: str, loaded: bool = False, **extra: object) -> dict:
    return {"name": name, "resolution": 32, "default": False, "modes": ["optimize"], "loaded": loaded} | extra


def test_the_union_of_the_nodes_models_with_loaded_on_some_node():
    """This node's cards first, then models only others serve (node order); a model loaded on
    another node is listed with that node's card, loaded, without this node's load error; only
    this node's default is the default; this node's own announcement is skipped."""
    local = [card("base", True, default=True), card("wide", error="could not be loaded")]
    nodes = [
        NodeInfo(
            "B",
            models=("base", "wide", "only-b"),
            loaded=("wide",),
            cards=(
                card("base", default=True),
                card("wide", modes=["optimize", "predict"]),
                card("only-b"),
            ),
        ),
        NodeInfo("A", models=("base", "stale"), cards=(card("stale"),)),  # this node's own, a second old
        NodeInfo("C", models=("base", "legacy"), resolutions={"base": 32, "legacy": 64}),  # no cards
    ]
    merged = merge_models(local, nodes, "base", "A")
    assert [m["name"] for m in merged] == ["base", "wide", "only-b", "legacy"]
    by = {m["name"]: m for m in merged}
    assert by["base"]["loaded"] and by["base"]["default"]
    assert by["wide"] == {**card("wide", True, modes=["optimize", "predict"])}
    assert by["only-b"]["loaded"] is False and by["only-b"]["default"] is False
    assert by["legacy"]["resolution"] == 64 and by["legacy"]["loaded"] is False
    assert [m["name"] for m in merged if m["default"]] == ["base"]
    assert local[1]["error"]  # the local cards are not changed


def test_a_model_is_asked_of_a_node_that_has_it_loaded_first():
    nodes = [
        NodeInfo("A", url="http://a", models=("m",), loaded=("m",)),
        NodeInfo("B", url="http://b", models=("m",)),
        NodeInfo("C", url="http://c", models=("m",), loaded=("m",)),
        NodeInfo("D", url="", models=("m", "n"), loaded=("m", "n")),  # no address: not asked
    ]
    assert node_for_model(nodes, "m", "A").id == "C"
    assert node_for_model(nodes, "m", "C").id == "A"
    assert node_for_model(nodes, "n", "A") is None
    assert node_for_model(nodes, "x", "A") is None


def test_an_announcement_round_trips_its_cards_and_ignores_unknown_fields():
    info = NodeInfo("A", models=("m",), cards=(card("m"),))
    assert NodeInfo.from_json(info.to_json()) == info
    newer = info.to_json()[:-1] + ',"from_a_newer_node":1}'
    assert NodeInfo.from_json(newer) == info
