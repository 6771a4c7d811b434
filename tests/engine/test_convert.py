"""Converter: NVIDIA StyleGAN2 pickles and rosinality checkpoints -> livedrag safetensors, safely.

The NVIDIA pickles here are real pickle byte streams with NVIDIA's structure (persistent objects
reconstructed by ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, EasyDict kwargs,
tensors pickled by plain ``pickle``, numpy scalars), written with stand-in modules that are removed
from ``sys.modules`` before loading, so the loader provably needs none of NVIDIA's code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import re
import subprocess
import sys
import types
from argparse import Namespace
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from server.cli import main as cli_main
from server.engine.checkpoint import CheckpointError, load_generator, read_metadata
from server.engine.convert import convert_file, load_foreign, sniff_format
from server.engine.convert_rosinality import rosinality_table
from server.engine.generator import Generator, GeneratorConfig
from tests.conftest import tiny_config

# ----------------------------------------------------------------------------------------------
# Writing NVIDIA-style pickles without NVIDIA's code


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its name is pickled
    raise AssertionError("the loader must never call NVIDIA's reconstructor")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __setattr__(self, name, value):
        self[name] = value


EasyDict.__module__ = "dnnlib.util"
_FAKE = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")


@contextlib.contextmanager
def fake_nvidia_modules():
    """Register stand-ins for NVIDIA's modules while writing a pickle; remove them afterwards."""
    mods = {name: types.ModuleType(name) for name in _FAKE}
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = EasyDict
    assert not any(name in sys.modules for name in _FAKE)
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name in _FAKE:
            sys.modules.pop(name, None)


class Persistent:
    """Pickles exactly as an NVIDIA @persistent_class instance does: reconstructor(meta)."""

    def __init__(self, class_name: str, state: dict, module_src: str) -> None:
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def persistent(
    module: nn.Module, module_src: str, class_name: str | None = None, init_kwargs=None
) -> Persistent:
    """A module's ``__dict__`` as NVIDIA pickles it (hooks, parameters, numpy-scalar attributes ...)."""
    state: dict = {
        "training": False,
        "_parameters": OrderedDict(module._parameters),
        "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict((k, persistent(c, module_src)) for k, c in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": init_kwargs if init_kwargs is not None else {},
    }
    for k, v in vars(module).items():
        if k.startswith("_") or k in state:
            continue
        if isinstance(v, float):
            state[k] = np.float64(v)  # NVIDIA: weight_gain = lr_multiplier / np.sqrt(in_features)
        elif isinstance(v, (int, str, bool, list)) or v is None:
            state[k] = v
    return Persistent(class_name or type(module).__name__, state, module_src)


def marker_src(marker: Path) -> str:
    """Module source that leaves a marker file behind if anyone executes it."""
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('executed')\nclass Generator: pass\n"


def nvidia_kwargs(cfg: GeneratorConfig, layout: str) -> dict:
    """G_ema._init_kwargs as stylegan2-ada-pytorch ('nested') or the stylegan3 repo ('flat') write them."""
    mapping = EasyDict(num_layers=cfg.mapping_layers)
    synthesis = EasyDict(
        channel_base=np.int64(cfg.channel_base),
        channel_max=cfg.channel_max,
        num_fp16_res=4,
        conv_clamp=None if cfg.conv_clamp is None else np.float64(cfg.conv_clamp),
    )
    if cfg.architecture != "skip" or layout == "nested":
        synthesis["architecture"] = cfg.architecture
    top = dict(
        z_dim=cfg.z_dim,
        c_dim=cfg.c_dim,
        w_dim=cfg.w_dim,
        img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs=mapping,
    )
    if layout == "nested":
        return {**top, "synthesis_kwargs": synthesis}
    return {**top, **synthesis, "fused_modconv_default": "inference_only"}


