"""Read NVIDIA StyleGAN2 network pickles (stylegan2-ada-pytorch, stylegan3 repo) without running them.

NVIDIA's pickles store every network as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` holds the full source
of the network module (``module_src``), the class name and the module's ``__dict__`` (``state``).
NVIDIA's own loader ``exec``s ``module_src``; this one never does. ``SafeUnpickler`` resolves only
the handful of globals such a pickle needs and refuses every other one (``os.system``,
``builtins.eval``, ...) before anything is called:

  * the persistence reconstructor -> ``NetworkObject(class_name, state)`` (``module_src`` dropped);
  * ``dnnlib.util.EasyDict`` -> ``dict``; ``collections.OrderedDict``; ``builtins.set``/``frozenset``;
  * tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``, and
    ``torch.storage._load_from_bytes`` (how ``pickle.dump`` writes a storage) ->
    ``torch.load(..., weights_only=True, map_location="cpu")``;
  * numpy scalars, dtypes and arrays (``numpy.core`` or ``numpy._core``);
  * ``_codecs.encode`` for latin-1 only (protocol 2 writes bytes that way).

The ``G_ema`` network's parameters and buffers, walked recursively with dotted names, equal
``G_ema.state_dict()``; its ``_init_kwargs`` (two layouts, see ``nvidia_config``) give the
``GeneratorConfig``.
"""

from __future__ import annotations

import collections
import importlib
import io
import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError, weights_only_refusal
from .generator import GeneratorConfig


@dataclass
class NetworkObject:
    """A persistent NVIDIA network as data: its class name and its ``__dict__``, never its code."""

    class_name: str
    state: dict

    def child(self, name: str) -> NetworkObject | None:
        child = (self.state.get("_modules") or {}).get(name)
        return child if isinstance(child, NetworkObject) else None


# ----------------------------------------------------------------------------------------------
# Safe unpickling


def _reconstruct_persistent_obj(meta: Any) -> NetworkObject:
    """Stand-in for NVIDIA's reconstructor: keeps class_name and state, drops module_src unread."""
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str):
        raise CheckpointError("malformed persistent object in pickle (no class_name)")
    if meta.get("type", "class") != "class":
        raise CheckpointError(f"unsupported persistent object type {meta.get('type')!r} (expected 'class')")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"persistent object {meta['class_name']!r} has no state dict")
    return NetworkObject(meta["class_name"], dict(state))


def _load_storage_bytes(b: bytes):
    """``torch.storage._load_from_bytes`` without its arbitrary-code path."""
    if not isinstance(b, (bytes, bytearray)):
        raise CheckpointError("malformed tensor storage in pickle")
    try:
        return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")
    except Exception as e:  # weights_only refusals, corrupt data
        raise CheckpointError(
            f"refused or unreadable tensor storage in pickle: {weights_only_refusal(e)}"
        ) from e


