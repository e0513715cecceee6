"""The PyTorch modules poolfix's fixtures are exported from: small, random weights, nothing downloaded.

Shared by scripts/export_torch_fixtures.py (models/torch/) and scripts/exporters/export_modules.py
(the exporter matrix, models/matrix/). Each case is (module, input shapes, what it holds):

* ``pools``: every pooling site in it must be rewritten, exactly (max error against PyTorch);
* ``stats``: its reductions are normalization statistics or feature reductions: none may become a pool.

The modules rebuild what real models do where exporters spell pools differently: PatchCore/GLASS's
MeanMapper (a 1D adaptive pool over a flattened feature), TopFormer's PyramidPoolAgg, CSAIL's PSPNet
PPM, ConvNeXt's channels-last MLP, timm's NHWC heads after window reshapes (Swin), PoolFormer's
GroupNorm, timm's TF-"same" padding, dynamo's adaptive_avg_pool1d(x, 1), CBAM and a transformer's
statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Adaptive(nn.Module):
    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        return self.pool(x)


class SE(nn.Module):
    """Squeeze-and-excitation with AdaptiveAvgPool2d(1), as torchvision writes it."""

    def __init__(self, c=16, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))
        return x * s


class PSP(nn.Module):
    """PSPNet pyramid pooling module: bins 1, 2, 3, 6 on a 64x64 map."""

    def __init__(self, c=8, bins=(1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(c, c // 4, 1, bias=False), nn.ReLU()) for b in bins
        )

    def forward(self, x):
        size = x.shape[-2:]
        feats = [x] + [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return torch.cat(feats, dim=1)


class MeanMapper(nn.Module):
    """PatchCore / GLASS: each patch feature, flattened, pooled to a fixed length by adaptive_avg_pool1d."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        x = x.reshape(len(x), 1, -1)
        return F.adaptive_avg_pool1d(x, self.dim).squeeze(1)


class PyramidPoolAgg(nn.Module):
    """TopFormer: features of three scales pooled adaptively to the smallest grid, then concatenated."""

    def __init__(self, stride=4):
        super().__init__()
        self.stride = stride

    def forward(self, a, b, c):
        h = (c.shape[2] - 1) // self.stride + 1
        w = (c.shape[3] - 1) // self.stride + 1
        return torch.cat([F.adaptive_avg_pool2d(t, (h, w)) for t in (a, b, c)], dim=1)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise conv, channels-last LayerNorm and MLP, layer scale, residual."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtHead(nn.Module):
    """Stem, two ConvNeXt blocks, then the pool: nn.AdaptiveAvgPool2d(1) (torchvision) and the HF
    pooler's mean over (-2, -1)."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.blocks = nn.Sequential(ConvNeXtBlock(c), ConvNeXtBlock(c))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.pool(x).flatten(1) + x.mean((-2, -1))


class ChannelsLastHead(nn.Module):
    """CoAtNet / MaxViT head: a channels-last LayerNorm, back to NCHW, then AdaptiveAvgPool2d(1)."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.norm = nn.LayerNorm(c)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.pool(x).flatten(1)


class FastAdaptiveAvgPool(nn.Module):
    """timm's pool for NHWC input: x.mean((1, 2))."""

    def forward(self, x):
        return x.mean((1, 2))


