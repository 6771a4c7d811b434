"""StyleGAN2 trainer: discriminator, losses, data, resumable loop, outputs and the CLI (tiny CPU models)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from server.engine.checkpoint import load_generator, read_metadata
from server.engine.generator import bias_act, setup_filter, upfirdn2d
from server.training.data import ImageDataset, RenderedDataset, render_synthfaces, smooth_random_images
from server.training.discriminator import Conv2dLayer, Discriminator, DiscriminatorConfig
from server.training.loop import TrainConfig, Trainer, lazy_adam_params


def tiny(**kw) -> TrainConfig:
    base = dict(
        res=16,
        channel_base=256,
        channel_max=32,
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        batch=4,
        data="random",
        data_n=64,
        grid_size=4,
        log_kimg=0.008,
        ckpt_kimg=1000,
        snap_kimg=1000,
        grid_kimg=1000,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_discriminator_shapes_and_nvidia_names() -> None:
    """D maps [N, 3, R, R] to [N, 1]; parameter names follow NVIDIA networks_stylegan2.py."""
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(img_resolution=16, channel_base=256, channel_max=32)
    D = Discriminator(cfg)
    out = D(torch.randn(8, 3, 16, 16))
    assert out.shape == (8, 1) and torch.isfinite(out).all()
    sd = D.state_dict()
    expect = {
        "b16.fromrgb.weight": (16, 3, 1, 1),
        "b16.conv0.weight": (16, 16, 3, 3),
        "b16.conv1.weight": (32, 16, 3, 3),
        "b16.skip.weight": (32, 16, 1, 1),
        "b8.conv1.bias": (32,),
        "b4.conv.weight": (32, 33, 3, 3),
        "b4.fc.weight": (32, 32 * 16),
        "b4.out.weight": (1, 32),
        "b16.resample_filter": (4, 4),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert "b8.fromrgb.weight" not in sd and "b16.skip.bias" not in sd
    with pytest.raises(ValueError, match="group size"):
        D(torch.randn(6, 3, 16, 16))
    with pytest.raises(ValueError, match="images must be"):
        D(torch.randn(4, 3, 8, 8))


def test_minibatch_std_groups_samples_strided() -> None:
    """Minibatch std groups sample i with i + N/G, ... (NVIDIA's layout) and adds one channel."""
    D = Discriminator(DiscriminatorConfig(img_resolution=8, channel_base=64, channel_max=8))
    x = torch.zeros(8, 8, 4, 4)
    x[::2] = 1.0  # groups {0, 2, 4, 6} and {1, 3, 5, 7} are constant: std 0 (up to eps)
    y = D.b4.mbstd(x)
    assert y.shape == (8, 9, 4, 4)
    assert y[:, 8].max() < 1e-3


@pytest.mark.parametrize("k", [1, 3])
def test_downsampling_conv_matches_nvidia_upfirdn2d(k: int) -> None:
    """Strided conv layers equal NVIDIA's conv2d_resample (FIR filter, then subsample or strided conv)."""
    torch.manual_seed(0)
    layer = Conv2dLayer(6, 5, k, bias=False, down=2)
    x = torch.randn(2, 6, 16, 16)
    f = setup_filter([1, 3, 3, 1])
    w = layer.weight * layer.weight_gain
    if k == 1:
        ref = F.conv2d(upfirdn2d(x, f, padding=(1, 1, 1, 1))[:, :, ::2, ::2], w)
    else:
        ref = F.conv2d(upfirdn2d(x, f, padding=(2, 2, 2, 2)), w, stride=2)
    out = layer(x)
    assert out.shape == (2, 5, 8, 8)
    assert torch.allclose(out, ref, atol=1e-5)


def test_conv_layer_folds_gains_like_bias_act() -> None:
    """Gains folded into weight and bias give NVIDIA's bias_act(conv, b, lrelu, sqrt(2) * gain, clamp)."""
    torch.manual_seed(0)
    layer = Conv2dLayer(4, 6, 3, activation="lrelu", conv_clamp=0.5)
    layer.bias.data.normal_()
    x = torch.randn(2, 4, 8, 8)
    w = layer.weight * layer.weight_gain
    for gain in (1.0, 0.5**0.5):
        ref = bias_act(F.conv2d(x, w, padding=1), layer.bias, "lrelu", gain=2**0.5 * gain, clamp=0.5 * gain)
        assert torch.allclose(layer(x, gain=gain), ref, atol=1e-5)


def test_lazy_regularisation_corrects_adam() -> None:
    lr, betas = lazy_adam_params(0.002, 0.99, 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert lazy_adam_params(0.002, 0.99, None) == (0.002, (0.0, 0.99))


def test_steps_on_random_data_with_all_regularisers(tmp_path) -> None:
    """A few iterations with R1 and path-length regularisation give finite losses; G_ema trails G."""
    cfg = tiny(pl_weight=2.0, pl_interval=2, r1_interval=2, r1_gamma=1.0, channels_last=True)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    seen = set()
    for _ in range(4):
        stats = tr.train_step()
        assert all(math.isfinite(v) for v in stats.values()), stats
        seen |= set(stats)
    assert {"G", "D_real", "D_fake", "r1", "pl"} <= seen
    assert tr.nimg == 16 and tr.step == 4
    pairs = zip(tr.G.parameters(), tr.G_ema.parameters(), strict=True)
    diffs = [(a - b).abs().max().item() for a, b in pairs]
    assert max(diffs) > 0
    assert torch.equal(tr.G.mapping.w_avg, tr.G_ema.mapping.w_avg)  # buffers are copied
    assert tr.G.mapping.w_avg.abs().sum() > 0  # w_avg is tracked during training


def test_resume_continues_bit_for_bit(tmp_path) -> None:
    """Checkpoint after k steps, resume in a new trainer: the next steps' losses and weights are identical."""
    cfg = tiny(r1_interval=2, pl_weight=1.0, pl_interval=3, xflip=True)
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    ref = [straight.train_step() for _ in range(6)]

    first = Trainer(cfg, tmp_path / "b", progress=False)
    for _ in range(3):
        first.train_step()
    first.save_checkpoint()
    del first
    resumed = Trainer.resume(tmp_path / "b", progress=False)
    assert resumed.step == 3 and resumed.nimg == 12
    cont = [resumed.train_step() for _ in range(3)]
    assert cont == ref[3:]
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_resume_refuses_other_networks(tmp_path) -> None:
    tr = Trainer(tiny(), tmp_path / "run", progress=False)
    tr.save_checkpoint()
    with pytest.raises(ValueError, match="cannot change"):
        Trainer.resume(tmp_path / "run", overrides={"channel_max": 64}, progress=False)
    assert (
        Trainer.resume(tmp_path / "run", overrides={"total_kimg": 9.0}, progress=False).cfg.total_kimg == 9.0
    )


def test_run_writes_grids_snapshots_log_and_checkpoint(tmp_path) -> None:
    """run() to total_kimg leaves a sample grid, a loadable fp16 snapshot, a JSON-lines log, a checkpoint."""
    run = tmp_path / "run"
    cfg = tiny(total_kimg=0.024, snap_kimg=0.012, grid_kimg=0.012, ckpt_kimg=0.012)
    tr = Trainer(cfg, run, progress=False)
    assert tr.run() == "done"
    assert tr.nimg == 24
    with Image.open(run / "grids" / "grid_000000.png") as grid:
        assert grid.size == (4 * 16, 2 * 16)  # 4 images per half: a psi 1.0 row, then a psi 0.7 row
    assert (run / "grids" / "reals.png").is_file()
    snaps = sorted((run / "snapshots").glob("*.safetensors"))
    assert len(snaps) >= 1
    G = load_generator(snaps[-1])
    assert G.cfg == cfg.generator_config()
    meta = read_metadata(snaps[-1])
    assert json.loads(meta["kimg"]) == pytest.approx(0.024) and json.loads(meta["seed"]) == 0
    assert json.loads(meta["train_config"])["batch"] == 4
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert lines and all(math.isfinite(r["G"]) and r["sec_per_kimg"] > 0 for r in lines)
    ckpt = Trainer.read_checkpoint(run / "checkpoint.pt")
    assert ckpt["nimg"] == 24 and ckpt["chunks"][0]["end_kimg"] == pytest.approx(0.024)


def test_minutes_limit_stops_and_checkpoints(tmp_path) -> None:
    tr = Trainer(tiny(), tmp_path / "run", progress=False)
    assert tr.run(minutes=0) == "time"
    assert tr.step == 0 and (tmp_path / "run" / "checkpoint.pt").is_file()
    tr.request_stop()
    assert tr.run() == "stopped"


def test_rendered_synthfaces_cache_and_live(tmp_path) -> None:
    """The .npy cache holds render_batch's images for seeds [0, n); live and cached data train."""
    from server.synthfaces import render_batch

    path = render_synthfaces(tmp_path / "data" / "sf.npy", res=16, n=10, workers=1, chunk=4, progress=False)
    cached = np.load(path)
    assert cached.shape == (10, 16, 16, 3) and cached.dtype == np.uint8
    assert np.array_equal(cached[7], render_batch([7], 16)[0][0])
    ds = ImageDataset(cached, seed=0)
    x = ds.sample(4)
    assert x.shape == (4, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    for data in ("synthfaces", "synthfaces-live"):
        tr = Trainer(tiny(data=data, data_n=12), tmp_path / data, data_dir=tmp_path / "data", progress=False)
        assert isinstance(tr.dataset, RenderedDataset) == (data == "synthfaces-live")
        for _ in range(2):
            assert all(math.isfinite(v) for v in tr.train_step().values())
    assert (tmp_path / "data" / "synthfaces_16_12.npy").is_file()


def test_dataset_flip_and_state() -> None:
    """x-flip mirrors some images; restoring the RNG state repeats the same minibatch."""
    imgs = smooth_random_images(8, 8, seed=1)
    ds = ImageDataset(imgs, seed=3, xflip=True)
    state = ds.state_dict()
    a = ds.sample(16)
    ds.load_state_dict(state)
    assert torch.equal(a, ds.sample(16))
    plain = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    same = [any(torch.allclose(x, p, atol=1e-6) for p in plain) for x in a]
    mirrored = [any(torch.allclose(x, p.flip(-1), atol=1e-6) for p in plain) for x in a]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0 < sum(m and not s for s, m in zip(same, mirrored, strict=True)) < 16


def test_cli_train_resume_export(tmp_path) -> None:
    """The CLI trains a chunk, resumes the run, refuses to change the networks, and exports G_ema."""
    from tests.conftest import load_script

    cli = load_script("train_generator")
    out = tmp_path / "runs" / "t"
    common = ["--out", str(out), "--no-progress", "--device", "cpu"]
    net = [
        "--res",
        "16",
        "--channel-base",
        "256",
        "--channel-max",
        "32",
        "--z-dim",
        "32",
        "--w-dim",
        "32",
        "--mapping-layers",
        "2",
        "--batch",
        "4",
        "--data",
        "random",
        "--data-n",
        "32",
        "--kimg",
        "1",
    ]
    assert cli.main(common + net + ["--max-steps", "2"]) == 0
    assert cli.main(common + net + ["--max-steps", "2"]) == 2  # exists: needs --resume
    assert cli.main(common + ["--resume", "--max-steps", "1", "--kimg", "2"]) == 0
    assert Trainer.read_checkpoint(out / "checkpoint.pt")["step"] == 3
    assert cli.main(common + ["--resume", "--channel-max", "64"]) == 2
    dest = tmp_path / "g.safetensors"
    assert cli.main(common + ["--export-only", "--export", str(dest)]) == 0
    G = load_generator(dest)
    assert G.cfg.img_resolution == 16 and G.cfg.name == "random-16"
    meta = read_metadata(dest)
    assert json.loads(meta["kimg"]) == pytest.approx(0.012)
    assert json.loads(meta["compute"])["chunks"][0]["device"] == "cpu"
    assert json.loads(meta["train_config"])["total_kimg"] == 2.0


def test_cli_script_reexecutes_with_cpu_settings(tmp_path) -> None:
    """Run as a script it restarts itself with the malloc and OpenMP settings, then works as usual."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "train_generator.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_WAIT"))}
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "none"), "--export-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "needs" in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_steps_with_autocast(tmp_path) -> None:
    """The same loop runs on CUDA with bfloat16 autocast; checkpoints resume there too."""
    tr = Trainer(tiny(r1_interval=2, pl_weight=1.0, pl_interval=2), tmp_path / "run", "cuda", progress=False)
    assert tr.amp
    for _ in range(3):
        assert all(math.isfinite(v) for v in tr.train_step().values())
    tr.save_checkpoint()
    assert Trainer.resume(tmp_path / "run", "cuda", progress=False).step == 3
