"""Storage: the SQLite store (rooms, history, latent and upload blobs) and the room manager, which
holds every room of the server and saves each to the store after every commit.

Imports the core and the standard library only (no Starlette, no torch).
"""
