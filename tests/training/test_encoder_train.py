"""The encoder's training loop: a short run exports a file, and ``init`` warm-starts a run for
another generator of the same architecture (a later snapshot) from a file or a run's ckpt.pt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from server.engine.encoder import EncoderError, load_encoder
from server.engine.generator import Generator
from server.training.encoder_train import EncoderTrainConfig, latent_stats, train_encoder
from server.training.plan import preset
from tests.conftest import tiny_config


def _cfg(out: Path, **kw) -> EncoderTrainConfig:
    """`livedrag train`'s tiny encoder settings (a 0.04 M-parameter encoder, a pool of 16), 4 steps."""
    return replace(preset("tiny", 32).encoder, out=out, **{"steps": 4, "image_after": 2, **kw})


def _weights(state: dict) -> dict:
    return {k: v.float() for k, v in state.items() if k not in ("w_avg", "w_std")}


def test_warm_start_from_file_or_checkpoint(tmp_path: Path, tiny_G: Generator, one_torch_thread) -> None:
    first = train_encoder(tiny_G, _cfg(tmp_path / "a"), export=tmp_path / "a.safetensors", progress=False)
    assert first["steps"] == 4
    trained = load_encoder(tmp_path / "a.safetensors", tiny_G).state_dict()

    torch.manual_seed(7)
    later = Generator(tiny_config()).eval().requires_grad_(False)  # same architecture, new weights
    w_avg, w_std = latent_stats(later, 10000, torch.Generator().manual_seed(12345))
    for name, init in (("file", tmp_path / "a.safetensors"), ("ckpt", tmp_path / "a" / "ckpt.pt")):
        out = tmp_path / name
        train_encoder(later, _cfg(out, steps=0, init=init), progress=False)
        state = torch.load(out / "ckpt.pt", weights_only=True)["encoder"]
        want = _weights(trained)
        got = _weights(state)
        assert want.keys() == got.keys()
        for k in want:  # the file stores half precision: equal to its rounding
            torch.testing.assert_close(got[k], want[k], atol=2e-3, rtol=2e-3)
        # the latent statistics are the new generator's, not the warm start's
        torch.testing.assert_close(state["w_avg"], w_avg.reshape(-1))
        torch.testing.assert_close(state["w_std"], w_std.reshape(-1).clamp_min(1e-6))
        assert not torch.allclose(state["w_std"], trained["w_std"])
        assert "warm start from" in (out / "train.log").read_text()


def test_warm_start_refuses_other_architectures_and_junk(
    tmp_path: Path, tiny_G: Generator, one_torch_thread
) -> None:
    train_encoder(tiny_G, _cfg(tmp_path / "a", steps=1), export=tmp_path / "a.safetensors", progress=False)
    with pytest.raises(EncoderError, match="another encoder architecture"):
        train_encoder(
            tiny_G, _cfg(tmp_path / "b", steps=0, channels=(8, 16, 32), init=tmp_path / "a" / "ckpt.pt")
        )
    with pytest.raises(EncoderError, match="no such file"):
        train_encoder(tiny_G, _cfg(tmp_path / "c", steps=0, init=tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(1)}, junk)
    with pytest.raises(EncoderError, match="neither an encoder file"):
        train_encoder(tiny_G, _cfg(tmp_path / "d", steps=0, init=junk))
