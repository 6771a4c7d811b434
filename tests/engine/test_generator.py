"""Generator: shapes, ranges, NVIDIA naming, determinism, W/W+ input, features, truncation, noise."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from server.engine.checkpoint import CheckpointError, load_generator, save_generator
from server.engine.generator import Generator, GeneratorConfig, z_from_seed
from tests.conftest import tiny_config


@pytest.mark.parametrize("res", [8, 16, 32, 64])
@pytest.mark.parametrize("arch", ["skip", "resnet"])
def test_output_shape_and_range(res: int, arch: str) -> None:
    """Images are [N, 3, res, res], finite and of sensible magnitude for both architectures."""
    torch.manual_seed(0)
    G = Generator(tiny_config(res, arch)).eval()
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim))
    assert img.shape == (2, 3, res, res)
    assert torch.isfinite(img).all()
    assert 0.01 < img.std() < 20
    assert G.num_ws == 2 * {8: 3, 16: 4, 32: 5, 64: 6}[res] - 2


def test_nvidia_parameter_names_and_shapes() -> None:
    """State-dict keys follow NVIDIA networks_stylegan2.py (so converted checkpoints load strictly)."""
    cfg = GeneratorConfig(
        z_dim=64,
        w_dim=64,
        img_resolution=16,
        channel_base=512,
        channel_max=64,
        mapping_layers=3,
        architecture="resnet",
    )
    sd = Generator(cfg).state_dict()
    C4, C8, C16 = cfg.channels(4), cfg.channels(8), cfg.channels(16)
    expect = {
        "mapping.fc0.weight": (64, 64),
        "mapping.fc2.bias": (64,),
        "mapping.w_avg": (64,),
        "synthesis.b4.const": (C4, 4, 4),
        "synthesis.b4.conv1.weight": (C4, C4, 3, 3),
        "synthesis.b4.conv1.noise_const": (4, 4),
        "synthesis.b4.conv1.noise_strength": (),
        "synthesis.b4.conv1.resample_filter": (4, 4),
        "synthesis.b4.conv1.affine.weight": (C4, 64),
        "synthesis.b4.resample_filter": (4, 4),
        "synthesis.b8.conv0.weight": (C8, C4, 3, 3),
        "synthesis.b8.skip.weight": (C8, C4, 1, 1),
        "synthesis.b16.torgb.weight": (3, C16, 1, 1),
        "synthesis.b16.torgb.affine.bias": (C16,),
        "synthesis.b16.conv1.noise_const": (16, 16),
    }
    for k, shape in expect.items():
        assert k in sd, k
        assert tuple(sd[k].shape) == shape, k
    assert "synthesis.b8.torgb.weight" not in sd  # resnet: only the last block has torgb
    assert torch.allclose(sd["synthesis.b4.conv1.affine.bias"], torch.ones(C4))  # affine bias starts at 1


def test_w_and_wplus_inputs_agree(tiny_G: Generator) -> None:
    """A W row and the same row repeated into W+ render the same image."""
    w = tiny_G.mapping(torch.randn(1, tiny_G.z_dim))[:, 0]
    a, _ = tiny_G.synthesize(w)
    b, _ = tiny_G.synthesize(w.unsqueeze(1).repeat(1, tiny_G.num_ws, 1))
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="latent must be"):
        tiny_G.synthesize(torch.zeros(1, 5, 7))


def test_features_from_the_same_pass(tiny_G: Generator) -> None:
    """Requested block features come back with the right shape and do not change the image."""
    ws = tiny_G.ws_from_seed(3)
    img0, none = tiny_G.synthesize(ws)
    img1, feats = tiny_G.synthesize(ws, feature_blocks=(16, 32))
    assert none == {}
    assert torch.equal(img0, img1)
    assert feats[16].shape == (1, tiny_G.cfg.channels(16), 16, 16)
    assert feats[32].shape == (1, tiny_G.cfg.channels(32), 32, 32)
    with pytest.raises(ValueError, match="feature_blocks"):
        tiny_G.synthesize(ws, feature_blocks=(7,))
    assert tiny_G.default_feature_block() == 32  # fewer than 6 blocks: the last


def test_default_feature_block_is_sixth_block() -> None:
    G = Generator(
        GeneratorConfig(
            z_dim=8, w_dim=8, img_resolution=256, channel_base=2048, channel_max=8, mapping_layers=1
        )
    )
    assert G.default_feature_block() == 128


def test_truncation_and_noise_modes(tiny_G: Generator) -> None:
    """psi=0 gives w_avg everywhere; const noise is deterministic, random noise is not."""
    tiny_G.mapping.w_avg.normal_()
    for block in tiny_G.synthesis.modules():
        if hasattr(block, "noise_strength"):
            block.noise_strength.fill_(0.5)
    z = torch.randn(2, tiny_G.z_dim)
    ws = tiny_G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(ws, tiny_G.mapping.w_avg.expand_as(ws))
    ws_cut = tiny_G.mapping(z, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.allclose(ws_cut[:, :2], ws[:, :2]) and not torch.allclose(ws_cut[:, 2:], ws[:, 2:])
    w = tiny_G.mapping(z)
    a, _ = tiny_G.synthesize(w, noise_mode="const")
    b, _ = tiny_G.synthesize(w, noise_mode="const")
    c, _ = tiny_G.synthesize(w, noise_mode="random")
    d, _ = tiny_G.synthesize(w, noise_mode="none")
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_G.synthesize(w, noise_mode="loud")


def test_conditional_mapping() -> None:
    """c_dim > 0 adds mapping.embed and requires a label."""
    G = Generator(tiny_config(16, c_dim=4)).eval()
    assert "mapping.embed.weight" in G.state_dict()
    c = torch.nn.functional.one_hot(torch.tensor([1, 2]), 4).float()
    with torch.no_grad():
        assert G(torch.randn(2, G.z_dim), c).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="conditional"):
        G.mapping(torch.randn(2, G.z_dim))


def test_seed_determinism_across_processes() -> None:
    """A seed names the same z in another process (CPU RNG, numpy RandomState)."""
    code = "from server.engine.generator import z_from_seed; print(z_from_seed(1234, 16).sum().item())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) == pytest.approx(z_from_seed(1234, 16).sum().item(), abs=0)
    assert not torch.equal(z_from_seed(1, 16), z_from_seed(2, 16))
    with pytest.raises(ValueError):
        z_from_seed(-1, 16)


def test_save_load_round_trip(tmp_path, tiny_G: Generator) -> None:
    """save_generator/load_generator reproduce the same images; fp16 storage stays close."""
    ws = tiny_G.ws_from_seed(0)
    ref, _ = tiny_G.synthesize(ws)
    p = save_generator(tiny_G, tmp_path / "g.safetensors")
    G2 = load_generator(p)
    assert G2.cfg == tiny_G.cfg
    out, _ = G2.synthesize(ws)
    assert torch.equal(ref, out)
    G3 = load_generator(save_generator(tiny_G, tmp_path / "g16.safetensors", half=True))
    out16, _ = G3.synthesize(ws)
    assert (out16 - ref).abs().max() < 0.05


def test_wrong_checkpoints_give_clear_errors(tmp_path, tiny_G: Generator) -> None:
    """Missing files, non-safetensors, pickles and mismatched shapes are named in the error."""
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_generator(junk)
    with pytest.raises(CheckpointError, match="convert"):
        load_generator(tmp_path / "model.pkl")
    p = save_generator(tiny_G, tmp_path / "g.safetensors")
    other = Generator(tiny_config(16))
    from safetensors.torch import load_file

    from server.engine.checkpoint import check_state_dict

    with pytest.raises(CheckpointError, match="missing keys|shape mismatch"):
        check_state_dict(other, load_file(str(p)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_precision(tiny_G: Generator) -> None:
    G = tiny_G.cuda()
    ws = G.ws_from_seed(0)
    ref, _ = G.synthesize(ws)
    for dt in (torch.float16, torch.bfloat16):
        out, _ = G.synthesize(ws, dtype=dt)
        assert (out - ref).abs().mean() < 0.05
