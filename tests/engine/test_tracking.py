"""Point tracking, motion supervision and the mask term as pure functions on feature maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from server.engine.tracking import (
    FeatureField,
    _disk_offsets,
    features_at,
    mask_loss,
    motion_supervision_loss,
    resize_features,
    template_spread,
    track_points,
)


def random_features(c: int = 16, h: int = 40, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g)


@pytest.mark.parametrize("dx,dy", [(0, 0), (3, 0), (0, -2), (-4, 3), (2, 5)])
def test_tracking_finds_a_known_shift(dx: int, dy: int) -> None:
    """Shifting the feature map by (dx, dy) moves every tracked handle by exactly (dx, dy)."""
    f0 = random_features()
    f1 = torch.roll(f0, shifts=(dy, dx), dims=(2, 3))
    handles = torch.tensor([[12.0, 15.0], [25.0, 20.0], [18.0, 30.0]])
    templates = features_at(f0, handles)
    got = track_points(f1, templates, handles, r2=5)
    assert torch.equal(got, handles + torch.tensor([float(dx), float(dy)]))


def test_tracking_from_fractional_and_border_positions() -> None:
    """The window is centred on the rounded handle and clipped to the image."""
    f0 = random_features(h=24, w=24)
    f1 = torch.roll(f0, shifts=(1, 2), dims=(2, 3))  # content moves +2 in x, +1 in y
    handles = torch.tensor([[0.0, 0.0], [23.0, 10.0], [10.4, 9.6]])
    templates = features_at(f0, handles)  # read at the rounded positions (0,0), (23,10), (10,10)
    got = track_points(f1, templates, handles, r2=3)
    assert got[0].tolist() == [2.0, 1.0]
    assert got[2].tolist() == [12.0, 11.0]
    assert 20 <= got[1, 0] <= 23  # its content wrapped out of the image: it stays inside the clipped window


def test_tracking_stays_inside_the_window() -> None:
    """A displacement larger than r2 cannot be followed past the search square."""
    f0 = random_features()
    f1 = torch.roll(f0, shifts=(0, 8), dims=(2, 3))
    handles = torch.tensor([[15.0, 20.0]])
    got = track_points(f1, features_at(f0, handles), handles, r2=3)
    assert (got - handles).abs().max() <= 3


def test_tracking_uses_l2_over_channels() -> None:
    """The nearest neighbour is chosen by Euclidean distance across channels."""
    f = torch.zeros(1, 2, 5, 5)
    template = torch.tensor([[2.0, 0.0]])
    f[0, :, 2, 2] = torch.tensor([10.0, 10.0])  # the start pixel itself is far away
    f[0, :, 2, 3] = torch.tensor([3.0, 0.0])  # difference (1, 0): L2 1.00, L1 1.0
    f[0, :, 2, 1] = torch.tensor([2.6, 0.6])  # difference (0.6, 0.6): L2 0.85 (nearer), L1 1.2 (farther)
    got = track_points(f, template, torch.tensor([[2.0, 2.0]]), r2=1)
    assert got.tolist() == [[1.0, 2.0]]


def test_tracking_reports_the_best_matchs_distance() -> None:
    """return_distance: the L2 distance from each template to the pixel it moved to (0 where the
    feature is found unchanged; the nearest mismatch when it is gone from the window)."""
    f0 = random_features()
    f1 = torch.roll(f0, shifts=(0, 2), dims=(2, 3))
    handles = torch.tensor([[12.0, 15.0], [25.0, 20.0]])
    templates = features_at(f0, handles)
    got, best = track_points(f1, templates, handles, r2=3, return_distance=True)
    assert torch.equal(got, handles + torch.tensor([2.0, 0.0])) and torch.equal(best, torch.zeros(2))
    far = torch.roll(f0, shifts=(0, 9), dims=(2, 3))  # the content left the 7 x 7 window
    got, best = track_points(far, templates, handles, r2=3, return_distance=True)
    window = [far[0, :, y, x] for x in range(9, 16) for y in range(12, 19)]
    want = min((w - templates[0]).norm() for w in window)
    assert best[0].item() == pytest.approx(want.item(), rel=1e-5)
    empty, none = track_points(f0, templates[:0], handles[:0], r2=3, return_distance=True)
    assert empty.shape == (0, 2) and none.shape == (0,)


def test_template_spread_is_the_median_distance_in_the_window() -> None:
    """The spread of a template is the median L2 distance to the features of its window (inside the
    image): the scale a later best match is judged against."""
    f = random_features(c=8, h=20, w=20)
    handles = torch.tensor([[10.0, 10.0], [0.0, 0.0]])
    templates = features_at(f, handles)
    spread = template_spread(f, templates, handles, r2=2)
    d = torch.stack([(f[0, :, y, x] - templates[0]).norm() for x in range(8, 13) for y in range(8, 13)])
    assert spread[0].item() == pytest.approx(d.sort().values[12].item(), rel=1e-5)  # the 13th of 25
    corner = torch.stack([(f[0, :, y, x] - templates[1]).norm() for x in range(3) for y in range(3)])
    assert spread[1].item() == pytest.approx(corner.sort().values[4].item(), rel=1e-5)  # 9 inside the image
    flat = torch.ones(1, 3, 8, 8)
    inside = torch.tensor([[4.0, 4.0]])
    assert torch.equal(template_spread(flat, features_at(flat, inside), inside, 2), torch.zeros(1))


def test_resize_features_concatenates_blocks() -> None:
    """Each block is resized bilinearly (align_corners=False) to the image size and stacked."""
    a = torch.randn(2, 4, 8, 8)
    b = torch.randn(2, 3, 16, 16)
    out = resize_features([a, b], (16, 16))
    assert out.shape == (2, 7, 16, 16)
    assert torch.allclose(out[:, :4], F.interpolate(a, size=(16, 16), mode="bilinear", align_corners=False))
    assert torch.equal(out[:, 4:], b)
    assert resize_features([b], (16, 16)) is b  # already the right size and dtype: no copy


def test_disk_offsets_are_strictly_inside_the_radius() -> None:
    for r in (1, 2, 2.5, 3, 4):
        got = {tuple(o) for o in _disk_offsets(r, torch.device("cpu")).tolist()}
        want = {(x, y) for x in range(-5, 6) for y in range(-5, 6) if x * x + y * y < r * r}
        assert got == want
    assert len(_disk_offsets(2, torch.device("cpu"))) == 9


def test_motion_supervision_value_and_gradient() -> None:
    """The loss is mean |sg(F(q)) - F(q+d)|; only the shifted samples F(q+d) receive gradient."""
    c, r1 = 6, 3
    feat = random_features(c=c, h=24, w=24).requires_grad_(True)
    p = torch.tensor([[10.0, 12.0]])
    t = torch.tensor([[20.0, 12.0]])  # d = (1, 0): the shifted samples fall on pixels
    loss = motion_supervision_loss(feat, p, t, r1)
    loss.backward()
    offs = _disk_offsets(r1, torch.device("cpu"))
    qs = [(10 + int(dx), 12 + int(dy)) for dx, dy in offs.tolist()]
    f = feat.detach()[0]
    diffs = torch.stack([f[:, y, x] - f[:, y, x + 1] for x, y in qs])  # [S, C]
    assert loss.item() == pytest.approx(diffs.abs().mean().item(), rel=1e-5)
    grad = feat.grad[0]
    shifted = {(x + 1, y) for x, y in qs}
    for y in range(24):
        for x in range(24):
            g = grad[:, y, x]
            if (x, y) in shifted:
                want = -torch.sign(diffs[qs.index((x - 1, y))]) / (c * len(qs))
                assert torch.allclose(g, want, atol=1e-7)
            else:
                assert torch.count_nonzero(g) == 0, (x, y)  # includes the q pixels: their term is detached


def test_handles_within_one_pixel_add_nothing() -> None:
    """A handle within 1 px of its target contributes 0 but the loss still backpropagates."""
    feat = random_features(c=4, h=16, w=16).requires_grad_(True)
    p = torch.tensor([[5.0, 5.0], [8.0, 8.0]])
    t = torch.tensor([[5.5, 5.5], [8.0, 9.0]])
    loss = motion_supervision_loss(feat, p, t, r1=2)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(feat.grad) == 0


def test_motion_supervision_sums_handles_and_ignores_outside_pixels() -> None:
    """Per-handle means add up; pixels of the disk outside the image are left out."""
    feat = random_features(c=4, h=16, w=16)
    p = torch.tensor([[0.0, 0.0], [8.0, 8.0]])
    t = torch.tensor([[6.0, 8.0], [2.0, 8.0]])
    both = motion_supervision_loss(feat, p, t, r1=3)
    one = motion_supervision_loss(feat, p[:1], t[:1], r1=3)
    two = motion_supervision_loss(feat, p[1:], t[1:], r1=3)
    assert both.item() == pytest.approx(one.item() + two.item(), rel=1e-6)
    # the corner handle: only the quarter disk inside the image counts (a mean, not diluted by zeros)
    d = torch.tensor([0.6, 0.8])
    qs = [(x, y) for x in range(3) for y in range(3) if x * x + y * y < 9]
    grid = torch.tensor([[(x + d[0]) / 15 * 2 - 1, (y + d[1]) / 15 * 2 - 1] for x, y in qs])
    fqd = F.grid_sample(feat, grid[None, None], align_corners=True)[0, :, 0]  # [C, S]
    fq = torch.stack([feat[0, :, y, x] for x, y in qs], dim=1)
    assert one.item() == pytest.approx((fq - fqd).abs().mean().item(), rel=1e-5)


def test_mask_loss_counts_only_the_fixed_region() -> None:
    """L1 over the fixed region, normalised by all C*H*W elements as DragGAN's F.l1_loss."""
    f0 = random_features(c=3, h=8, w=8)
    f = f0.clone()
    fixed = torch.zeros(8, 8, dtype=torch.bool)
    fixed[:, :4] = True
    f[..., 4:] += 5.0  # change only the flexible half
    assert mask_loss(f, f0, fixed).item() == 0.0
    f[0, :, 0, 0] += 2.0  # change one fixed pixel by 2 in every channel
    assert mask_loss(f, f0, fixed).item() == pytest.approx(3 * 2.0 / (3 * 8 * 8))


