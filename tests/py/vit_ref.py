"""vit_ref.py: PyTorch reference ViT encoders for the dinoc tests, written from the reference facts
(../shared/reference/dino_dinov2.md §1), not from Hugging Face code.

One module class, ViTRef, reproduces three Hugging Face models (inference, no dropout/drop path):
  "dinov2"                  Dinov2Model
  "dinov2_with_registers"   Dinov2WithRegistersModel (R register tokens after CLS, no pos-embed)
  "vit"                     ViTModel(add_pooling_layer=False) as used by facebook/dino-vit*
state_dict() names are exactly the published HF names (the attribute nesting produces them).

forward(pixel_values, bool_masked_pos=None, pos_interp=None) returns a dict:
  last_hidden_state  [B, T, D]  final LayerNorm on all tokens
  hidden_states      list of depth+1 tensors [B, T, D]: embedding output, then each block output
  attentions_last    [B, heads, T, T] softmax probabilities of the last block

pos_interp (position-embedding interpolation; default from the model type):
  "size"       F.interpolate(size=(h0, w0), bicubic, align_corners=False) in fp32 (HF Dinov2, HF ViT)
  "offset"     scale_factor=((h0+0.1)/M, (w0+0.1)/M) as python floats (original DINO, DINOv2 non-reg)
  "antialias"  "size" with antialias=True (HF Dinov2WithRegisters, original DINOv2 reg models)
All modes skip interpolation when #patches == #positions and H == W.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_POS_INTERP = {"dinov2": "size", "dinov2_with_registers": "antialias", "vit": "size"}


def swiglu_hidden(hidden_size, mlp_ratio=4):
    """HF Dinov2SwiGLUFFN / original SwiGLUFFNFused hidden width: (int(4D*2/3)+7)//8*8."""
    h = int(hidden_size * mlp_ratio)
    return (int(h * 2 / 3) + 7) // 8 * 8


# ---------------------------------------------------------------------------------------------
# Embeddings


class PatchEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.projection = nn.Conv2d(c["num_channels"], c["hidden_size"], c["patch_size"], c["patch_size"])

    def forward(self, x):
        return self.projection(x).flatten(2).transpose(1, 2)  # [B, h0*w0, D], h-major


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, P = c["hidden_size"], c["patch_size"]
        self.model_type = c["model_type"]
        self.patch_size = P
        n = (c["image_size"] // P) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        if self.model_type != "vit":
            self.mask_token = nn.Parameter(torch.zeros(1, D))
        self.position_embeddings = nn.Parameter(torch.zeros(1, n + 1, D))
        self.patch_embeddings = PatchEmbeddings(c)
        self.num_register_tokens = c.get("num_register_tokens", 0) if self.model_type == "dinov2_with_registers" else 0
        if self.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, self.num_register_tokens, D))

    def interpolate_pos_encoding(self, npatch, H, W, mode):
        pos = self.position_embeddings
        N = pos.shape[1] - 1
        if npatch == N and H == W:  # skip rule (both repos and HF)
            return pos
        cls_pos = pos[:, :1]
        patch_pos = pos[:, 1:]
        D = pos.shape[-1]
        M = int(math.sqrt(N))
        assert M * M == N
        h0, w0 = H // self.patch_size, W // self.patch_size
        grid = patch_pos.reshape(1, M, M, D).permute(0, 3, 1, 2).to(torch.float32)
        if mode == "size":
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", align_corners=False)
        elif mode == "antialias":
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", align_corners=False, antialias=True)
        elif mode == "offset":
            sf = (float(h0 + 0.1) / M, float(w0 + 0.1) / M)
            grid = F.interpolate(grid, scale_factor=sf, mode="bicubic", align_corners=False)
        else:
            raise ValueError("pos_interp mode %r" % (mode,))
        assert tuple(grid.shape[-2:]) == (h0, w0), (grid.shape, h0, w0)
        grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, h0 * w0, D)
        return torch.cat([cls_pos, grid], dim=1)

    def forward(self, x, bool_masked_pos=None, pos_interp="size"):
        B, _, H, W = x.shape
        e = self.patch_embeddings(x)
        if bool_masked_pos is not None:
            if self.model_type == "vit":
                raise ValueError("mask token: dinov2 models only")
            m = bool_masked_pos.to(torch.bool).unsqueeze(-1)
            e = torch.where(m, self.mask_token.to(e.dtype).unsqueeze(0), e)
        e = torch.cat([self.cls_token.expand(B, -1, -1), e], dim=1)
        e = e + self.interpolate_pos_encoding(e.shape[1] - 1, H, W, pos_interp)
        if self.num_register_tokens:
            e = torch.cat([e[:, :1], self.register_tokens.expand(B, -1, -1), e[:, 1:]], dim=1)
        return e


# ---------------------------------------------------------------------------------------------
# Attention (HF layout: separate query/key/value, head h owns rows h*hs .. h*hs+hs-1)


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.hs = D // self.heads
        b = c.get("qkv_bias", True)
        self.query = nn.Linear(D, D, bias=b)
        self.key = nn.Linear(D, D, bias=b)
        self.value = nn.Linear(D, D, bias=b)

    def forward(self, x):
        B, T, D = x.shape

        def split(t):
            return t.view(B, T, self.heads, self.hs).transpose(1, 2)  # [B, h, T, hs]

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hs)
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, D)
        return ctx, probs


class SelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = SelfAttention(c)
        self.output = SelfOutput(c)

    def forward(self, x):
        ctx, probs = self.attention(x)
        return self.output(ctx), probs


# ---------------------------------------------------------------------------------------------
# DINOv2 block


class LayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.lambda1 = nn.Parameter(c.get("layerscale_value", 1.0) * torch.ones(c["hidden_size"]))

    def forward(self, x):
        return x * self.lambda1


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["hidden_size"]
        F_ = int(D * c.get("mlp_ratio", 4))
        self.fc1 = nn.Linear(D, F_)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(F_, D)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["hidden_size"]
        Fh = swiglu_hidden(D, c.get("mlp_ratio", 4))
        self.weights_in = nn.Linear(D, 2 * Fh)
        self.weights_out = nn.Linear(Fh, D)

    def forward(self, x):
        x1, x2 = self.weights_in(x).chunk(2, dim=-1)  # x1 = first F rows, x2 = last F rows
        return self.weights_out(F.silu(x1) * x2)


class Dinov2Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, eps = c["hidden_size"], c["layer_norm_eps"]
        self.norm1 = nn.LayerNorm(D, eps=eps)
        self.attention = Attention(c)
        self.layer_scale1 = LayerScale(c)
        self.norm2 = nn.LayerNorm(D, eps=eps)
        self.mlp = SwiGLU(c) if c.get("use_swiglu_ffn", False) else Mlp(c)
        self.layer_scale2 = LayerScale(c)

    def forward(self, x):
        a, probs = self.attention(self.norm1(x))
        x = x + self.layer_scale1(a)
        x = x + self.layer_scale2(self.mlp(self.norm2(x)))
        return x, probs


# ---------------------------------------------------------------------------------------------
# HF ViT block (DINO v1 checkpoints on the hub)


class ViTIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.dense(x))


class ViTOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x):
        return self.dense(x)


class ViTLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, eps = c["hidden_size"], c["layer_norm_eps"]
        self.layernorm_before = nn.LayerNorm(D, eps=eps)
        self.attention = Attention(c)
        self.layernorm_after = nn.LayerNorm(D, eps=eps)
        self.intermediate = ViTIntermediate(c)
        self.output = ViTOutput(c)

    def forward(self, x):
        a, probs = self.attention(self.layernorm_before(x))
        x = x + a
        x = x + self.output(self.intermediate(self.layernorm_after(x)))
        return x, probs


# ---------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        L = ViTLayer if c["model_type"] == "vit" else Dinov2Layer
        self.layer = nn.ModuleList([L(c) for _ in range(c["num_hidden_layers"])])


class ViTRef(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = dict(config)
        if c["model_type"] not in DEFAULT_POS_INTERP:
            raise ValueError("model_type %r" % (c["model_type"],))
        c.setdefault("layer_norm_eps", 1e-6 if c["model_type"] != "vit" else 1e-12)
        c.setdefault("num_channels", 3)
        if c["model_type"] == "vit":
            c.setdefault("intermediate_size", 4 * c["hidden_size"])
        self.config = c
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.default_pos_interp = DEFAULT_POS_INTERP[c["model_type"]]

    def forward(self, pixel_values, bool_masked_pos=None, pos_interp=None, keep_hidden=True):
        mode = pos_interp or self.default_pos_interp
        x = self.embeddings(pixel_values, bool_masked_pos, mode)
        hidden = [x] if keep_hidden else None
        probs = None
        for blk in self.encoder.layer:
            x, probs = blk(x)
            if keep_hidden:
                hidden.append(x)
        return {"last_hidden_state": self.layernorm(x), "hidden_states": hidden, "attentions_last": probs}


# ---------------------------------------------------------------------------------------------
# Random weights that make a parity test meaningful, and loading an HF folder


def init_random(model, seed=0):
    """Fills every parameter with random values: activations O(1), attention far from uniform.
    Returns a dict describing the scales used. Deterministic for a given seed and config."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    D = c["hidden_size"]
    scales = {
        "qk_weight_std": "1.6/sqrt(D)",
        "other_linear_weight_std": "0.6/sqrt(fan_in)",
        "patch_proj_weight_std": "0.5/sqrt(3*P*P)",
        "bias_std": 0.02,
        "ln_weight": "1+0.1*N(0,1)",
        "ln_bias_std": 0.02,
        "pos_embed_std": 0.5,
        "cls/register/mask_token_std": 0.5,
        "layerscale": "U(0.1,1)",
    }

    def normal_(p, std):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * std)

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if name.startswith("embeddings.") and leaf in ("cls_token", "mask_token", "register_tokens",
                                                        "position_embeddings"):
            normal_(p, 0.5)
        elif leaf == "lambda1":
            with torch.no_grad():
                p.copy_(0.1 + 0.9 * torch.rand(p.shape, generator=g))
        elif "norm" in parent.rsplit(".", 1)[-1]:  # norm1/norm2/layernorm*/layernorm
            with torch.no_grad():
                if leaf == "weight":
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
        elif leaf == "bias":
            normal_(p, 0.02)
        elif parent.endswith("projection"):
            normal_(p, 0.5 / math.sqrt(p.shape[1] * p.shape[2] * p.shape[3]))
        elif parent.endswith(".query") or parent.endswith(".key"):
            normal_(p, 1.6 / math.sqrt(D))
        elif leaf == "weight" and p.dim() == 2:
            normal_(p, 0.6 / math.sqrt(p.shape[1]))
        else:
            raise RuntimeError("init_random: unhandled parameter %s" % name)
    return scales


def from_pretrained(folder, dtype=torch.float32):
    """Builds a ViTRef from an HF folder (config.json + model.safetensors, read with st.py)."""
    import numpy as np
    import st

    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    m = ViTRef(cfg)
    tensors, _ = st.load(os.path.join(folder, "model.safetensors"))
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError("%s: missing %s unexpected %s" % (folder, missing, unexpected))
    return m.to(dtype).eval()
