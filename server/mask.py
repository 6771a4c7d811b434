"""Compatibility name for :mod:`server.core.mask`, kept only for web/tests/protocol.test.mjs, which
runs ``from server.mask import MaskGrid`` to compare the client's mask painting with the server's.
Remove it once that test imports ``server.core.mask``."""

from server.core.mask import MaskGrid

__all__ = ["MaskGrid"]
