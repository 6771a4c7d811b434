"""The room core, sans-I/O: the wire protocol, room state and its operations, members and limits.

Nothing here imports Starlette, uvicorn or torch, awaits, or touches a socket or a file: the edge
feeds it bytes and sends what it returns, the worker takes its jobs and gives back frames, the
store saves its records. It imports nothing from the rest of the server.
"""