def snapshot(G: Generator, marker: Path, layout: str = "nested", kind: str = "full", kwargs=None):
    """The object NVIDIA's training loop pickles (kind 'full'), a G_ema-only dict, or a bare G_ema."""
    src = marker_src(marker)
    g_ema = persistent(G, src, init_kwargs=kwargs if kwargs is not None else nvidia_kwargs(G.cfg, layout))
    if kind == "bare":
        return g_ema
    if kind == "g_ema_only":
        return {"G_ema": g_ema}
    D = nn.Module()
    D.b4 = nn.Conv2d(3, 4, 3)
    aug = nn.Module()
    aug.register_buffer("p", torch.zeros([]))
    return {
        "G": persistent(G, src, init_kwargs=nvidia_kwargs(G.cfg, layout)),
        "D": persistent(D, src, "Discriminator", {"c_dim": 0, "img_resolution": G.cfg.img_resolution}),
        "G_ema": g_ema,
        "augment_pipe": persistent(aug, src, "AugmentPipe", {"xflip": 1, "rotate90": 1}),
        "training_set_kwargs": EasyDict(
            path="~/datasets/ffhq.zip",
            use_labels=False,
            max_size=70000,
            xflip=False,
            resolution=G.cfg.img_resolution,
        ),
    }


def write_pickle(path: Path, obj, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    with fake_nvidia_modules():
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert not any(name in sys.modules for name in _FAKE)
    return path


def random_generator(cfg: GeneratorConfig, seed: int = 0) -> Generator:
    """A generator with non-trivial noise strengths, biases and w_avg (all initialised to 0 or 1)."""
    torch.manual_seed(seed)
    G = Generator(cfg).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("noise_strength", "bias")):
                p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
    return G.requires_grad_(False)


def images(G: Generator, seeds=(0, 1), c: torch.Tensor | None = None) -> torch.Tensor:
    z = torch.cat([G.z_from_seed(s) for s in seeds])
    with torch.no_grad():
        return G.synthesis(G.mapping(z, c, truncation_psi=0.7))[0]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "code stored in the pickle was executed"


# ----------------------------------------------------------------------------------------------
# NVIDIA: conversions that must work


def test_marker_source_is_live(tmp_path: Path) -> None:
    """Control: the module_src used below really creates its marker when executed."""
    m = tmp_path / "control"
    exec(marker_src(m), {})  # noqa: S102 - this is the point of the control
    assert m.exists()


@pytest.mark.parametrize("layout", ["nested", "flat"])
@pytest.mark.parametrize("arch", ["skip", "resnet"])
def test_full_snapshot_converts_to_identical_images(tmp_path, marker, layout, arch) -> None:
    """G, D, G_ema, augment_pipe, training_set_kwargs: G_ema comes back exactly, both kwarg layouts."""
    G = random_generator(tiny_config(16, arch))
    src = write_pickle(tmp_path / "network-snapshot-000100.pkl", snapshot(G, marker, layout))
    dst = tmp_path / "out.safetensors"
    convert_file(src, dst, name="ffhq-test")
    for name in _FAKE:
        assert name not in sys.modules
    G2 = load_generator(dst)
    assert G2.cfg == replace(G.cfg, name="ffhq-test", num_fp16_res=4)
    assert G2.state_dict().keys() == G.state_dict().keys()
    for k, v in G.state_dict().items():
        assert torch.equal(G2.state_dict()[k], v), k
    assert torch.equal(images(G2), images(G))
    source = json.loads(read_metadata(dst)["source"])
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert source["format"] == "nvidia-stylegan2-pickle"
    assert source["class_name"] == "Generator"
    assert source["kwargs_layout"] == layout
    assert source["init_kwargs"]["img_resolution"] == 16
    assert source["file"] == src.name


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_pickle_protocols(tmp_path, marker, protocol) -> None:
    """Protocol 3 (Python 3.7, NVIDIA's releases) spells sets as builtins.set; 2 spells bytes via _codecs."""
    G = random_generator(tiny_config(8, "resnet"))
    out = load_foreign(write_pickle(tmp_path / "p.pkl", snapshot(G, marker, "flat"), protocol))
    for k, v in G.state_dict().items():
        assert torch.equal(out.G.state_dict()[k], v), k


