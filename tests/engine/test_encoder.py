"""Encoder: shapes, file round trip, generator tie, and the shipped encoder's reconstruction quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.checkpoint import load_generator
from server.engine.encoder import (
    Encoder,
    EncoderConfig,
    EncoderError,
    default_encoder_path,
    encode,
    load_encoder,
    save_encoder,
)
from server.engine.generator import Generator, to_uint8
from tests.conftest import tiny_config

# The shipped encoder (the 128 px default's) measured 28.8 dB mean PSNR on this set (seeds
# 10**7 + 0..7, psi 0.7; scripts/bench_invert.py, docs/real-images.md; the goal is 28 dB); the
# bound leaves a margin for other CPUs' rounding and catches an encoder of the wrong generator or a
# broken pass (a fresh encoder gives about 15 dB).
SHIPPED_PSNR_BOUND = 27.5


def _tiny_encoder(G: Generator) -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig.for_generator(G, channels=(8, 16, 16), feat_dim=32, row_dim=32)).eval()


def test_forward_shape_and_start_at_w_avg(tiny_G):
    """A fresh encoder maps any image to W+ rows equal to w_avg (zero-initialised head)."""
    enc = _tiny_encoder(tiny_G)
    enc.set_latent_stats(tiny_G.mapping.w_avg + 1, torch.ones(tiny_G.w_dim))
    w = enc(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert w.shape == (2, tiny_G.num_ws, tiny_G.w_dim)
    torch.testing.assert_close(w, (tiny_G.mapping.w_avg + 1).expand_as(w))


def test_save_load_round_trip_and_generator_tie(tmp_path, tiny_G):
    """A saved encoder reloads with the same outputs and refuses other generators clearly."""
    enc = _tiny_encoder(tiny_G)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = save_encoder(tmp_path / "enc.safetensors", enc, tiny_G, {"note": "test"})
    back = load_encoder(path, tiny_G)
    imgs = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    torch.testing.assert_close(encode(back, imgs), encode(enc, imgs), atol=2e-2, rtol=1e-2)
    torch.manual_seed(1)
    other_weights = Generator(tiny_config()).eval()
    with pytest.raises(EncoderError, match="other weights"):
        load_encoder(path, other_weights)
    assert load_encoder(path, other_weights, allow_other_weights=True) is not None
    with pytest.raises(EncoderError, match="architecture"):
        load_encoder(path, Generator(tiny_config(res=16)).eval())


def test_missing_and_foreign_files(tmp_path, tiny_G):
    """Missing files and non-encoder safetensors raise EncoderError."""
    with pytest.raises(EncoderError, match="not found"):
        load_encoder(tmp_path / "nope.safetensors", tiny_G)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "x.safetensors"), metadata={"format": "other"})
    with pytest.raises(EncoderError, match="not a livedrag encoder"):
        load_encoder(tmp_path / "x.safetensors", tiny_G)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(EncoderError):
        load_encoder(tmp_path / "bad.safetensors", tiny_G)


def test_encode_checks_input(tiny_G):
    """encode() wants uint8 [N, H, W, 3] images."""
    enc = _tiny_encoder(tiny_G)
    with pytest.raises(ValueError, match="uint8"):
        encode(enc, np.zeros((1, 32, 32, 3), np.float32))


@pytest.mark.skipif(not default_encoder_path().is_file(), reason="shipped encoder not built")
def test_shipped_encoder_reconstructs_generated_images():
    """One-pass reconstructions of 8 held-out generated faces beat 27.5 dB mean PSNR (measured 28.8 dB)."""
    G = load_generator().eval().requires_grad_(False)
    enc = load_encoder(None, G)
    assert default_encoder_path().stat().st_size < 6 * 2**20
    with torch.no_grad():
        ws = torch.cat([G.ws_from_seed(10**7 + i, 0.7) for i in range(8)])
        target = to_uint8(G.synthesis(ws)[0])
        rec = to_uint8(G.synthesis(encode(enc, target))[0])
    mse = ((rec.astype(np.float64) - target) ** 2).reshape(8, -1).mean(1)
    psnr = float(np.mean(10 * np.log10(255.0**2 / mse)))
    assert psnr > SHIPPED_PSNR_BOUND, psnr
