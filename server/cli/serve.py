"""`livedrag serve`: the collaborative editor's web server (uvicorn + the livedrag app).

Settings come from ``LIVEDRAG_*`` environment variables, then from these flags (see
``server/edge/config.py``). The model is loaded once, on CUDA when present (else the CPU). On the CPU
the process tunes glibc malloc the way ``make serve`` does (unless the ``MALLOC_*`` variables are
set): PyTorch's allocation pattern otherwise fragments the heap and slows steps by up to 2x.
Logs say who joined (name, role, room), what ran (drags with steps, seconds and reason) and what
was refused; never capabilities (query strings are redacted from the access log).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger("server.serve")

# glibc mallopt parameters (malloc.h) and the values scripts/test.sh and the Makefile export
_MALLOPT = {
    "MALLOC_TRIM_THRESHOLD_": (-1, 68719476736),
    "MALLOC_TOP_PAD_": (-2, 1073741824),
    "MALLOC_MMAP_MAX_": (-4, 0),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the web server",
        description="Serve the collaborative drag editor: pages, the HTTP API and the websocket rooms.",
    )
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    p.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        help="generator .safetensors; repeat to offer several (the first is the rooms' default; "
        "default: the embedded model, which is always offered)",
    )
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="a model library folder (livedrag models add): rooms may choose any of its models",
    )
    p.add_argument(
        "--model-idle",
        type=_duration,
        default=None,
        help="unload a model no live room uses after this long (default 10m; 0: never)",
    )
    p.add_argument(
        "--model-memory-mb",
        type=float,
        default=None,
        help="cap on the loaded models' networks, MB (default 0: none); least recently used unload first",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--predictor", default=None, help="predictor file for predict mode (default: the shipped one)"
    )
    p.add_argument(
        "--encoder", default=None, help="encoder file for projecting uploads (default: the shipped one)"
    )
    p.add_argument(
        "--project-steps", type=int, default=None, help="optimisation steps of an upload's projection (100)"
    )
    p.add_argument(
        "--pti-steps",
        type=int,
        default=None,
        help="pivotal tuning steps of a room's generator copy after an upload's projection (default 0: off)",
    )
    p.add_argument(
        "--pti-max-rooms", type=int, default=None, help="rooms that may hold a tuned generator (default 4)"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="where rooms are stored (default ./data)")
    p.add_argument(
        "--origin",
        action="append",
        default=None,
        metavar="URL",
        help="also allow browser pages from this origin (repeatable; * allows any)",
    )
    p.add_argument(
        "--max-rooms",
        type=int,
        default=None,
        help="live rooms per server (default 100); at the cap the least recently used idle room is archived",
    )
    p.add_argument(
        "--max-rooms-per-client",
        type=int,
        default=None,
        help="live rooms one client address may have created (default 20; 0: no cap)",
    )
    p.add_argument(
        "--rooms-per-minute",
        type=float,
        default=None,
        help="room creations per client address and minute (default 30, bursts of twice that)",
    )
    p.add_argument(
        "--room-idle-archive",
        type=_duration,
        default=None,
        metavar="SECONDS",
        help="archive (unload) a room nobody has been in for this long: 300, 5m... (default 300 s); "
        "it reopens, history intact, when someone opens its link",
    )
    p.add_argument(
        "--room-unjoined-archive",
        type=_duration,
        default=None,
        metavar="SECONDS",
        help="the same for a room nobody has joined since it was created (default 60 s)",
    )
    p.add_argument(
        "--room-delete-after",
        type=_duration,
        default=None,
        metavar="SECONDS",
        help="delete a room unused this long, with its history: 2592000, 30d... (default 30d; 0: never)",
    )
    p.add_argument(
        "--room-delete-unjoined",
        type=_duration,
        default=None,
        metavar="SECONDS",
        help="delete a room nobody ever joined after this long (default 1d; 0: never)",
    )
    p.add_argument("--max-editors", type=int, default=None, help="editors per room (default 16)")
    p.add_argument("--max-viewers", type=int, default=None, help="spectators per room (default 256)")
    p.add_argument("--max-fps", type=float, default=None, help="tick rate cap per room (default 30)")
    p.add_argument(
        "--lost-ratio",
        type=float,
        default=None,
        help="a drag ends when point tracking loses a handle, match above this (default: the "
        "calibrated 1.0; 0: never, e.g. for a model with random weights)",
    )
    p.add_argument("--jpeg-quality", type=int, default=None, help="frame JPEG quality (default 85)")
    p.add_argument("--torch-threads", type=int, default=None, help="CPU threads for the model")
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"))
    p.add_argument("--no-access-log", action="store_true", help="no per-request log lines")
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="join a cluster: redis://host:port/db (with --database; docs/cluster.md)",
    )
    p.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help="the cluster's rooms: postgresql://user@host:port/db (with --redis; instead of SQLite)",
    )
    p.add_argument(
        "--node-id", default=None, help="this node's name in the cluster (default: host-pid-random)"
    )
    p.add_argument(
        "--advertise-url",
        default=None,
        metavar="URL",
        help="how the other nodes reach this one over HTTP (default http://HOST:PORT)",
    )
    p.set_defaults(func=run)


def _duration(raw: str) -> float:
    from server.edge.config import parse_duration

    try:
        return parse_duration(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def settings_from_args(args: argparse.Namespace):
    from server.edge.config import Settings

    return Settings.from_env(
        host=args.host,
        port=args.port,
        checkpoint=args.checkpoint[0] if args.checkpoint else None,
        extra_checkpoints=tuple(args.checkpoint[1:]) if args.checkpoint else None,
        models_dir=args.models,
        model_idle_s=args.model_idle,
        model_memory_mb=args.model_memory_mb,
        predictor=args.predictor,
        encoder=args.encoder,
        project_steps=args.project_steps,
        pti_steps=args.pti_steps,
        pti_max_rooms=args.pti_max_rooms,
        device=args.device,
        data_dir=args.data_dir,
        origins=tuple(args.origin) if args.origin else None,
        max_rooms=args.max_rooms,
        max_rooms_per_client=args.max_rooms_per_client,
        rooms_per_minute=args.rooms_per_minute,
        room_idle_archive_s=args.room_idle_archive,
        room_unjoined_archive_s=args.room_unjoined_archive,
        room_delete_after_s=args.room_delete_after,
        room_delete_unjoined_s=args.room_delete_unjoined,
        max_editors=args.max_editors,
        max_viewers=args.max_viewers,
        max_fps=args.max_fps,
        lost_ratio=args.lost_ratio,
        jpeg_quality=args.jpeg_quality,
        torch_threads=args.torch_threads,
        log_level=args.log_level or ("debug" if getattr(args, "verbose", False) else None),
        access_log=False if args.no_access_log else None,
        redis_url=getattr(args, "redis", None),
        database_url=getattr(args, "database", None),
        node_id=getattr(args, "node_id", None),
        advertise_url=getattr(args, "advertise_url", None),
    )


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_torch_threads(cores: int) -> int:
    """One core is left to the event loop (fan-out, JPEG bytes to every client). On small or shared
    machines more intra-op threads than free cores make each step wait for descheduled threads:
    on 2 loaded cores, 2 threads made a 64 px step 20-40x slower than 1 (docs/bench_server.md)."""
    return max(1, cores - 1)


def tune_malloc() -> bool:
    """Apply the Makefile's MALLOC_* settings through mallopt (glibc only). True if applied."""
    if any(k in os.environ for k in _MALLOPT):
        return False  # the environment decided already
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = True
    for param, value in _MALLOPT.values():
        ok &= bool(mallopt(param, min(value, 2**31 - 1)))
    return ok


def run(args: argparse.Namespace) -> int:
    import torch

    from server.edge.app import create_app
    from server.edge.appstate import pick_device
    from server.edge.serve import Server, uvicorn_config

    settings = settings_from_args(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    device = pick_device(settings.device)
    if device.type == "cpu":
        threads = settings.torch_threads or default_torch_threads(cpu_count())
        torch.set_num_threads(threads)
        tuned = tune_malloc()
        log.info("CPU: %d torch thread(s)%s", threads, ", malloc tuned" if tuned else "")
        if threads > 1 and "OMP_WAIT_POLICY" not in os.environ:
            log.warning(
                "%d torch threads: export OMP_WAIT_POLICY=PASSIVE before starting, or steps may "
                "slow down many times over when the machine is busy (docs/bench_server.md)",
                threads,
            )
    elif settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    where = "a cluster on Redis and PostgreSQL" if settings.cluster else settings.data_dir
    log.info("serving on http://%s:%d (rooms in %s)", settings.host, settings.port, where)
    server = Server(config)
    server.run()
    return 0 if server.started else 1
