"""The embedded SynthFaces generator: it ships, loads, samples faces, and a drag on it moves a feature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.checkpoint import default_checkpoint_path, load_generator, read_metadata
from server.engine.drag import DragSession
from server.engine.drag_options import DragOptions
from server.engine.generator import to_uint8
from server.synthfaces.detector import load_detector
from server.synthfaces.landmarks import LANDMARK_NAMES, geometric_sanity


@pytest.fixture(scope="module")
def G():
    path = default_checkpoint_path()
    assert path is not None, "server/assets/synthfaces_g.safetensors must ship with the package"
    return load_generator(path)


def test_shipped_weights_describe_themselves(G) -> None:
    """The file records its config, training budget and seed, and stays inside the weights budget."""
    path = default_checkpoint_path()
    meta = read_metadata(path)
    assert meta["format"] == "livedrag.generator"
    assert float(meta["kimg"]) > 0 and meta["seed"] == "0" and "compute" in meta
    assert path.stat().st_size < 12 * 2**20
    assert G.img_resolution >= 128 and G.cfg.name.startswith("synthfaces")


def test_all_shipped_weights_fit_the_budget() -> None:
    """Every weight file in server/assets together (generator, predictor, encoder, detector) stays
    within the project's 25 MB, and each is safetensors (no pickle ships)."""
    files = sorted(f for f in default_checkpoint_path().parent.iterdir() if not f.name.startswith("."))
    weights = [f for f in files if f.suffix != ".json"]
    assert weights and all(f.suffix == ".safetensors" for f in weights), [f.name for f in weights]
    assert sum(f.stat().st_size for f in files) <= 25 * 10**6


def test_samples_are_faces(G) -> None:
    """Seeded samples are deterministic, varied, and the detector finds plausible faces on most."""
    with torch.no_grad():
        imgs = np.concatenate([to_uint8(G.synthesize(G.ws_from_seed(s))[0]) for s in range(16)])
        again = to_uint8(G.synthesize(G.ws_from_seed(3))[0])[0]
    assert imgs.shape == (16, G.img_resolution, G.img_resolution, 3)
    assert np.array_equal(imgs[3], again)
    assert imgs.reshape(16, -1).astype(float).std(axis=0).mean() > 10  # not one image sixteen times
    lm = load_detector().detect(imgs)
    assert geometric_sanity(lm).mean() >= 0.75


def test_drag_moves_mouth_corner_toward_target(G) -> None:
    """Dragging a detected mouth corner 3 px outward on fixed seeds brings it measurably closer."""
    det = load_detector()
    k = LANDMARK_NAMES.index("mouth_right")
    gains = []
    for seed in (3, 5):
        ws = G.ws_from_seed(seed)
        with torch.no_grad():
            img0 = to_uint8(G.synthesize(ws)[0])
        h = det.detect(img0)[0, k]
        t = h + np.array([3.0, 0.0])
        sess = DragSession(G, ws, [h.tolist()], [t.tolist()], options=DragOptions(max_steps=40))
        for _ in range(40):
            r = sess.step()
            if r.done:
                break
        before = float(np.hypot(*(h - t)))
        after = float(np.hypot(*(np.asarray(r.handles[0]) - t)))
        gains.append(before - after)
    assert max(gains) > 1.0, gains


def test_drag_reports_a_handle_moved_off_its_feature_as_lost(G) -> None:
    """The optimiser's point tracking reports a handle whose search window no longer holds its
    feature (the nose tip's template, the window moved to the image's corner): the drag ends with
    reason lost and that handle flagged, not with a tracked position that means nothing."""
    k = LANDMARK_NAMES.index("nose_tip")
    ws = G.ws_from_seed(2)
    with torch.no_grad():
        img = to_uint8(G.synthesize(ws)[0])
    x, y = (load_detector().detect(img)[0, k] - 0.5).tolist()
    target = (x - 6 * G.img_resolution / 64, y)
    sess = DragSession(G, ws, [(x, y)], [target])
    r = sess.step()
    assert r.lost == (False,) and r.match[0] == 0.0
    corner = 2 * G.img_resolution / 64
    sess.set_points([(corner, corner)], [target], keep=[0])
    r = sess.step()
    assert r.reason == "lost" and r.lost == (True,) and r.match[0] > sess.options.lost_ratio