# -- FeatureField: DragGAN's resized map F read at points, without materialising it ------------------


def native_maps(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(1, 5, 8, 8, generator=g),
        torch.randn(1, 3, 16, 16, generator=g),
        torch.randn(1, 2, 32, 32, generator=g),
    ]


def test_feature_field_reads_the_resized_map_exactly() -> None:
    """At pixels and at real-valued points (zeros outside) the field equals the resized map F."""
    maps = native_maps()
    full = resize_features(maps, (32, 32))
    field = FeatureField(maps, (32, 32))
    assert field.channels == 10
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    assert torch.allclose(field.at_pixels(xs, ys), full[0], atol=1e-6)
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(200, 2, generator=g) * 35 - 1.5  # some just outside the image
    grid = (pts / 31 * 2 - 1)[None, None]
    want = F.grid_sample(full, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, :, 0]
    assert torch.allclose(field.bilinear(pts[:, 0], pts[:, 1]), want, atol=1e-5)


def test_feature_field_losses_and_gradients_match_the_full_map() -> None:
    """Tracking, motion supervision and its gradient w.r.t. the block maps equal the resize path."""
    maps = [m.requires_grad_(True) for m in native_maps(2)]
    field = FeatureField(maps, (32, 32))
    full = resize_features(maps, (32, 32))
    p = torch.tensor([[4.0, 5.0], [30.0, 16.0], [16.0, 16.0]])
    t = torch.tensor([[9.0, 2.0], [20.0, 30.0], [16.5, 16.0]])
    templates = features_at(full.detach(), p)
    assert torch.allclose(features_at(field, p), templates, atol=1e-6)
    other = features_at(full.detach(), p + torch.tensor([-2.0, 1.0]))  # templates found near, not at, p
    assert torch.equal(track_points(field, other, p, 4), track_points(full, other, p, 4))
    assert torch.equal(track_points(field, other, p, 4)[0], torch.tensor([2.0, 6.0]))
    a = motion_supervision_loss(field, p, t, r1=3)
    b = motion_supervision_loss(full, p, t, r1=3)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    ga = torch.autograd.grad(a, maps)
    gb = torch.autograd.grad(b, maps)
    for x, y in zip(ga, gb, strict=True):
        assert torch.allclose(x, y, atol=1e-6)
    f0 = full.detach() + 1
    fixed = torch.zeros(32, 32, dtype=torch.bool)
    fixed[:8] = True
    assert mask_loss(field, f0, fixed).item() == pytest.approx(mask_loss(full, f0, fixed).item())
