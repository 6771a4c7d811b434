"""The cluster is a part of its own: one node never imports it (nor redis-py, psycopg, httpx),
and it imports only downward (the core, the storage), never the worker, the engine or the edge."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[3] / "server" / "cluster"
FORBIDDEN = ("server.edge", "server.worker", "server.engine", "server.cli", "torch", "starlette")

SINGLE_NODE = """
import json, sys
from server.edge.app import create_app
from server.edge.config import Settings
from server.cli import serve
create_app(Settings())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "psycopg", "httpx")
                        or m.startswith("server.cluster"))))
"""


def test_a_single_node_imports_neither_redis_nor_postgresql():
    """Building the app without --redis/--database loads no module of redis, psycopg, httpx or
    server.cluster (checked in a fresh interpreter)."""
    done = subprocess.run([sys.executable, "-c", SINGLE_NODE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_cluster_imports_only_downward():
    """No module of server/cluster imports the worker, the engine, the edge, the CLI, torch or Starlette."""
    for path in sorted(CLUSTER.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
