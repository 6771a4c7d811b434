"""The network edge: the Starlette app, its HTTP routes and websocket connections, the fan-out to
every connection, and the uvicorn server that runs it.

``app.py`` builds the app (routes table, lifespan, security headers) from ``appstate.py`` (what
the app holds from start-up to shutdown), ``routes.py`` (HTTP handlers; ``uploads.py`` the
upload's checks) and ``websocket.py`` (one connection each); ``fanout.py`` sends to every
connection; ``serve.py`` runs it under uvicorn; ``config.py`` holds the settings. The top of the
server: it may import every other part.
"""