class SwinHead(nn.Module):
    """Swin: patches, window partition and reverse (reshapes that lose the axes), a channels-last
    LayerNorm, then timm's NHWC head."""

    def __init__(self, c=16, win=4):
        super().__init__()
        self.embed = nn.Conv2d(3, c, 4, stride=4)
        self.mix = nn.Linear(c, c)
        self.norm = nn.LayerNorm(c)
        self.head = FastAdaptiveAvgPool()
        self.win = win

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        s = self.win
        t = x.reshape(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        t = self.mix(t)
        x = t.reshape(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.head(self.norm(x))


class PoolFormerHead(nn.Module):
    """PoolFormer: pooling token mixer, GroupNorm(1, C), then the mean over (-2, -1)."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.norm = nn.GroupNorm(1, c)
        self.mixer = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mixer(self.norm(x)) - self.norm(x)
        return self.norm(x).mean([-2, -1])


def pad_same(x, k, s):
    """timm's TF-"same" padding, computed from the input's size at run time."""
    ih, iw = x.size()[-2:]
    pad_h = max((-(-ih // s) - 1) * s + k - ih, 0)
    pad_w = max((-(-iw // s) - 1) * s + k - iw, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class TFSameHead(nn.Module):
    """timm tf_efficientnet / HF MobileNetV2: convs with TF-"same" padding, then AdaptiveAvgPool2d(1)."""

    def __init__(self, c=8):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, stride=2)
        self.c2 = nn.Conv2d(c, c, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = torch.relu(self.c1(pad_same(x, 3, 2)))
        x = torch.relu(self.c2(pad_same(x, 3, 2)))
        return self.pool(x).flatten(1)


class Pool1dToOne(nn.Module):
    """adaptive_avg_pool1d(x, 1) on a rank-3 input: dynamo writes Unsqueeze, ReduceMean, Squeeze."""

    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv1d(4, c, 3)

    def forward(self, x):
        return F.adaptive_avg_pool1d(self.conv(x), 1)


class CBAM(nn.Module):
    """CBAM: channel attention from average and max pools (pools), spatial attention from the mean and
    max over channels (not pools)."""

    def __init__(self, c=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x):
        ca = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        x = x * ca
        sa = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(sa))


class Statistics(nn.Module):
    """A transformer layer written out: LayerNorm and RMSNorm statistics, softmax with its max,
    ConvNeXt V2's GRN, a token mean. No reduction here is a pool."""

    def __init__(self, d=32):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        def layer_norm(t):
            mu = t.mean(-1, keepdim=True)
            return (t - mu) / torch.sqrt((t - mu).pow(2).mean(-1, keepdim=True) + 1e-5)

        def rms_norm(t):
            return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6)

        q, k, v = self.qkv(layer_norm(x)).chunk(3, dim=-1)
        a = q @ k.transpose(-1, -2)
        a = torch.exp(a - a.amax(-1, keepdim=True))
        a = a / a.sum(-1, keepdim=True)
        x = x + self.out(a @ v)
        g = torch.norm(x, p=2, dim=1, keepdim=True)  # GRN over the token axis, as on a flattened map
        x = x * (g / (g.mean(-1, keepdim=True) + 1e-6))
        return rms_norm(x).mean(1)


def cases() -> dict[str, tuple[nn.Module, tuple[tuple[int, ...], ...], str]]:
    """name -> (module, input shapes, 'pools' or 'stats')."""
    return {
        "se": (SE(), ((1, 16, 7, 7),), "pools"),
        "psp": (PSP(), ((1, 8, 64, 64),), "pools"),
        "avg2d_10to3": (Adaptive(nn.AdaptiveAvgPool2d(3)), ((1, 3, 10, 10),), "pools"),
        "avg2d_10to4": (Adaptive(nn.AdaptiveAvgPool2d(4)), ((1, 3, 10, 10),), "pools"),
        "avg2d_8to3": (Adaptive(nn.AdaptiveAvgPool2d(3)), ((1, 3, 8, 8),), "pools"),
        "max2d_10to3": (Adaptive(nn.AdaptiveMaxPool2d(3)), ((1, 3, 10, 10),), "pools"),
        "max2d_10to4": (Adaptive(nn.AdaptiveMaxPool2d(4)), ((1, 3, 10, 10),), "pools"),
        "max2d_8to3": (Adaptive(nn.AdaptiveMaxPool2d(3)), ((1, 3, 8, 8),), "pools"),
        "max2d_9x11to1": (Adaptive(nn.AdaptiveMaxPool2d(1)), ((1, 3, 9, 11),), "pools"),
        "avg1d_23to5": (Adaptive(nn.AdaptiveAvgPool1d(5)), ((1, 4, 23),), "pools"),
        "max1d_23to5": (Adaptive(nn.AdaptiveMaxPool1d(5)), ((1, 4, 23),), "pools"),
        "avg3d_7x9x10to3x4x5": (Adaptive(nn.AdaptiveAvgPool3d((3, 4, 5))), ((1, 2, 7, 9, 10),), "pools"),
        "max3d_7x9x10to3x4x5": (Adaptive(nn.AdaptiveMaxPool3d((3, 4, 5))), ((1, 2, 7, 9, 10),), "pools"),
        "meanmapper_4608to1024": (MeanMapper(1024), ((2, 512, 3, 3),), "pools"),
        "meanmapper_12288to1000": (MeanMapper(1000), ((2, 1536, 2, 4),), "pools"),
        "topformer_ppa": (PyramidPoolAgg(), ((1, 2, 250, 250), (1, 2, 125, 125), (1, 2, 63, 63)), "pools"),
        "convnext_head": (ConvNeXtHead(), ((1, 3, 28, 28),), "pools"),
        "channels_last_head": (ChannelsLastHead(), ((1, 3, 28, 28),), "pools"),
        "swin_head": (SwinHead(), ((1, 3, 32, 32),), "pools"),
        "poolformer_head": (PoolFormerHead(), ((1, 3, 28, 28),), "pools"),
        "tfsame_head": (TFSameHead(), ((1, 3, 17, 17),), "pools"),
        "pool1d_to1": (Pool1dToOne(), ((1, 4, 20),), "pools"),
        "cbam": (CBAM(), ((1, 16, 9, 9),), "pools"),
        "statistics": (Statistics(), ((1, 16, 32),), "stats"),
    }


MATRIX = ("se", "psp", "avg2d_8to3", "avg2d_10to4", "max2d_10to4", "avg1d_23to5", "meanmapper_4608to1024",
          "meanmapper_12288to1000", "topformer_ppa", "convnext_head", "channels_last_head", "swin_head",
          "poolformer_head", "tfsame_head", "pool1d_to1", "cbam", "statistics")
FIXTURES = ("se", "psp", "avg2d_10to3", "avg2d_10to4", "avg2d_8to3", "max2d_10to3", "max2d_10to4", "max2d_8to3",
            "max2d_9x11to1", "avg1d_23to5", "max1d_23to5", "avg3d_7x9x10to3x4x5", "max3d_7x9x10to3x4x5")
