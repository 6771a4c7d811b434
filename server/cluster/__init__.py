"""The cluster: several ``livedrag serve`` nodes on Redis and PostgreSQL (issue 19).

Imported only when ``--redis`` and ``--database`` are given; one node never imports this package
(nor redis-py or psycopg). Imports the core and the storage (downward) and talks to the worker and
the edge only through the small interfaces they hand it (a dispatcher, the room manager, senders).

``pgstore.py`` (with ``pgschema.py``) is the room store on PostgreSQL, fenced per room.
"""
