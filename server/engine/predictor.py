"""Auto DragGAN's Latent Predictor (Cai et al., ACM MM 2024): one short drag sub-step per forward pass.

A small transformer encoder-decoder. The encoder reads one token per handle point, built from

  * the geometry of the drag: normalised handle and target positions, the requested sub-step
    vector (how far each handle should move in this step), the remaining vector to the target
    and its length, and the fraction of the drag already done;
  * the generator's own features at the handle: bilinear samples of the chosen synthesis blocks
    at the handle and at four points around it (a cross of radius ``sample_radius`` px),
    projected to ``d_model`` (the same kind of features DragGAN's point tracking reads);

plus ``grid * grid`` global tokens (the same features average-pooled on a coarse grid) that say
where the face is. The decoder's queries are the first ``n_rows`` W+ rows (a linear embedding of
each normalised row plus a row embedding); they cross-attend to the point tokens and each emits
a residual for its row through a zero-initialised output layer, so an untrained predictor is the
identity. A second, bilinear head adds sum_k sum_m c_km(tokens) (s_k . e) E_m: learned latent
directions E_m, weighted per point by coefficients read from its encoded token, linear in its
requested sub-step s_k (a drag's first-order shape, which an MLP only learns slowly). Rows from
``n_rows`` on are never changed (DragGAN optimises only the first 6 rows).

This is the design of UserControllableLT (Endo, 2022) used autoregressively:
``PredictSession`` asks for one short sub-step at a time and tracks the handles in between.
Shapes: B = batch, K = handle points (padded, with a validity mask), R = n_rows, D = w_dim.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .generator import Generator

N_GEOMETRY = 11  # scalars per point token (see LatentPredictor.geometry)
N_SAMPLES = 5  # feature samples per point: the handle and a cross around it


@dataclass(frozen=True)
class PredictorConfig:
    w_dim: int = 256  # W row size of the generator
    num_ws: int = 10  # W+ rows of the generator
    n_rows: int = 6  # leading W+ rows predicted; the others are never changed
    img_resolution: int = 64  # generator image size (points are in its pixels)
    feature_blocks: tuple[int, ...] = (32, 64)  # synthesis blocks sampled at the handles
    feature_channels: int = 96  # sum of those blocks' channels
    d_model: int = 128  # token width
    n_heads: int = 4  # attention heads
    enc_layers: int = 3  # encoder layers over the point and grid tokens
    dec_layers: int = 3  # decoder layers over the W+ row queries
    mlp_ratio: int = 4  # MLP hidden size = mlp_ratio * d_model
    grid: int = 4  # global tokens: features average-pooled to grid x grid (0 = none)
    n_directions: int = 64  # learned latent directions of the bilinear motion head (0 = none)
    sample_radius: float = 2.0  # px (at img_resolution) of the cross of feature samples
    # the tracking templates as an input (0 = none): each point token also reads its handle's
    # template, the feature of this block (one of ``feature_blocks``) where the handle was placed,
    # and how the feature under the handle now differs from it
    template_block: int = 0
    template_channels: int = 0  # channels of ``template_block``

    def __post_init__(self) -> None:
        blocks = tuple(int(b) for b in self.feature_blocks)
        object.__setattr__(self, "feature_blocks", blocks)
        if not blocks:
            raise ValueError("feature_blocks must name at least one synthesis block")
        if not 1 <= self.n_rows <= self.num_ws:
            raise ValueError(f"n_rows must be in [1, num_ws={self.num_ws}], got {self.n_rows}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        for name in ("w_dim", "feature_channels", "d_model", "enc_layers", "dec_layers", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grid < 0:
            raise ValueError(f"grid must be >= 0, got {self.grid}")
        if self.template_block:
            if self.template_block not in blocks:
                raise ValueError(
                    f"template_block {self.template_block} must be one of feature_blocks {blocks}"
                )
            if self.template_channels < 1:
                raise ValueError(
                    f"template_channels must be >= 1 with a template_block, got {self.template_channels}"
                )

    @classmethod
    def for_generator(
        cls,
        G: Generator,
        feature_blocks: tuple[int, ...] | None = None,
        template_input: bool = False,
        **changes,
    ) -> PredictorConfig:
        """A config sized for ``G``; default blocks: DragGAN's feature block and the one below it.
        ``template_input``: the point tokens also read the tracking templates (of DragGAN's block)."""
        res = G.synthesis.block_resolutions
        if feature_blocks is None:
            main = G.default_feature_block()
            i = res.index(main)
            feature_blocks = tuple(res[max(0, i - 1) : i + 1])
        unknown = sorted(set(feature_blocks) - set(res))
        if unknown:
            raise ValueError(f"feature_blocks {unknown} not among the generator's blocks {res}")
        channels = sum(G.cfg.channels(b) for b in feature_blocks)
        cfg = cls(
            w_dim=G.w_dim,
            num_ws=G.num_ws,
            n_rows=min(changes.pop("n_rows", 6), G.num_ws),
            img_resolution=G.img_resolution,
            feature_blocks=tuple(feature_blocks),
            feature_channels=channels,
            **changes,
        )
        return cfg.with_template_input(G) if template_input else cfg

    def with_template_input(self, G: Generator) -> PredictorConfig:
        """This config with the template input: the tracking templates of DragGAN's block of ``G``."""
        track = G.default_feature_block()
        if track not in self.feature_blocks:
            raise ValueError(f"template_input needs the tracking block {track} among feature_blocks")
        return replace(self, template_block=track, template_channels=G.cfg.channels(track))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["feature_blocks"] = list(self.feature_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PredictorConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown PredictorConfig fields: {unknown}")
        return cls(**{**d, "feature_blocks": tuple(d.get("feature_blocks", cls.feature_blocks))})


# ----------------------------------------------------------------------------------------------
# Transformer pieces (pre-norm; plain scaled-dot-product attention with a key padding mask)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, key_ok: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape  # x [B, N, d], mem [B, M, d], key_ok bool [B, M] (True = attend)
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)  # [B, h, N, d/h]
        k, v = self.kv(mem).reshape(b, mem.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_ok is None else key_ok[:, None, None, :]  # [B, 1, 1, M]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Sequential):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2, self.mlp = nn.LayerNorm(d), MLP(d, hidden)

    def forward(self, x: torch.Tensor, key_ok: torch.Tensor | None) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, key_ok)
        return x + self.mlp(self.norm2(x))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm3, self.mlp = nn.LayerNorm(d), MLP(d, hidden)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, key_ok: torch.Tensor | None) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, None)
        x = x + self.cross_attn(self.norm2(x), mem, key_ok)
        return x + self.mlp(self.norm3(x))


