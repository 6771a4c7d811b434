"""The worker's Projector with an encoder: encoder-only uploads and feature blends from an upload."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.blend import blend_target
from server.engine.encoder import Encoder, EncoderConfig, encode
from server.engine.generator import Generator, to_uint8
from server.engine.project import ProjectSession
from server.worker.projector import BlendSource, EncodedSession, Projector

RES = 32


@pytest.fixture
def projector(G: Generator) -> Projector:
    torch.manual_seed(1)
    enc = Encoder(EncoderConfig.for_generator(G, channels=(8, 16), feat_dim=32, row_dim=32))
    mean = G.mapping.w_avg.detach()
    enc.set_latent_stats(mean, torch.ones_like(mean))
    return Projector(G, enc.eval().requires_grad_(False), perceptual=None)


def picture(G: Generator, seed: int) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(G.synthesis(G.ws_from_seed(seed))[0])[0]


def test_encoder_method_is_one_frame_of_the_encoders_latent(G: Generator, projector: Projector) -> None:
    """With an encoder, method encoder is offered and shows exactly the encoder's latent, once."""
    assert projector.methods == ["encoder", "optimize"]
    target = picture(G, 3)
    s = projector.upload_session(target, "encoder", max_steps=50)
    assert isinstance(s, EncodedSession)
    r = s.step()
    assert s.done and r.step == 1
    torch.testing.assert_close(s.latent(), encode(projector.encoder, target[None]).cpu())
    np.testing.assert_array_equal(r.frame, projector.render(s.latent()))


def test_blend_from_an_upload_uses_the_feature_blend(G: Generator, projector: Projector) -> None:
    """An upload as blend source goes through the encoder and the engine's feature blend (a
    projection from the current latent), and changes the image mostly inside the region."""
    w_base = G.ws_from_seed(0)
    region = np.zeros((RES, RES), bool)
    region[8:24, 8:24] = True
    source = BlendSource(target=picture(G, 7))
    s = projector.blend_session(w_base, source, region, max_steps=4)
    assert isinstance(s, ProjectSession)
    w_source = encode(projector.encoder, source.target[None])
    want, _ = blend_target(G, w_base, w_source, region)  # not the pixel paste used without an encoder
    got = ((s.target[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    before = projector.render(w_base).astype(np.float32)
    while not s.done:
        r = s.step()
    diff = np.abs(r.frame.astype(np.float32) - before).mean(-1)
    assert diff[region].mean() > diff[~region].mean()
