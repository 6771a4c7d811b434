"""The network edge: the Starlette app, its HTTP routes and websocket connections, the fan-out to
every connection, and the uvicorn server that runs it."""