# ----------------------------------------------------------------------------------------------
# The predictor


class LatentPredictor(nn.Module):
    """(W+ rows, generator features, handles, targets, sub-step) -> W+ rows after the sub-step.

    ``w_avg`` / ``w_std`` (buffers, [w_dim]) normalise the rows in and scale the residual out; set
    them from the generator's mapping with ``latent_stats`` before training.
    """

    def __init__(self, cfg: PredictorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, hidden = cfg.d_model, cfg.mlp_ratio * cfg.d_model
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_std", torch.ones(cfg.w_dim))
        feat_in = N_SAMPLES * cfg.feature_channels
        self.point_geom = nn.Sequential(nn.Linear(N_GEOMETRY, d), nn.GELU(), nn.Linear(d, d))
        self.point_feat = nn.Sequential(nn.LayerNorm(feat_in), nn.Linear(feat_in, d))
        if cfg.template_block:
            self.point_tpl = template_encoder(cfg)
        self.type_emb = nn.Parameter(torch.zeros(2, d))  # 0 = point token, 1 = grid token
        if cfg.grid > 0:
            self.grid_feat = nn.Sequential(
                nn.LayerNorm(cfg.feature_channels), nn.Linear(cfg.feature_channels, d)
            )
            self.grid_pos = nn.Parameter(torch.randn(cfg.grid * cfg.grid, d) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(d, cfg.n_heads, hidden) for _ in range(cfg.enc_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.row_in = nn.Linear(cfg.w_dim, d)
        self.row_emb = nn.Parameter(torch.randn(cfg.n_rows, d) * 0.02)
        self.decoder = nn.ModuleList(DecoderLayer(d, cfg.n_heads, hidden) for _ in range(cfg.dec_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.w_dim)
        nn.init.zeros_(self.head.weight)  # identity at initialisation
        nn.init.zeros_(self.head.bias)
        if cfg.n_directions > 0:
            m = cfg.n_directions
            self.directions = nn.Parameter(torch.randn(m, cfg.n_rows * cfg.w_dim) / math.sqrt(cfg.w_dim))
            self.dir_norm = nn.LayerNorm(d)
            self.dir_coef = nn.Linear(d, 2 * m)  # per point: coefficients of each direction for x and y
            nn.init.zeros_(self.dir_coef.weight)
            nn.init.zeros_(self.dir_coef.bias)

    # -- inputs ---------------------------------------------------------------------------------
    def geometry(
        self,
        handles: torch.Tensor,  # [B, K, 2] pixels (x, y)
        targets: torch.Tensor,  # [B, K, 2]
        substep: torch.Tensor,  # [B, K, 2] requested move of each handle in this step, pixels
        progress: torch.Tensor,  # [B, K] fraction of the drag done, in [0, 1]
    ) -> torch.Tensor:
        """The scalars of each point token, [B, K, N_GEOMETRY], all of order 1."""
        res = float(self.cfg.img_resolution)
        pos = lambda p: p / (res - 1) * 2 - 1  # noqa: E731  image -> [-1, 1]
        rem = targets - handles
        vec = 16.0 / res  # a 4 px move at 64 px -> 1
        return torch.cat(
            [
                pos(handles),
                pos(targets),
                substep * vec,
                substep.norm(dim=-1, keepdim=True) * vec,
                rem * (4.0 / res),
                rem.norm(dim=-1, keepdim=True) * (4.0 / res),
                progress[..., None],
            ],
            dim=-1,
        )

    def sample_features(self, feats: list[torch.Tensor], handles: torch.Tensor) -> torch.Tensor:
        """Bilinear feature samples at and around each handle: [B, K, N_SAMPLES * C], sample-major
        (the C channels at the handle itself first, the blocks' channels in ``feats`` order).

        ``feats`` are the native-resolution outputs of ``cfg.feature_blocks`` ([B, C_i, r_i, r_i]).
        Image pixel x (centres on integers) maps to block coordinate (x + 0.5) * r / res - 0.5,
        i.e. ``grid_sample(align_corners=False)`` on (x + 0.5) / res * 2 - 1.
        """
        res = float(self.cfg.img_resolution)
        s = self.cfg.sample_radius
        offsets = torch.tensor(
            [[0, 0], [s, 0], [-s, 0], [0, s], [0, -s]], device=handles.device, dtype=torch.float32
        )  # [S, 2]
        pts = handles[:, :, None, :] + offsets  # [B, K, S, 2]
        grid = (pts + 0.5) / res * 2 - 1
        out = []
        for f in feats:
            g = F.grid_sample(f.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            out.append(g)  # [B, C_i, K, S]
        x = torch.cat(out, dim=1)  # [B, C, K, S]
        b, c, k, n = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, k, n * c)

    def template_tokens(
        self, feats: list[torch.Tensor], samples: torch.Tensor, templates: torch.Tensor
    ) -> torch.Tensor:
        """What the template input adds to each point token, [B, K, d_model]: the template
        [B, K, C_t] and its difference from the template block's feature under the handle now,
        read from ``samples`` (``sample_features``: the first sample of each point is at the handle)."""
        i = self.cfg.feature_blocks.index(self.cfg.template_block)
        start = sum(f.shape[1] for f in feats[:i])
        now = samples[..., start : start + self.cfg.template_channels]  # [B, K, C_t]
        return self.point_tpl(torch.cat([templates.float(), templates.float() - now], dim=-1))

    def grid_tokens(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Features average-pooled to grid x grid: [B, grid^2, C]."""
        g = self.cfg.grid
        pooled = torch.cat([F.adaptive_avg_pool2d(f.float(), g) for f in feats], dim=1)  # [B, C, g, g]
        return pooled.flatten(2).transpose(1, 2)

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        rows: torch.Tensor,  # [B, R, D] the first n_rows W+ rows now
        feats: list[torch.Tensor],  # native block outputs at these rows, in cfg.feature_blocks order
        handles: torch.Tensor,  # [B, K, 2] current (tracked) handles, pixels
        targets: torch.Tensor,  # [B, K, 2]
        substep: torch.Tensor,  # [B, K, 2] requested move per handle in this step, pixels
        progress: torch.Tensor,  # [B, K]
        valid: torch.Tensor | None = None,  # bool [B, K]; False marks padding
        templates: torch.Tensor | None = None,  # [B, K, C_t] tracking templates (with template_block)
    ) -> torch.Tensor:
        """The first n_rows W+ rows after the sub-step, [B, R, D]."""
        cfg = self.cfg
        b, k = handles.shape[:2]
        if rows.shape[1:] != (cfg.n_rows, cfg.w_dim):
            raise ValueError(f"rows must be [B, {cfg.n_rows}, {cfg.w_dim}], got {list(rows.shape)}")
        if len(feats) != len(cfg.feature_blocks):
            raise ValueError(f"expected features of blocks {cfg.feature_blocks}, got {len(feats)} maps")
        if valid is None:
            valid = torch.ones(b, k, dtype=torch.bool, device=handles.device)
        geom = self.geometry(handles, targets, substep, progress) * valid[..., None]
        samples = self.sample_features(feats, handles)
        tokens = self.point_geom(geom) + self.point_feat(samples) + self.type_emb[0]
        if cfg.template_block:
            if templates is None or templates.shape != (b, k, cfg.template_channels):
                got = None if templates is None else list(templates.shape)
                raise ValueError(f"this predictor reads templates [B, K, {cfg.template_channels}], got {got}")
            tokens = tokens + self.template_tokens(feats, samples, templates) * valid[..., None]
        key_ok = valid
        if cfg.grid > 0:
            gt = self.grid_feat(self.grid_tokens(feats)) + self.grid_pos + self.type_emb[1]
            tokens = torch.cat([tokens, gt], dim=1)
            key_ok = torch.cat([valid, torch.ones(b, gt.shape[1], dtype=torch.bool, device=valid.device)], 1)
        for layer in self.encoder:
            tokens = layer(tokens, key_ok)
        mem = self.enc_norm(tokens)
        x = self.row_in((rows - self.w_avg) / self.w_std) + self.row_emb  # [B, R, d]
        for layer in self.decoder:
            x = layer(x, mem, key_ok)
        delta = self.head(self.dec_norm(x))  # [B, R, D], in units of the W std
        if cfg.n_directions > 0:
            # bilinear motion head: each point moves the latent along learned directions, linearly
            # in its requested sub-step (the first-order shape of a drag), with image-dependent weights
            coef = self.dir_coef(self.dir_norm(tokens[:, :k])).reshape(b, k, 2, -1)  # [B, K, 2, M]
            sub = substep * (16.0 / cfg.img_resolution) * valid[..., None]  # [B, K, 2]
            mix = torch.einsum("bkcm,bkc->bm", coef, sub)  # [B, M]
            delta = delta + (mix @ self.directions).reshape(b, cfg.n_rows, cfg.w_dim)
        return rows + delta * self.w_std


def template_encoder(cfg: PredictorConfig) -> nn.Module:
    """LayerNorm + linear from (template, template - feature now) to a token; the linear layer
    starts at zero, so adding the input to a trained predictor starts from what it did without."""
    n = 2 * cfg.template_channels
    enc = nn.Sequential(nn.LayerNorm(n), nn.Linear(n, cfg.d_model))
    nn.init.zeros_(enc[1].weight)
    nn.init.zeros_(enc[1].bias)
    return enc


@torch.no_grad()
def latent_stats(
    G: Generator, n: int = 4096, seed: int = 0, batch: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-dimension std of W = mapping(z), z ~ N(0, I) (no truncation), on G's device."""
    dev = G.mapping.w_avg.device
    gen = torch.Generator().manual_seed(seed)
    ws = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=gen).to(dev)
        ws.append(G.mapping(z)[:, 0])
    w = torch.cat(ws)  # [n, D]
    return w.mean(0), w.std(0).clamp(min=1e-4)


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