def _latin1_encode(s: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and nothing else."""
    if not isinstance(s, str) or encoding != "latin1":
        raise CheckpointError(f"refused _codecs.encode with encoding {encoding!r}")
    return s.encode("latin1")


def _numpy_attr(name: str):
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy multiarray.{name} not found")


_np_scalar = _numpy_attr("scalar")
_np_reconstruct = _numpy_attr("_reconstruct")


def _ndarray_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise CheckpointError(f"refused numpy array subtype {subtype!r}")
    return _np_reconstruct(subtype, shape, dtype)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,  # protocol 2 spells builtins this way
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "scalar")] = _np_scalar
    _ALLOWED[(_mod, "_reconstruct")] = _ndarray_reconstruct


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED`` and refuses every other one."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = (
                " (this is a TensorFlow StyleGAN pickle: convert it to a PyTorch pickle with NVIDIA's "
                "legacy.py first)"
            )
        raise CheckpointError(
            f"refused global {module}.{name}: not part of an NVIDIA StyleGAN2 network pickle "
            f"(refused before it was called){hint}"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("refused persistent id in pickle: this is not a plain NVIDIA network pickle")


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with ``SafeUnpickler``; every failure becomes a CheckpointError."""
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except Exception as e:  # untrusted input: any failure is a bad file, never a crash
        raise CheckpointError(
            f"not a readable pickle (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e


# ----------------------------------------------------------------------------------------------
# Walking the network objects


def find_g_ema(obj: Any) -> NetworkObject:
    """The generator of a snapshot dict (``G_ema``), a dict holding only ``G_ema``, or a bare G_ema."""
    if isinstance(obj, dict):
        if "G_ema" not in obj:
            keys = sorted(str(k) for k in obj)
            raise CheckpointError(f"no 'G_ema' in this pickle (top-level keys: {keys})")
        obj = obj["G_ema"]
        if not isinstance(obj, NetworkObject):
            raise CheckpointError(f"'G_ema' is a {type(obj).__name__}, not an NVIDIA network object")
    if not isinstance(obj, NetworkObject):
        raise CheckpointError(f"pickle holds a {type(obj).__name__}, not an NVIDIA snapshot dict or network")
    return obj


def network_state_dict(net: NetworkObject) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of ``net`` and its submodules, with dotted names."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(node: NetworkObject, prefix: str) -> None:
        if id(node) in seen:
            raise CheckpointError(f"network object {prefix or node.class_name!r} appears twice (cycle)")
        seen.add(id(node))
        state = node.state
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            items = state.get(group) or {}
            if not isinstance(items, dict):
                raise CheckpointError(f"{prefix}{group} is not a dict")
            for name, t in items.items():
                if t is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise CheckpointError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
                out[prefix + name] = t.detach()
        modules = state.get("_modules") or {}
        if not isinstance(modules, dict):
            raise CheckpointError(f"{prefix}_modules is not a dict")
        for name, child in modules.items():
            if child is None:
                continue
            if not isinstance(child, NetworkObject):
                raise CheckpointError(
                    f"submodule {prefix}{name} is a {type(child).__name__}, not a network object"
                )
            walk(child, f"{prefix}{name}.")

    walk(net, "")
    return out


# ----------------------------------------------------------------------------------------------
# Init kwargs -> GeneratorConfig

_TOP_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
# Synthesis kwargs of networks_stylegan2 (value = the only supported value, or None = any value).
_SYNTHESIS_KEYS = {
    "channel_base": None,
    "channel_max": None,
    "num_fp16_res": None,
    "conv_clamp": None,
    "architecture": None,
    "resample_filter": [1, 3, 3, 1],
    "use_noise": True,
    "activation": "lrelu",
    "kernel_size": 3,
    "fused_modconv_default": None,
    "fp16_channels_last": None,
}
_MAPPING_KEYS = {
    "num_layers": None,
    "embed_features": None,
    "layer_features": None,
    "activation": "lrelu",
    "lr_multiplier": None,
    "w_avg_beta": None,
}
# Generator kwargs that exist only in networks_stylegan3 (StyleGAN3-T / -R).
_STYLEGAN3_KEYS = {
    "num_critical",
    "first_cutoff",
    "first_stopband",
    "last_stopband_rel",
    "margin_size",
    "output_scale",
    "conv_kernel",
    "filter_size",
    "lrelu_upsampling",
    "use_radial_filters",
    "magnitude_ema_beta",
    "num_layers",
}
NVIDIA_PICKLE = "nvidia-stylegan2-pickle"
_ONLY_SG2 = "only StyleGAN2 generators are supported"


def plain(x: Any) -> Any:
    """numpy scalars -> Python numbers, tuples -> lists, dict keys -> str (JSON-ready kwargs)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def check_stylegan2(g: NetworkObject) -> None:
    """Refuse anything but a networks_stylegan2 Generator, naming what it is instead."""
    if g.class_name != "Generator":
        raise CheckpointError(f"G_ema is a {g.class_name!r}, not a StyleGAN2 'Generator'; {_ONLY_SG2}")
    synthesis = g.child("synthesis")
    if synthesis is None:
        raise CheckpointError("G_ema has no 'synthesis' network; not a StyleGAN2 generator")
    children = {
        name: c.class_name
        for name, c in (synthesis.state.get("_modules") or {}).items()
        if isinstance(c, NetworkObject)
    }
    if "SynthesisInput" in children.values() or any(n.startswith("L") and "_" in n for n in children):
        raise CheckpointError(
            f"this is a StyleGAN3 generator (synthesis has 'input' and L* layers); {_ONLY_SG2}"
        )
    kwargs = g.state.get("_init_kwargs") or {}
    sg3 = sorted(_STYLEGAN3_KEYS & set(kwargs))
    if sg3:
        raise CheckpointError(f"generator kwargs {sg3} belong to StyleGAN3; {_ONLY_SG2}")


def _positional(args: Any) -> dict:
    names = _TOP_KEYS + ("mapping_kwargs", "synthesis_kwargs")
    args = tuple(args or ())
    if len(args) > len(names):
        raise CheckpointError(
            f"G_ema was built with {len(args)} positional arguments; expected at most {len(names)}"
        )
    return dict(zip(names[: len(args)], args, strict=True))


def _check_values(kind: str, given: dict, table: dict) -> None:
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise CheckpointError(f"unsupported {kind} kwargs {unknown} (supported: {sorted(table)})")
    for k, only in table.items():
        if only is not None and k in given and plain(given[k]) != only:
            raise CheckpointError(
                f"unsupported {kind} kwarg {k}={plain(given[k])!r}: only {only!r} is supported"
            )


def nvidia_config(g: NetworkObject, name: str = "") -> tuple[GeneratorConfig, dict, str]:
    """GeneratorConfig from G_ema's init kwargs; also the original kwargs (JSON-ready) and the layout.

    Layouts: stylegan2-ada-pytorch nests the synthesis kwargs under ``synthesis_kwargs``
    (``"nested"``); the stylegan3 repository, which wrote NVIDIA's current ``stylegan2-*.pkl`` files,
    passes them flat at the top level (``"flat"``). Both keep ``mapping_kwargs``.
    """
    kwargs = dict(_positional(g.state.get("_init_args")))
    raw = g.state.get("_init_kwargs")
    if not isinstance(raw, dict):
        raise CheckpointError("G_ema has no _init_kwargs; cannot tell its architecture")
    for k, v in raw.items():
        if k in kwargs:
            raise CheckpointError(f"G_ema init argument {k!r} given twice")
        kwargs[k] = v
    original = plain(kwargs)
    kw = dict(original)
    missing = [k for k in _TOP_KEYS if k not in kw]
    if missing:
        raise CheckpointError(f"G_ema init kwargs lack {missing} (have {sorted(kw)})")
    mapping = kw.pop("mapping_kwargs", None) or {}
    if "synthesis_kwargs" in kw:
        layout = "nested"
        synthesis = kw.pop("synthesis_kwargs") or {}
        stray = sorted(set(kw) - set(_TOP_KEYS))
        if stray:
            raise CheckpointError(f"unsupported generator kwargs {stray} next to synthesis_kwargs")
    else:
        layout = "flat"
        synthesis = {k: kw.pop(k) for k in list(kw) if k not in _TOP_KEYS}
    if not isinstance(mapping, dict) or not isinstance(synthesis, dict):
        raise CheckpointError("mapping_kwargs / synthesis_kwargs must be dicts")
    _check_values("synthesis", synthesis, _SYNTHESIS_KEYS)
    _check_values("mapping", mapping, _MAPPING_KEYS)

    # w_avg_beta only matters when training; the two repositories default to different values, so
    # prefer what the mapping network itself recorded.
    mapping_net = g.child("mapping")
    beta = mapping.get("w_avg_beta")
    if beta is None and mapping_net is not None:
        beta = plain(mapping_net.state.get("w_avg_beta"))
    if beta is None:
        beta = 0.995 if layout == "nested" else 0.998
    conv_clamp = synthesis.get("conv_clamp")
    try:
        cfg = GeneratorConfig(
            z_dim=int(kw["z_dim"]),
            w_dim=int(kw["w_dim"]),
            c_dim=int(kw["c_dim"]),
            img_resolution=int(kw["img_resolution"]),
            img_channels=int(kw["img_channels"]),
            architecture=str(synthesis.get("architecture", "skip")),
            channel_base=int(synthesis.get("channel_base", 32768)),
            channel_max=int(synthesis.get("channel_max", 512)),
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
            num_fp16_res=int(synthesis.get("num_fp16_res", 0)),
            mapping_layers=int(mapping.get("num_layers", 8)),
            mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
            embed_features=None if mapping.get("embed_features") is None else int(mapping["embed_features"]),
            layer_features=None if mapping.get("layer_features") is None else int(mapping["layer_features"]),
            w_avg_beta=float(beta),
            name=name,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"unsupported generator configuration: {e}") from e
    if not math.isfinite(cfg.mapping_lr_multiplier) or cfg.mapping_lr_multiplier <= 0:
        raise CheckpointError(f"bad mapping lr_multiplier {cfg.mapping_lr_multiplier}")
    return cfg, original, layout


def read_nvidia_pickle(data: bytes, name: str = "") -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict]:
    """Config, G_ema state dict and provenance of an NVIDIA StyleGAN2 pickle's bytes."""
    g = find_g_ema(safe_load_pickle(data))
    check_stylegan2(g)
    cfg, kwargs, layout = nvidia_config(g, name=name)
    info = {
        "format": NVIDIA_PICKLE,
        "class_name": g.class_name,
        "kwargs_layout": layout,
        "init_kwargs": kwargs,
    }
    return cfg, network_state_dict(g), info