@pytest.mark.parametrize("kind", ["g_ema_only", "bare"])
def test_g_ema_only_files(tmp_path, marker, kind) -> None:
    """A dict holding only G_ema and a bare G_ema object both convert; the file name is irrelevant."""
    G = random_generator(tiny_config(32))
    src = write_pickle(tmp_path / "stylegan3-t-ffhq-1024x1024.pkl", snapshot(G, marker, "flat", kind))
    out = load_foreign(src)
    assert torch.equal(images(out.G), images(G))
    assert out.G.cfg.name == "stylegan3-t-ffhq-1024x1024"  # name from the stem, type from the content


def test_conditional_generator(tmp_path, marker) -> None:
    """c_dim > 0: mapping.embed converts and the label changes the image the same way."""
    G = random_generator(tiny_config(16, c_dim=5))
    out = load_foreign(write_pickle(tmp_path / "cond.pkl", snapshot(G, marker, "nested")))
    assert out.G.cfg.c_dim == 5 and "mapping.embed.weight" in out.G.state_dict()
    c = F.one_hot(torch.tensor([1, 3]), 5).float()
    assert torch.equal(images(out.G, c=c), images(G, c=c))


def test_kwargs_are_read_not_guessed(tmp_path, marker) -> None:
    """conv_clamp None, mapping lr multiplier, layer/embed widths and w_avg_beta come from the file."""
    cfg = GeneratorConfig(
        z_dim=24,
        w_dim=16,
        c_dim=3,
        img_resolution=8,
        channel_base=128,
        channel_max=16,
        conv_clamp=None,
        mapping_layers=3,
        mapping_lr_multiplier=0.05,
        layer_features=20,
        embed_features=12,
        w_avg_beta=0.995,
    )
    G = random_generator(cfg)
    kw = nvidia_kwargs(cfg, "nested")
    kw["mapping_kwargs"].update(lr_multiplier=np.float32(0.05), layer_features=20, embed_features=12)
    out = load_foreign(write_pickle(tmp_path / "x.pkl", snapshot(G, marker, kwargs=kw)), name="")
    assert out.G.cfg.conv_clamp is None
    assert out.G.cfg.mapping_lr_multiplier == pytest.approx(0.05)
    assert out.G.cfg == replace(cfg, mapping_lr_multiplier=out.G.cfg.mapping_lr_multiplier, num_fp16_res=4)
    c = F.one_hot(torch.tensor([0, 2]), 3).float()
    assert torch.allclose(images(out.G, c=c), images(G, c=c), atol=1e-5)


