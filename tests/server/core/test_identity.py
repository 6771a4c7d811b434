"""Identities: an editor's browser secret gets its member id, name and colour back; a second tab of
the same browser is a member of its own; viewers' secrets are ignored; new people avoid the colours
of remembered ones."""

from __future__ import annotations

from server.core.members import PALETTE, pick_colour
from tests.server.conftest import Harness, only

SECRET_A = "ada-browser-secret-0123456789"
SECRET_B = "grace-browser-secret-987654321"
ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}


def test_secret_gets_member_id_name_and_colour_back(h: Harness):
    """A browser that leaves and comes back with its secret (a new page: another client_id, and no
    name in its hello) is the same member, with the same colour, and owns its pairs."""
    a1 = h.join(name="Ada", client_id="page-one-0001", secret=SECRET_A)
    h.send(a1.member_id, ADD)
    colour = h.room.members[a1.member_id].colour
    h.join(name="Grace", secret=SECRET_B)
    h.leave(a1.member_id)
    a2 = h.join(name="", client_id="page-two-0002", secret=SECRET_A)
    welcome = only(a2.messages, "welcome").msg
    assert (a2.member_id, welcome["name"], welcome["colour"]) == (a1.member_id, "Ada", colour)
    assert h.room.pairs["p1"].owner == a2.member_id


def test_hello_name_wins_over_the_remembered_one(h: Harness):
    """The name in the hello (the browser's current one) replaces the remembered name."""
    a = h.join(name="Ada", secret=SECRET_A)
    h.leave(a.member_id)
    again = h.join(name="Ada L.", secret=SECRET_A)
    assert again.member_id == a.member_id and h.room.members[a.member_id].name == "Ada L."
    assert [m.name for m in h.room.remembered.values()] == ["Ada L."]


def test_rename_is_remembered(h: Harness):
    """set_name updates the remembered name: a nameless rejoin gets the new one."""
    a = h.join(name="Ada", secret=SECRET_A)
    h.send(a.member_id, {"t": "set_name", "name": "Countess"})
    h.leave(a.member_id)
    again = h.join(name="", secret=SECRET_A)
    assert only(again.messages, "welcome").msg["name"] == "Countess"


def test_second_tab_of_the_same_browser_is_a_member_of_its_own(h: Harness):
    """While the member is connected from one page, another page with the same secret (another
    client_id) does not take its identity over: no replaced connection, a new member id."""
    a = h.join(name="Ada", client_id="tab-one-00001", secret=SECRET_A)
    b = h.join(name="Ada", client_id="tab-two-00002", secret=SECRET_A)
    assert b.member_id != a.member_id and b.replaced_session is None
    assert set(h.room.members) == {a.member_id, b.member_id}
    # the same page reconnecting (same client_id) is still a replacement
    a2 = h.join(name="Ada", client_id="tab-one-00001", secret=SECRET_A)
    assert a2.member_id == a.member_id and a2.replaced_session == a.session


def test_viewer_secret_is_ignored(h: Harness):
    """Viewers are not remembered: their secret neither creates nor takes an identity."""
    v = h.join(role="viewer", name="Watcher", secret=SECRET_A)
    assert h.room.remembered == {} and h.room.members[v.member_id].secret_hash is None
    a = h.join(name="Ada", secret=SECRET_A)
    assert a.member_id != v.member_id


def test_secret_is_kept_only_as_a_room_salted_hash(h: Harness):
    """The room keeps sha256 of "<room>:<secret>", never the secret."""
    a = h.join(name="Ada", secret=SECRET_A)
    (rec,) = h.room.remembered.values()
    assert rec.id == a.member_id and SECRET_A not in rec.secret_hash and len(rec.secret_hash) == 64
    assert SECRET_A not in repr(h.room.to_record())


def test_new_members_avoid_remembered_colours(h: Harness):
    """Someone new does not take the colour of a remembered editor who is away, while colours are free."""
    a = h.join(name="Ada", secret=SECRET_A)
    ada_colour = h.room.members[a.member_id].colour
    h.leave(a.member_id)
    g = h.join(name="Grace")
    assert h.room.members[g.member_id].colour != ada_colour
    back = h.join(name="Ada", secret=SECRET_A)
    assert h.room.members[back.member_id].colour == ada_colour


def test_pick_colour_prefers_unreserved_then_free_then_cycles():
    """Reserved colours are used only when every other colour is taken."""
    assert pick_colour(set(), 1, {PALETTE[0]}) == PALETTE[1]
    assert pick_colour(set(PALETTE[1:]), 1, {PALETTE[0]}) == PALETTE[0]
    assert pick_colour(set(PALETTE), 13) == PALETTE[1]


def test_remembered_identities_are_capped():
    """At most limits.remembered_clients identities are kept; the least recently seen go first."""
    from server.core.limits import RoomLimits

    h = Harness(RoomLimits(remembered_clients=2))
    ids = []
    for i in range(3):
        j = h.join(name=f"P{i}", secret=f"secret-number-{i}-abcdefghijklmn")
        ids.append(j.member_id)
        h.leave(j.member_id)
    assert [r.id for r in h.room.remembered.values()] == ids[1:]
    again = h.join(name="", secret="secret-number-0-abcdefghijklmn")
    assert again.member_id not in ids  # forgotten: a new member
