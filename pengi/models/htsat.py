"""HTS-AT: a Swin transformer over the folded log-mel image (Chen et al., 2022).

Our own implementation of the architecture the Pengi authors use (their ``models/htsat.py``),
with the same parameter names so that official weights map one to one, and PyTorch's
``scaled_dot_product_attention`` in the window attention (relative position bias and the
shifted-window mask go in as the additive ``attn_mask``).

Pipeline for a 7-s clip at 44.1 kHz (paper size):
log-mel ``(B, 965, 64)`` -> ``bn0`` over mel bins -> [SpecAugment in training] -> bicubic resize
of time to 1024 frames -> fold into a 256 x 256 image (4 chunks of 256 frames stacked along the
mel axis) -> 4 x 4 patches -> Swin stages (window 8, shifted windows, patch merging) -> final
LayerNorm -> 8 x 8 tokens of width 768 -> mean = embedding. The optional TS-CAM head regroups the
tokens into time order and gives clip-wise class probabilities (unused by Pengi and CLAP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pengi.config import HTSATConfig

log = logging.getLogger(__name__)

# Exact rewrites as matrix products (same function, float rounding aside). The H100 profile of
# the compiled paper-size step (bench/RESULTS.md, section 1) found the bicubic resize's backward
# (an atomic scatter, ``_unsafe_index_put``) and the patch convolution's backward with its
# NCHW <-> NHWC conversions among the largest non-GEMM costs. Both are linear maps:
# - MATMUL_TIME_RESIZE: the bicubic time resize as ``W @ x`` with ``W`` the resize of an identity
#   (the mel axis maps 1:1), in float32 as the interpolation ran;
# - GEMM_PATCH_EMBED: non-overlapping patches (stride = kernel, the paper's 4 x 4) as a reshape
#   and one ``linear`` with the convolution's own weights, tokens out in row-major order.
# They run on the device types in MATRIX_REWRITE_DEVICES: CUDA only, because on the 2-core CPU
# they are no faster (paper-size tower, batch 4, forward + backward: 0.93 s vs 0.90 s) and the
# unchanged CPU path keeps the embedded default's CPU-trained models bit for bit as they were.
MATMUL_TIME_RESIZE = True
GEMM_PATCH_EMBED = True
MATRIX_REWRITE_DEVICES: tuple[str, ...] = ("cuda",)


def bicubic_time_matrix(frames: int, target: int, device: torch.device | None = None) -> torch.Tensor:
    """``(target, frames)`` float32 matrix of ``F.interpolate(..., mode="bicubic",
    align_corners=True)`` along one axis: row ``i`` holds the weights of output frame ``i``."""
    eye = torch.eye(frames, device=device, dtype=torch.float32)[None, None]  # (1, 1, frames, frames)
    return F.interpolate(eye, size=(target, frames), mode="bicubic", align_corners=True)[0, 0]


@dataclass
class HTSATOutput:
    """What :meth:`HTSAT.forward` returns."""

    embedding: torch.Tensor  # (B, C) mean of the final tokens
    tokens: torch.Tensor  # (B, N, C) final-LayerNorm tokens, row-major over the token grid
    clipwise: torch.Tensor | None  # (B, num_classes) sigmoid TS-CAM output, None without a head


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, ws*ws, C), windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/ws, W/ws, ws, ws, C)
    return x.reshape(B, (H // ws) * (W // ws), ws * ws, C)


def _window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """(B, nW, ws*ws, C) -> (B, H, W, C)."""
    B, _, _, C = windows.shape
    x = windows.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/ws, ws, W/ws, ws, C)
    return x.reshape(B, H, W, C)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) indices into the (2ws-1)^2 relative-position bias table (Swin's layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2)
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def shifted_window_mask(H: int, W: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask: -100 between tokens from different regions after the roll."""
    img = torch.zeros(1, H, W, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = _window_partition(img, ws)[0, :, :, 0]  # (nW, N)
    diff = win[:, None, :] - win[:, :, None]  # (nW, N, N)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias."""

    def __init__(self, dim: int, ws: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"HTSAT width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Constant, recomputed at construction; the converter checks the stored copy and drops it.
        self.register_buffer("relative_position_index", relative_position_index(ws), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, nW, N, C); mask: (nW, N, N) additive or None. Returns (B, nW, N, C)."""
        B, nW, N, C = x.shape
        h = self.num_heads
        # 4-D (batch*windows, heads, N, hd): SDPA's fused CPU/GPU kernels take 4-D input only
        # (5-D falls back to the slow math path).
        qkv = self.qkv(x).view(B * nW, N, 3, h, C // h).permute(2, 0, 3, 1, 4)  # (3, B*nW, h, N, hd)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N*N, h)
        bias = bias.view(N, N, h).permute(2, 0, 1)  # (h, N, N), broadcast over windows
        if mask is not None:
            # Windows are batch-major (index b * nW + w), so the per-window mask repeats B times.
            bias = (bias[None] + mask[:, None]).repeat(B, 1, 1, 1)  # (B*nW, h, N, N)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0
        )  # (B*nW, h, N, hd); scale head_dim ** -0.5 as in Swin
        out = out.transpose(1, 2).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(out))


class SwinBlock(nn.Module):
    """``x + attn(LN x)`` over (shifted) windows, then ``x + MLP(LN x)``."""

    def __init__(
        self, dim: int, resolution: tuple[int, int], num_heads: int, ws: int, shift: int, cfg: HTSATConfig, dpr: float
    ) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= ws:  # the grid fits one window: no shift, window = grid
            ws, shift = min(resolution), 0
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads, cfg.attn_drop_rate, cfg.drop_rate)
        self.drop_path = DropPath(dpr)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)
        H, W = resolution
        mask = shifted_window_mask(H, W, ws, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""
        H, W = self.resolution
        B, L, C = x.shape
        y = self.norm1(x).view(B, H, W, C)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_window_partition(y, self.ws), self.attn_mask)  # (B, nW, ws*ws, C)
        y = _window_reverse(y, self.ws, H, W)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(B, L, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> LN(4C) -> Linear(4C -> 2C), halving the grid."""

    def __init__(self, dim: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        # Order (even,even), (odd,even), (even,odd), (odd,odd): the layout the weights expect.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))  # (B, H*W/4, 2C)


class SwinStage(nn.Module):
    def __init__(
        self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, cfg: HTSATConfig,
        dprs: list[float], downsample: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        ws = cfg.window_size
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, ws, 0 if i % 2 == 0 else ws // 2, cfg, dprs[i]) for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, stride: int, dim: int) -> None:
        super().__init__()
        pad = (patch - stride) // 2
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride, padding=pad)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.proj.kernel_size
        rewrite = GEMM_PATCH_EMBED and x.device.type in MATRIX_REWRITE_DEVICES
        if rewrite and self.proj.stride == k and self.proj.padding == (0, 0):
            B, _, H, W = x.shape
            h, w = H // k[0], W // k[1]
            patches = x[..., : h * k[0], : w * k[1]].reshape(B, h, k[0], w, k[1]).permute(0, 1, 3, 2, 4)
            weight = self.proj.weight.reshape(self.proj.out_channels, k[0] * k[1])
            tokens = F.linear(patches.reshape(B, h * w, k[0] * k[1]), weight, self.proj.bias)  # (B, h*w, C)
            return self.norm(tokens)
        x = self.proj(x)  # (B, C, H', W')
        return self.norm(x.flatten(2).transpose(1, 2))  # (B, H'*W', C)


class SpecAugment(nn.Module):
    """Zero random stripes in training: 2 time stripes of width < 64 frames, 2 mel stripes < 8 bins.

    The widths are torchlibrosa's ``SpecAugmentation(64, 2, 8, 2)``, which the reference HTSAT
    always applies in train mode.
    """

    def __init__(self, time_width: int = 64, time_stripes: int = 2, freq_width: int = 8, freq_stripes: int = 2):
        super().__init__()
        self.specs = ((1, time_width, time_stripes), (2, freq_width, freq_stripes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F).

        Each clip draws its own stripes, as torchlibrosa's ``DropStripes`` does (width uniform in
        ``[0, width)``, start uniform in ``[0, total - width)``), all at once on ``x``'s device:
        a handful of kernels and no host round trip per stripe, which keeps a GPU step free of
        synchronisation and ``torch.compile`` free of graph breaks.
        """
        if not self.training:
            return x
        B = x.shape[0]
        keep: torch.Tensor | float = 1.0  # becomes (B, T, 1) * (B, 1, F)
        for dim, width, stripes in self.specs:
            total = x.shape[dim]
            w = torch.randint(0, width, (B, stripes), device=x.device)  # (B, S)
            start = (torch.rand(B, stripes, device=x.device) * (total - w).clamp(min=1)).long()  # (B, S)
            pos = torch.arange(total, device=x.device)  # (total,)
            hit = ((pos >= start[..., None]) & (pos < (start + w)[..., None])).any(dim=1)  # (B, total)
            keep = keep * (~hit).to(x.dtype).unsqueeze(2 if dim == 1 else 1)
        return x * keep


class HTSAT(nn.Module):
    """HTSAT over a log-mel ``(B, frames, n_mels)`` input; sizes from :class:`HTSATConfig`.

    The front end is not part of this module (see :class:`pengi.features.LogMelFrontEnd`);
    ``bn0`` is, because it normalises the mel bins with statistics learned with the encoder.
    """

    def __init__(self, cfg: HTSATConfig, n_mels: int) -> None:
        super().__init__()
        if cfg.spec_size % n_mels:
            raise ValueError(f"htsat.spec_size {cfg.spec_size} must be a multiple of the {n_mels} mel bins")
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError("htsat.depths and htsat.num_heads must have the same length")
        self.cfg = cfg
        self.n_mels = n_mels
        self.freq_ratio = cfg.spec_size // n_mels  # time chunks stacked into the image
        n_stages = len(cfg.depths)
        self.num_features = cfg.embed_dim * 2 ** (n_stages - 1)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.spec_augmenter = SpecAugment() if cfg.spec_augment else None
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.patch_stride, cfg.embed_dim)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        grid = cfg.spec_size // cfg.patch_stride
        for i in range(n_stages):
            res = grid // 2**i
            if res > cfg.window_size and res % cfg.window_size:
                raise ValueError(f"htsat: stage {i}'s {res}x{res} token grid is not divisible by the window size")
        n_blocks = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # linear stochastic depth
        self.layers = nn.ModuleList()
        for i in range(n_stages):
            res = grid // 2**i
            self.layers.append(
                SwinStage(
                    cfg.embed_dim * 2**i, (res, res), cfg.depths[i], cfg.num_heads[i], cfg,
                    dpr[sum(cfg.depths[:i]) : sum(cfg.depths[: i + 1])], downsample=i < n_stages - 1,
                )
            )  # fmt: skip
        self.norm = nn.LayerNorm(self.num_features)
        self.final_grid = grid // 2 ** (n_stages - 1)
        if cfg.num_classes > 0:
            # TS-CAM: a conv over (frequency groups, time) of the regrouped final tokens.
            sf = self.final_grid // self.freq_ratio
            self.tscam_conv = nn.Conv2d(self.num_features, cfg.num_classes, kernel_size=(sf, 3), padding=(0, 1))
        else:
            self.tscam_conv = None

    @property
    def target_frames(self) -> int:
        """Time frames the image is made of (1024 for the paper's 256 x 256 image of 64 mels)."""
        return self.cfg.spec_size * self.freq_ratio

    def to_image(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, frames, n_mels) dB -> (B, 1, spec_size, spec_size): bn0, [SpecAugment], resize, fold."""
        B, T, Fm = logmel.shape
        if Fm != self.n_mels:
            raise ValueError(f"HTSAT expects {self.n_mels} mel bins, got {Fm}")
        if T > self.target_frames:
            # The reference's crop branch for longer input is unreachable through its own API (D10).
            raise ValueError(f"HTSAT takes at most {self.target_frames} frames, got {T}: crop the audio first")
        x = self.bn0(logmel.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)  # bn over mel bins; (B, T, F)
        if self.spec_augmenter is not None:
            x = self.spec_augmenter(x)
        x = x[:, None]  # (B, 1, T, F)
        if T < self.target_frames:
            # Bicubic along time only (A = -0.75, align_corners): the mel bins map 1:1.
            if MATMUL_TIME_RESIZE and x.device.type in MATRIX_REWRITE_DEVICES:
                W = self._resize_matrix(T, x.device)
                with torch.autocast(x.device.type, enabled=False):
                    x = torch.matmul(W, x.float()).to(x.dtype)  # (target, T) @ (B, 1, T, F)
            else:
                x = F.interpolate(x, size=(self.target_frames, Fm), mode="bicubic", align_corners=True)
        # Fold: (B,1,ratio*S,F) -> (B,1,F,ratio,S) -> (B,1,ratio,F,S) -> (B,1,ratio*F,S): row = chunk*F + mel.
        S = self.cfg.spec_size
        x = x.permute(0, 1, 3, 2).reshape(B, 1, Fm, self.freq_ratio, S)
        return x.permute(0, 1, 3, 2, 4).reshape(B, 1, self.freq_ratio * Fm, S)

    def _resize_matrix(self, frames: int, device: torch.device) -> torch.Tensor:
        """The cached :func:`bicubic_time_matrix` to ``target_frames`` (not a buffer: a constant
        of the input length, recomputed on demand, never in a checkpoint)."""
        cache = self.__dict__.setdefault("_resize_cache", {})
        key = (frames, str(device))
        if key not in cache:
            cache[key] = bicubic_time_matrix(frames, self.target_frames, device)
        return cache[key]

    def forward_image(self, image: torch.Tensor) -> HTSATOutput:
        """(B, 1, S, S) -> :class:`HTSATOutput`."""
        x = self.pos_drop(self.patch_embed(image))  # (B, N0, C0)
        for layer in self.layers:
            x = layer(x)
        tokens = self.norm(x)  # (B, g*g, C), row-major over the final grid
        embedding = tokens.mean(dim=1)  # the regrouping below only permutes tokens
        clipwise = None
        if self.tscam_conv is not None:
            B, N, C = tokens.shape
            g = self.final_grid
            fg = g // self.freq_ratio  # grid rows per frequency group
            # Regroup rows (freq_ratio groups of fg) back into time: (B, C, fg, freq_ratio * g).
            x = tokens.transpose(1, 2).reshape(B, C, self.freq_ratio, fg, g).permute(0, 1, 3, 2, 4)
            x = self.tscam_conv(x.reshape(B, C, fg, self.freq_ratio * g))  # (B, K, 1, T')
            clipwise = torch.sigmoid(x.flatten(2).mean(dim=2))  # (B, K)
        return HTSATOutput(embedding=embedding, tokens=tokens, clipwise=clipwise)

    def forward(self, logmel: torch.Tensor) -> HTSATOutput:
        """(B, frames, n_mels) log-mel in dB -> :class:`HTSATOutput`."""
        return self.forward_image(self.to_image(logmel))
