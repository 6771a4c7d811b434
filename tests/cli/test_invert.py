"""`livedrag invert`: writes a loadable latent and refuses bad files with exit status 2."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from server.cli import main
from server.engine.checkpoint import load_generator
from server.engine.encoder import default_encoder_path
from server.engine.generator import to_uint8
from server.engine.latent_io import load_latent


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    G = load_generator()
    with torch.no_grad():
        img = to_uint8(G.synthesis(G.ws_from_seed(10**7 + 11, 0.7))[0])[0]
    path = tmp_path_factory.mktemp("photo") / "face.jpg"
    Image.fromarray(img).resize((150, 120)).save(path, quality=95)  # not square, not model size
    return path


@pytest.mark.skipif(not default_encoder_path().is_file(), reason="shipped encoder not built")
def test_invert_writes_a_loadable_latent(tmp_path, photo, capsys):
    """Optimisation from the encoder writes a latent, a preview and a report."""
    out, prev = tmp_path / "lat.safetensors", tmp_path / "prev.png"
    rc = main(
        ["invert", str(photo), "--out", str(out), "--steps", "3", "--preview", str(prev), "--device", "cpu"]
    )
    assert rc == 0
    G = load_generator()
    n, d = G.num_ws, G.w_dim
    w = load_latent(out, n, d)
    assert w.shape == (1, n, d) and torch.isfinite(w).all()
    with Image.open(prev) as im:
        assert im.size[0] > 128
    assert "PSNR" in capsys.readouterr().out
    rc = main(["invert", str(photo), "--out", str(out), "--method", "encoder", "--device", "cpu"])
    assert rc == 0 and load_latent(out, n, d).shape == (1, n, d)


@pytest.mark.parametrize("kind", ["text", "gif", "truncated"])
def test_invert_refuses_bad_files(tmp_path, kind, capsys):
    """Text, GIF and truncated PNG files exit with status 2 and a one-line error."""
    bad = tmp_path / f"bad.{kind}"
    if kind == "text":
        bad.write_text("not a picture\n")
    else:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            buf, format="GIF" if kind == "gif" else "PNG"
        )
        data = buf.getvalue()
        bad.write_bytes(data if kind == "gif" else data[: len(data) // 2])
    rc = main(["invert", str(bad), "--out", str(tmp_path / "x.safetensors"), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error" in err and err.count("\n") == 1
    assert not (tmp_path / "x.safetensors").exists()