def test_cli_convert_half(tmp_path, marker, capsys) -> None:
    """`livedrag convert IN OUT --half --name N` writes a loadable fp16 checkpoint and says what it wrote."""
    G = random_generator(tiny_config(16))
    src = write_pickle(tmp_path / "in.pkl", snapshot(G, marker))
    dst = tmp_path / "model.safetensors"
    assert cli_main(["convert", str(src), str(dst), "--half", "--name", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "16x16" in printed and "sha256" in printed
    G2 = load_generator(dst)
    assert G2.cfg.name == "tiny"
    assert (images(G2) - images(G)).abs().max() < 0.05
    assert dst.stat().st_size < 0.6 * sum(v.numel() * 4 for v in G.state_dict().values())
    # Refuses to overwrite without --force.
    assert cli_main(["convert", str(src), str(dst)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["convert", str(src), str(dst), "--force"]) == 0


# ----------------------------------------------------------------------------------------------
# NVIDIA: hostile and wrong files


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize(
    "fn, name",
    [
        (os.system, f"{os.system.__module__}.system"),
        (subprocess.check_call, "subprocess.check_call"),
        (eval, "builtins.eval"),
        (exec, "builtins.exec"),
        (__import__, "builtins.__import__"),
    ],
)
def test_payload_globals_are_refused_before_running(tmp_path, marker, fn, name) -> None:
    """A pickle whose payload would run a command is refused naming the global; nothing runs."""
    G = random_generator(tiny_config(8))
    cmd = f"touch {marker}" if fn is not eval and fn is not exec else f"open({str(marker)!r}, 'w')"
    args = (["touch", str(marker)],) if fn is subprocess.check_call else (cmd,)
    if fn is __import__:
        args = ("os",)
    snap = snapshot(G, marker)
    snap["evil"] = _Reduce(fn, *args)
    src = write_pickle(tmp_path / "evil.pkl", snap)
    with pytest.raises(CheckpointError, match="refused global " + re.escape(name)):
        load_foreign(src)


def test_payload_hidden_inside_network_state(tmp_path, marker) -> None:
    """The refusal also holds for a payload nested deep inside G_ema's state."""
    G = random_generator(tiny_config(8))
    snap = snapshot(G, marker, kind="g_ema_only")
    snap["G_ema"].meta["state"]["_modules"]["mapping"].meta["state"]["evil"] = _Reduce(
        os.system, f"touch {marker}"
    )
    with pytest.raises(CheckpointError, match=r"refused global (posix|nt|os)\.system"):
        load_foreign(write_pickle(tmp_path / "evil.pkl", snap))


def test_hand_written_protocol0_payload(tmp_path, marker) -> None:
    """Old-style GLOBAL opcodes are refused the same way."""
    src = tmp_path / "p0.pkl"
    src.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(CheckpointError, match=r"refused global os\.system"):
        load_foreign(src)


def test_tensorflow_pickle_gets_a_hint(tmp_path) -> None:
    src = tmp_path / "stylegan2-car-config-f.pkl"
    src.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(CheckpointError, match=r"dnnlib\.tflib\.network\.Network.*TensorFlow.*legacy\.py"):
        load_foreign(src)


def test_no_g_ema(tmp_path, marker) -> None:
    snap = snapshot(random_generator(tiny_config(8)), marker)
    del snap["G_ema"]
    with pytest.raises(CheckpointError, match=r"no 'G_ema'.*'D'.*'G'"):
        load_foreign(write_pickle(tmp_path / "x.pkl", snap))


def test_wrong_keys_and_shapes_are_named(tmp_path, marker) -> None:
    """A network that is not this StyleGAN2 fails with the offending key in the message."""
    G = random_generator(tiny_config(16))
    snap = snapshot(G, marker, kind="g_ema_only")
    b4 = snap["G_ema"].meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["b4"]
    b4.meta["state"]["_parameters"]["konst"] = b4.meta["state"]["_parameters"].pop("const")
    with pytest.raises(
        CheckpointError, match=r"missing keys.*synthesis\.b4\.const.*unexpected keys.*synthesis\.b4\.konst"
    ):
        load_foreign(write_pickle(tmp_path / "keys.pkl", snap))

    kw = nvidia_kwargs(G.cfg, "nested")
    kw["synthesis_kwargs"]["channel_max"] = 16  # kwargs disagree with the stored weights
    with pytest.raises(CheckpointError, match=r"shape mismatch for synthesis\.b4\.const"):
        load_foreign(write_pickle(tmp_path / "shapes.pkl", snapshot(G, marker, kwargs=kw)))


def test_other_networks_are_refused(tmp_path, marker) -> None:
    """A StyleGAN3 generator, a non-Generator G_ema and unsupported kwargs give clear errors."""
    G = random_generator(tiny_config(8))
    src_code = marker_src(marker)
    sg3 = nn.Module()
    sg3.synthesis = nn.Module()
    sg3.synthesis.input = nn.Module()
    sg3.synthesis.L0_36_512 = nn.Module()
    sg3.mapping = nn.Module()
    g3 = persistent(sg3, src_code, "Generator", {**nvidia_kwargs(G.cfg, "flat"), "magnitude_ema_beta": 0.999})
    g3.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["input"].meta["class_name"] = (
        "SynthesisInput"
    )
    with pytest.raises(CheckpointError, match="StyleGAN3.*only StyleGAN2"):
        load_foreign(write_pickle(tmp_path / "sg3.pkl", {"G_ema": g3}))

    g = persistent(G, src_code, "Discriminator", nvidia_kwargs(G.cfg, "nested"))
    with pytest.raises(CheckpointError, match="'Discriminator', not a StyleGAN2 'Generator'"):
        load_foreign(write_pickle(tmp_path / "d.pkl", {"G_ema": g}))

    for patch, pattern in [
        ({"architecture": "orig"}, "architecture must be 'skip' or 'resnet'"),
        ({"resample_filter": [1, 2, 1]}, r"resample_filter=\[1, 2, 1\]"),
        ({"use_noise": False}, "use_noise"),
        ({"frobnicate": 1}, r"unsupported synthesis kwargs \['frobnicate'\]"),
    ]:
        kw = nvidia_kwargs(G.cfg, "nested")
        kw["synthesis_kwargs"].update(patch)
        with pytest.raises(CheckpointError, match=pattern):
            load_foreign(write_pickle(tmp_path / "kw.pkl", snapshot(G, marker, kwargs=kw)))
    kw = nvidia_kwargs(G.cfg, "flat")
    kw["mapping_kwargs"]["activation"] = "relu"
    with pytest.raises(CheckpointError, match="mapping kwarg activation='relu'"):
        load_foreign(write_pickle(tmp_path / "kw.pkl", snapshot(G, marker, kwargs=kw)))
    kw = nvidia_kwargs(G.cfg, "flat")
    del kw["img_resolution"]
    with pytest.raises(CheckpointError, match=r"lack \['img_resolution'\]"):
        load_foreign(write_pickle(tmp_path / "kw.pkl", snapshot(G, marker, kwargs=kw)))


def test_wrong_files_give_clear_errors(tmp_path, marker, tiny_G, capsys) -> None:
    """Truncated pickles, non-pickles, empty files, safetensors and missing files."""
    data = pickle.dumps(0)
    good = write_pickle(tmp_path / "good.pkl", snapshot(random_generator(tiny_config(8)), marker))
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pkl: .*(truncated|not a readable pickle)"):
        load_foreign(cut)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        load_foreign(junk)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_foreign(empty)
    number = tmp_path / "number.pkl"
    number.write_bytes(data)
    with pytest.raises(CheckpointError, match="not an NVIDIA snapshot"):
        load_foreign(number)
    from server.engine.checkpoint import save_generator

    st = save_generator(tiny_G, tmp_path / "native.pkl")  # content decides, not the suffix
    with pytest.raises(CheckpointError, match="already a safetensors"):
        load_foreign(st)
    with pytest.raises(FileNotFoundError):
        load_foreign(tmp_path / "missing.pkl")
    assert cli_main(["convert", str(cut), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_sniff_format() -> None:
    import io

    buf = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buf)
    assert sniff_format(buf.getvalue()[:32]) == "torch"
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buf, _use_new_zipfile_serialization=False)
    assert sniff_format(buf.getvalue()[:32]) == "torch"
    assert sniff_format(pickle.dumps({"G_ema": 1})[:32]) == "pickle"


# ----------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch: a re-implementation of its generator's forward pass (model.py,
# fused modulated conv, upfirdn2d_native), written for this test from its description.

ROS_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def ros_channels(size: int, channel_multiplier: int = 2, cap: int | None = None) -> dict[int, int]:
    ch = {r: c * (channel_multiplier if r >= 64 else 1) for r, c in ROS_CHANNELS.items() if r <= size}
    return {r: min(c, cap) for r, c in ch.items()} if cap else ch


def ros_make_kernel(k) -> torch.Tensor:
    k = torch.tensor(k, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def ros_state_dict(
    size: int, style_dim: int, n_mlp: int, channels: dict[int, int], lr_mlp: float = 0.01, seed=0
):
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    sd: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"] = rn(style_dim, style_dim) / lr_mlp
        sd[f"style.{i}.bias"] = rn(style_dim, scale=0.1 / lr_mlp)

    def modconv(pre, cin, cout, k, up=False):
        sd[f"{pre}.weight"] = rn(1, cout, cin, k, k)
        sd[f"{pre}.modulation.weight"] = rn(cin, style_dim)
        sd[f"{pre}.modulation.bias"] = 1 + rn(cin, scale=0.1)
        if up:
            sd[f"{pre}.blur.kernel"] = ros_make_kernel([1, 3, 3, 1]) * 4

    def styled(pre, cin, cout, up=False):
        modconv(f"{pre}.conv", cin, cout, 3, up)
        sd[f"{pre}.noise.weight"] = rn(1, scale=0.2)
        sd[f"{pre}.activate.bias"] = rn(cout, scale=0.1)

    def to_rgb(pre, cin, up=True):
        if up:
            sd[f"{pre}.upsample.kernel"] = ros_make_kernel([1, 3, 3, 1]) * 4
        modconv(f"{pre}.conv", cin, 3, 1)
        sd[f"{pre}.bias"] = rn(1, 3, 1, 1, scale=0.1)

    sd["input.input"] = rn(1, channels[4], 4, 4)
    styled("conv1", channels[4], channels[4])
    to_rgb("to_rgb1", channels[4], up=False)
    log_size = int(math.log2(size))
    for layer_idx in range((log_size - 2) * 2 + 1):
        res = (layer_idx + 5) // 2
        sd[f"noises.noise_{layer_idx}"] = rn(1, 1, 2**res, 2**res)
    cin = channels[4]
    for k, i in enumerate(range(3, log_size + 1)):
        cout = channels[2**i]
        styled(f"convs.{2 * k}", cin, cout, up=True)
        styled(f"convs.{2 * k + 1}", cout, cout)
        to_rgb(f"to_rgbs.{k}", cout)
        cin = cout
    return sd


def ros_upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = torch.flip(kernel, [0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def ros_forward(sd, z: torch.Tensor, size: int, n_mlp: int, lr_mlp: float = 0.01):
    """rosinality Generator([z], randomize_noise=False) -> (image, w)."""

    def equal_linear(x, pre, lr_mul=1.0, act=False):
        w, b = sd[f"{pre}.weight"], sd[f"{pre}.bias"]
        scale = 1 / math.sqrt(w.shape[1]) * lr_mul
        if act:
            return F.leaky_relu(F.linear(x, w * scale) + (b * lr_mul).view(1, -1), 0.2) * math.sqrt(2)
        return F.linear(x, w * scale, bias=b * lr_mul)

    def modulated_conv(x, style, pre, demodulate, up=False):
        weight = sd[f"{pre}.weight"]  # [1, O, I, k, k]
        batch, cin, h, w = x.shape
        cout, k = weight.shape[1], weight.shape[-1]
        s = equal_linear(style, f"{pre}.modulation").view(batch, 1, cin, 1, 1)
        wt = 1 / math.sqrt(cin * k * k) * weight * s
        if demodulate:
            wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, cout, 1, 1, 1)
        x = x.reshape(1, batch * cin, h, w)
        if up:
            wt = wt.transpose(1, 2).reshape(batch * cin, cout, k, k)
            out = F.conv_transpose2d(x, wt, padding=0, stride=2, groups=batch)
            out = out.view(batch, cout, *out.shape[2:])
            return ros_upfirdn2d(out, sd[f"{pre}.blur.kernel"], 1, (1, 1))
        out = F.conv2d(x, wt.reshape(batch * cout, cin, k, k), padding=k // 2, groups=batch)
        return out.view(batch, cout, h, w)

    def styled_conv(x, style, pre, noise, up=False):
        out = modulated_conv(x, style, f"{pre}.conv", True, up)
        out = out + sd[f"{pre}.noise.weight"] * noise
        return F.leaky_relu(out + sd[f"{pre}.activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)

    def to_rgb(x, style, pre, skip):
        out = modulated_conv(x, style, f"{pre}.conv", False) + sd[f"{pre}.bias"]
        if skip is not None:
            out = out + ros_upfirdn2d(skip, sd[f"{pre}.upsample.kernel"], 2, (2, 1))
        return out

    x = z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        x = equal_linear(x, f"style.{i}", lr_mlp, act=True)
    log_size = int(math.log2(size))
    latent = x.unsqueeze(1).repeat(1, log_size * 2 - 2, 1)
    noise = [sd[f"noises.noise_{i}"] for i in range((log_size - 2) * 2 + 1)]
    out = sd["input.input"].repeat(z.shape[0], 1, 1, 1)
    out = styled_conv(out, latent[:, 0], "conv1", noise[0])
    skip = to_rgb(out, latent[:, 1], "to_rgb1", None)
    i = 1
    for k in range(log_size - 2):
        out = styled_conv(out, latent[:, i], f"convs.{2 * k}", noise[2 * k + 1], up=True)
        out = styled_conv(out, latent[:, i + 1], f"convs.{2 * k + 1}", noise[2 * k + 2])
        skip = to_rgb(out, latent[:, i + 2], f"to_rgbs.{k}", skip)
        i += 2
    return skip, x


@pytest.mark.parametrize("legacy", [False, True])
def test_rosinality_matches_reference_forward(tmp_path, legacy) -> None:
    """Converted rosinality weights render what the rosinality forward pass renders."""
    size, style_dim, n_mlp = 32, 24, 3
    channels = ros_channels(size, cap=32)  # 32 at every resolution: min(base // res, 32)
    channels[32] = 16  # fewer channels at the top, as real models have
    sd = ros_state_dict(size, style_dim, n_mlp, channels)
    latent_avg = torch.randn(style_dim)
    src = tmp_path / "550000.pt"
    torch.save({"g_ema": sd, "latent_avg": latent_avg}, src, _use_new_zipfile_serialization=not legacy)
    dst = tmp_path / "ros.safetensors"
    out = convert_file(src, dst)
    G = load_generator(dst)
    assert G.cfg.img_resolution == size and G.cfg.mapping_layers == n_mlp and G.cfg.conv_clamp is None
    assert (G.cfg.channel_base, G.cfg.channel_max) == (512, 32)
    assert torch.equal(G.mapping.w_avg, latent_avg)
    assert out.source["format"] == "rosinality-stylegan2-pytorch" and out.source["w_avg"] == "latent_avg"
    z = torch.randn(3, style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_img, ref_w = ros_forward(sd, z, size, n_mlp)
        ws = G.mapping(z)
        img, _ = G.synthesize(ws, noise_mode="const")
    assert torch.allclose(ws[:, 0], ref_w, atol=1e-5)
    assert ref_img.abs().max() > 0.5  # a real signal, not a trivially small one
    assert torch.allclose(img, ref_img, atol=1e-4, rtol=1e-4), (img - ref_img).abs().max()


def test_rosinality_training_checkpoint_estimates_w_avg(tmp_path) -> None:
    """train.py checkpoints (g, d, optimisers, argparse args) convert; w_avg is estimated when absent."""
    size, style_dim, n_mlp = 16, 16, 2
    sd = ros_state_dict(size, style_dim, n_mlp, ros_channels(size, cap=16))
    ckpt = {
        "g": sd,
        "d": {"convs.0.0.weight": torch.zeros(1)},
        "g_ema": sd,
        "g_optim": {"state": {}},
        "d_optim": {"state": {}},
        "args": Namespace(size=size, latent=style_dim, n_mlp=n_mlp),
        "ada_aug_p": 0.0,
    }
    src = tmp_path / "ckpt.pt"
    torch.save(ckpt, src)
    out = load_foreign(src)
    assert out.source["args"] == {"size": size, "latent": style_dim, "n_mlp": n_mlp}
    assert out.source["w_avg"].startswith("estimated")
    z = torch.randn(10000, style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, w = ros_forward(sd, z[:2], size, n_mlp)  # the mapping matches ...
        assert torch.allclose(out.G.mapping(z[:2])[:, 0], w, atol=1e-5)
        expect = out.G.mapping(z)[:, 0].mean(0)  # ... and w_avg is its mean over the documented samples
    assert torch.allclose(out.G.mapping.w_avg, expect, atol=1e-5)


@pytest.mark.parametrize("channel_multiplier, base", [(1, 16384), (2, 32768)])
def test_rosinality_real_channel_layouts(tmp_path, channel_multiplier, base) -> None:
    """rosinality's channel table maps to NVIDIA's min(channel_base // res, 512)."""
    size = 64
    sd = {
        k: torch.zeros_like(v)
        for k, v in ros_state_dict(size, 8, 1, ros_channels(size, channel_multiplier)).items()
    }
    for k in sd:
        if k.endswith("kernel"):
            sd[k] = ros_make_kernel([1, 3, 3, 1]) * 4
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(8)}, tmp_path / "m.pt")
    cfg = load_foreign(tmp_path / "m.pt").G.cfg
    assert (cfg.channel_base, cfg.channel_max) == (base, 512)
    assert [cfg.channels(r) for r in (4, 32, 64)] == [512, 512, 256 * channel_multiplier]


def test_rosinality_table_covers_every_parameter() -> None:
    """One table row per livedrag parameter/buffer, each rosinality key used once."""
    for size, n_mlp in [(8, 2), (64, 8)]:
        rows = rosinality_table(size, n_mlp)
        cfg = GeneratorConfig(
            z_dim=8, w_dim=8, img_resolution=size, channel_base=64, channel_max=8, mapping_layers=n_mlp
        )
        assert sorted(r[0] for r in rows) == sorted(Generator(cfg).state_dict())
        ros_keys = [r[1] for r in rows if r[1] is not None]
        assert len(ros_keys) == len(set(ros_keys))
        want = ros_state_dict(size, 8, n_mlp, dict.fromkeys([2**i for i in range(2, 7)], 8))
        assert sorted(ros_keys) == sorted(want)


def test_rosinality_strictness(tmp_path) -> None:
    """Missing, unexpected and mis-shaped keys and foreign blur kernels are named."""
    sd = ros_state_dict(16, 8, 2, ros_channels(16, cap=8))

    def convert(d, name="x.pt", extra=None):
        torch.save({"g_ema": d, "latent_avg": torch.zeros(8), **(extra or {})}, tmp_path / name)
        return load_foreign(tmp_path / name)

    d = dict(sd)
    del d["convs.1.noise.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys in g_ema: \['convs\.1\.noise\.weight'\]"):
        convert(d)
    with pytest.raises(CheckpointError, match=r"unexpected keys in g_ema: \['style\.1\.extra'\]"):
        convert({**sd, "style.1.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"convs\.0\.conv\.blur\.kernel \(blur kernel"):
        convert({**sd, "convs.0.conv.blur.kernel": ros_make_kernel([1, 2, 1]) * 4})
    with pytest.raises(CheckpointError, match=r"conv1\.noise\.weight \[2\]"):
        convert({**sd, "conv1.noise.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"shape mismatch for synthesis\.b8\.conv1\.bias"):
        convert({**sd, "convs.1.activate.bias": torch.zeros(9)})
    with pytest.raises(CheckpointError, match="latent_avg"):
        torch.save({"g_ema": sd, "latent_avg": torch.zeros(9)}, tmp_path / "a.pt")
        load_foreign(tmp_path / "a.pt")
    torch.save({"generator": sd}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"without 'g_ema' \(found \['generator'\]\)"):
        load_foreign(tmp_path / "b.pt")


def test_rosinality_refuses_pickled_code(tmp_path, marker) -> None:
    """torch checkpoints are read with weights_only=True: globals outside tensors are refused."""
    torch.save({"g_ema": {}, "evil": _Reduce(os.system, f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused global (posix|nt|os)\.system") as err:
        load_foreign(tmp_path / "evil.pt")
    assert "weights_only" not in str(err.value) and not marker.exists()


def test_payload_inside_tensor_storage_is_refused_naming_the_global(tmp_path, marker) -> None:
    """Storage bytes go through torch.load(weights_only=True); its refusal names the global and
    never repeats PyTorch's advice to load with weights_only=False."""
    import io

    buf = io.BytesIO()
    torch.save({"evil": _Reduce(os.system, f"touch {marker}")}, buf)
    snap = snapshot(random_generator(tiny_config(8)), marker)
    snap["evil"] = _Reduce(torch.storage._load_from_bytes, buf.getvalue())
    with pytest.raises(
        CheckpointError, match=r"tensor storage in pickle: refused global (posix|nt|os)\.system"
    ) as err:
        load_foreign(write_pickle(tmp_path / "evil.pkl", snap))
    assert "weights_only" not in str(err.value) and not marker.exists()
