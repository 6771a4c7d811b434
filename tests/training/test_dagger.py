"""Teacher labels at the predictor's own states (server/training/dagger.py, scripts/make_dagger.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.engine.drag_options import DragOptions
from server.engine.generator import Generator
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import PredictSession
from server.engine.predictor_io import GeneratorIdentity
from server.training.dagger import DaggerConfig, continue_with_optimiser, make_dagger
from server.training.predictor_losses import Pairs
from server.training.trajectories import TrajectoryConfig, make_shard, read_shards, write_shard
from tests.conftest import small_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_optimiser_continues_with_the_drags_start_templates(tiny_G: Generator) -> None:
    model = small_predictor(tiny_G, moving=True)
    opts = PredictOptions(substep=2.0, stall_steps=0, lost_ratio=None)
    s = PredictSession.from_seed(
        tiny_G, 0, [(10, 12), (20, 20)], [(18, 12), (20, 26)], options=opts, model=model
    )
    for _ in range(3):
        s.step()
    d = continue_with_optimiser(s, DragOptions(max_steps=5, n_opt_rows=6, lost_ratio=None))
    assert torch.equal(d.latent(), s.latent())
    assert d.handles == s.handles and d.targets == s.targets
    tmpl, spread = s.templates()
    assert torch.equal(d._templates, tmpl) and torch.equal(d._spread, spread)  # not re-taken here
    r = d.step()
    assert not r.done and torch.equal(d._templates, tmpl)
    with pytest.raises(ValueError, match="templates"):
        d.use_templates(tmpl[:1], spread[:1])
    fresh = PredictSession.from_seed(tiny_G, 0, [(10, 12)], [(18, 12)], options=opts, model=model)
    assert fresh.templates() is None and fresh.lost == [False]
    with pytest.raises(ValueError, match="not stepped"):
        continue_with_optimiser(fresh, DragOptions())


def test_dagger_shards_are_teacher_shards_that_start_at_predicted_states(
    tiny_G: Generator, tmp_path: Path
) -> None:
    """Each continuation starts at a predictor state (not the teacher drag's start), records the
    optimiser's steps like a teacher trajectory, reads back with read_shards and trains via Pairs;
    a second run makes nothing (resumable)."""
    trajs = make_shard(tiny_G, 0, TrajectoryConfig(shards=1, per_shard=6, batch=6, max_steps=4))
    ident = GeneratorIdentity.of(tiny_G)
    write_shard(tmp_path / "teacher" / "shard_00000.safetensors", trajs, {"generator": ident.to_dict()})
    src = read_shards([tmp_path / "teacher" / "shard_00000.safetensors"], ident)
    model = small_predictor(tiny_G, moving=True)
    cfg = DaggerConfig(shards=2, per_shard=4, batch=4, max_rollout=3, teacher_steps=3)
    out = tmp_path / "dagger"
    done = make_dagger(tiny_G, model, src, np.arange(len(trajs)), out, cfg)
    assert done["shards_made"] == 2 and done["drags"] > 0
    data = read_shards(sorted(out.glob("shard_*.safetensors")), ident)
    starts = {tuple(np.round(t["w0"][0, :4], 5)) for t in trajs}
    got = data["w0"].numpy()
    assert all(tuple(np.round(w[0, :4], 5)) not in starts for w in got)  # predicted states, not starts
    lengths = np.diff(data["offsets"].numpy())
    assert lengths.min() >= 1 and lengths.max() <= cfg.teacher_steps
    assert torch.all(data["dw"][data["offsets"][:-1]].float() == 0)  # each records from its own start
    if (lengths >= 2).any():
        b = Pairs(data, np.nonzero(lengths >= 2)[0], 2.0, 0.0).batch(
            4, np.random.default_rng(0), torch.device("cpu")
        )
        assert b["w_t"].shape == (4, tiny_G.num_ws, tiny_G.w_dim)
    assert make_dagger(tiny_G, model, src, np.arange(len(trajs)), out, cfg)["shards_made"] == 0
