"""models.py - the three networks of an SD 1.x checkpoint in PyTorch, with state_dict keys named
exactly as in the CompVis single-file layout (see shared/reference/manifests/sd15.tsv):

  first_stage_model.*                         ldm AutoencoderKL (Encoder/Decoder, mid attention)
  cond_stage_model.transformer.text_model.*   HF CLIPTextModel (pre-LN, causal, quick_gelu)
  model.diffusion_model.*                     ldm UNetModel, SpatialTransformer with 1x1-conv
                                              proj_in/out and 8 heads at every level (SD1)

Conventions (what the C engine implements): GroupNorm 32 groups, eps 1e-5 in UNet ResBlocks and
the final norm, 1e-6 in SpatialTransformer.norm and the whole VAE; LayerNorm eps 1e-5; GEGLU
(value, gate) with erf GELU; timestep embedding cos first; UNet Downsample conv stride 2 pad 1,
VAE Downsample zero-pad right/bottom then stride 2 pad 0; Upsample nearest x2 then conv.

Written from those conventions (not copied); validated against the tiny-sd1 goldens by
check_models.py. Not here: the noise schedule and training (train.py), export (export.py).
"""
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."


# ---------------------------------------------------------------------------------------------
# UNet

def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, cin, eps=1e-5), nn.SiLU(),
                                       nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(temb, cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, cout, eps=1e-5), nn.SiLU(),
                                        nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, n, c = x.shape
        h = self.heads
        q = self.to_q(x).view(b, n, h, c // h).transpose(1, 2)
        k = self.to_k(ctx).view(b, ctx.shape[1], h, c // h).transpose(1, 2)
        v = self.to_v(ctx).view(b, ctx.shape[1], h, c // h).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) * (c // h) ** -0.5, dim=-1)
        return self.to_out((w @ v).transpose(1, 2).reshape(b, n, c))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, ctx_dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, ctx):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, ch, ctx_dim, heads=8):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, ctx_dim, heads)])
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x, ctx):
        b, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x))
        h = h.flatten(2).transpose(1, 2)
        for blk in self.transformer_blocks:
            h = blk(h, ctx)
        h = h.transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, ctx):
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, SpatialTransformer):
                x = m(x, ctx)
            else:
                x = m(x)
        return x


class UNet(nn.Module):
    """ldm UNetModel; attn_levels lists the levels (0 = full resolution) with a transformer."""

    def __init__(self, in_ch=4, model_ch=64, out_ch=4, ch_mult=(1, 2), num_res_blocks=2,
                 attn_levels=(0, 1), context_dim=128, heads=8):
        super().__init__()
        self.model_ch = model_ch
        temb = 4 * model_ch
        self.time_embed = nn.Sequential(nn.Linear(model_ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_ch, model_ch, 3, padding=1))])
        chans, ch = [model_ch], model_ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, mult * model_ch, temb)]
                ch = mult * model_ch
                if level in attn_levels:
                    layers.append(SpatialTransformer(ch, context_dim, heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(ch_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, ch, temb),
                                                    SpatialTransformer(ch, context_dim, heads),
                                                    ResBlock(ch, ch, temb))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(ch_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), mult * model_ch, temb)]
                ch = mult * model_ch
                if level in attn_levels:
                    layers.append(SpatialTransformer(ch, context_dim, heads))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch, eps=1e-5), nn.SiLU(),
                                 nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, x, t, ctx):
        emb = self.time_embed(timestep_embedding(t, self.model_ch).to(x.dtype))
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb, ctx)
            hs.append(h)
        h = self.middle_block(h, emb, ctx)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb, ctx)
        return self.out(h)


# ---------------------------------------------------------------------------------------------
# VAE (ldm AutoencoderKL)

class VResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)
        self.cin, self.cout = cin, cout

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class VAttnBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)            # b, hw, c
        k = self.k(h).flatten(2)                            # b, c, hw
        v = self.v(h).flatten(2)
        w = torch.softmax(q @ k * c ** -0.5, dim=-1)        # b, hw(q), hw(k)
        h = (v @ w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class VDownsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VMid(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.block_1 = VResnetBlock(ch, ch)
        self.attn_1 = VAttnBlock(ch)
        self.block_2 = VResnetBlock(ch, ch)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class VLevel(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_ch):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, mult in enumerate(ch_mult):
            lv = VLevel()
            for _ in range(num_res_blocks):
                lv.block.append(VResnetBlock(cin, ch * mult))
                cin = ch * mult
            if i != len(ch_mult) - 1:
                lv.downsample = VDownsample(cin)
            self.down.append(lv)
        self.mid = VMid(cin)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 2 * z_ch, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lv in self.down:
            for b in lv.block:
                h = b(h)
            if hasattr(lv, "downsample"):
                h = lv.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VUpsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_ch):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_ch, cin, 3, padding=1)
        self.mid = VMid(cin)
        ups = []
        for i in reversed(range(len(ch_mult))):
            lv = VLevel()
            for _ in range(num_res_blocks + 1):
                lv.block.append(VResnetBlock(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
            if i != 0:
                lv.upsample = VUpsample(cin)
            ups.insert(0, lv)
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for lv in reversed(self.up):
            for b in lv.block:
                h = b(h)
            if hasattr(lv, "upsample"):
                h = lv.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_ch=4):
        super().__init__()
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, z_ch)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, z_ch)
        self.quant_conv = nn.Conv2d(2 * z_ch, 2 * z_ch, 1)
        self.post_quant_conv = nn.Conv2d(z_ch, z_ch, 1)

    def encode(self, x):
        """Image in [-1,1] -> (mean, logvar clamped to [-30, 20])."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------------------------------------
# Text encoder (HF CLIPTextModel layout)

class CLIPAttention(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.heads = width // 64
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask):
        b, n, c = x.shape
        h = self.heads
        q = self.q_proj(x).view(b, n, h, 64).transpose(1, 2) * 64 ** -0.5
        k = self.k_proj(x).view(b, n, h, 64).transpose(1, 2)
        v = self.v_proj(x).view(b, n, h, 64).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, n, c))


class CLIPMLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))


class CLIPLayer(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.self_attn = CLIPAttention(width)
        self.layer_norm1 = nn.LayerNorm(width)
        self.mlp = CLIPMLP(width)
        self.layer_norm2 = nn.LayerNorm(width)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, vocab, width, n_pos=77):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(n_pos, width)
        self.register_buffer("position_ids", torch.arange(n_pos)[None])

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(self.position_ids[:, :ids.shape[1]])


class CLIPEncoder(nn.Module):
    def __init__(self, width, layers):
        super().__init__()
        self.layers = nn.ModuleList([CLIPLayer(width) for _ in range(layers)])


class CLIPTextModel(nn.Module):
    """Holds text_model.* (so a state_dict of this module has the HF key names after the
    "cond_stage_model.transformer.text_model." prefix)."""

    def __init__(self, vocab, width=128, layers=2, n_pos=77):
        super().__init__()
        assert width % 64 == 0
        self.embeddings = CLIPEmbeddings(vocab, width, n_pos)
        self.encoder = CLIPEncoder(width, layers)
        self.final_layer_norm = nn.LayerNorm(width)

    def forward(self, ids):
        x = self.embeddings(ids)
        n = ids.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.final_layer_norm(x)


# ---------------------------------------------------------------------------------------------
# The whole checkpoint

def unet_of(cfg):
    return UNet(in_ch=unet_in_channels(cfg), model_ch=cfg["unet_ch"], out_ch=cfg["z_ch"],
                ch_mult=tuple(cfg["unet_mult"]), num_res_blocks=cfg["unet_blocks"],
                attn_levels=tuple(cfg["unet_attn"]), context_dim=cfg["text_width"])


def vae_of(cfg):
    return AutoencoderKL(ch=cfg["vae_ch"], ch_mult=tuple(cfg["vae_mult"]),
                         num_res_blocks=cfg["vae_blocks"], z_ch=cfg["z_ch"])


def text_of(cfg):
    return CLIPTextModel(cfg["vocab"], width=cfg["text_width"], layers=cfg["text_layers"])


def sd1_state_dict(unet, vae, text):
    """name -> tensor with the single-file names (the modules' own tensors, not copies)."""
    out = {}
    for prefix, mod in ((UNET_PREFIX, unet), (VAE_PREFIX, vae), (TEXT_PREFIX, text)):
        for k, v in mod.state_dict().items():
            out[prefix + k] = v
    return out


class SD1(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.unet = unet_of(cfg)
        self.vae = vae_of(cfg)
        self.text = text_of(cfg)

    def sd1_state_dict(self):
        return sd1_state_dict(self.unet, self.vae, self.text)

    def load_sd1_state_dict(self, sd, strict=True):
        for prefix, mod in ((UNET_PREFIX, self.unet), (VAE_PREFIX, self.vae), (TEXT_PREFIX, self.text)):
            sub = {k[len(prefix):]: torch.as_tensor(v) for k, v in sd.items() if k.startswith(prefix)}
            mod.load_state_dict(sub, strict=strict)


def load_file(path):
    """(SD1 in eval mode, config, metadata) of an exported sdg-default.safetensors."""
    from . import safetensors_io
    w, meta = safetensors_io.read(path)
    cfg = json.loads(meta["sdg.config"])
    m = SD1(cfg).eval()
    m.load_sd1_state_dict({k: v.astype(np.float32) for k, v in w.items()})
    return m, cfg, meta


DEFAULT_CONFIG = dict(
    size=64, z_ch=4,
    vae_ch=32, vae_mult=[1, 1, 2, 2], vae_blocks=1,
    unet_ch=64, unet_mult=[1, 2], unet_blocks=2, unet_attn=[0, 1],
    text_width=128, text_layers=2, vocab=0,
)
# Optional key: unet_in=9 trains an SD 1.5-inpainting style UNet (input [latent, mask, latent of
# the masked picture]; train.py's masks stage). The shipped model gets it from train.py's
# --inpaint-steps, which widens the plain UNet; trained so from scratch it lost position
# (tools/sdg_train/README.md).


def unet_in_channels(cfg):
    """4 for a plain model, 9 for an inpainting one (configs older than unet_in are plain)."""
    return cfg.get("unet_in", cfg["z_ch"])


def vae_factor(cfg):
    """Picture pixels per latent pixel: one halving per VAE level after the first."""
    return 2 ** (len(cfg["vae_mult"]) - 1)


def sd_schedule():
    """SD's scaled_linear schedule: alphas_cumprod [1000] (float64 then float32, as ldm)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()
