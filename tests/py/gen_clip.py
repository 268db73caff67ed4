"""gen_clip.py OUTDIR: PyTorch references for dinoc's CLIP model and contrastive step
(tests/test_clip.c), written from the reference facts (clip_mlm_and_c_peers.md A.2-A.8), not from
Hugging Face code.

OUTDIR/clip/model/   a CLIPModel folder with random weights under the HF names (config.json,
                     model.safetensors with the legacy position_ids buffers a loader must skip,
                     preprocessor_config.json as openai/clip-vit-base-patch32 writes it: int sizes,
                     CLIPFeatureExtractor), at a tiny size: vision D 32, 2 layers, patch 8 on 32 px,
                     QuickGELU; text D 32, 2 layers, context 16, the full 49408-token vocabulary.
OUTDIR/clip/chelsea.png, coffee.png   two scikit-image photos (non-square: shortest-edge resize
                     and center crop matter)
OUTDIR/clip/io.safetensors:
  ids [4, 16] I32         clip.tokenize of TEXTS (from the reference's test vectors, A.6)
  pixels [2, 3, 32, 32]   CLIP preprocessing of the photos (PIL bicubic shortest edge, crop (H-h)//2)
  image_embeds [2, E], text_embeds [4, E]   L2-normalised
  logits_per_image [2, 4]
  step.pixels [4, 3, 32, 32], step.ids [4, 16]   a training batch (random pixels, the 4 texts)
  step.loss [1] F64       symmetric InfoNCE (A.8)
  grad.<HF name>          its gradient for every parameter, logit_scale included
  negstep.ids [8, 16]     the same batch with hard negatives (NegCLIP): the 4 captions, then one
                          negative per pair (its caption's tokens in reverse order)
  negstep.valid [4]       1 where pair j's negative counts (pair 2's is flagged missing: 0)
  negstep.loss [1] F64    image-to-text CE over the 8 texts (a missing negative masked out),
                          text-to-image CE over the 4 captions, halved sum
  neggrad.<HF name>       its gradients
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

DV, LV, NHV, FFV, P, IMG = 32, 2, 2, 64, 8, 32
DT, LT, NHT, FFT, CTX, VOCAB = 32, 2, 4, 64, 16, 49408
E = 24
SOT, EOT = 49406, 49407
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# texts and their BPE ids (reference A.6 test vectors)
TEXTS = [("a photo of a cat", [320, 1125, 539, 320, 2368]), ("a diagram", [320, 22697]),
         ("Hello, World!!", [3306, 267, 1002, 748]), ("2025", [273, 271, 273, 276])]


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def names():
    n = [("text_model.embeddings.token_embedding.weight", (VOCAB, DT)),
         ("text_model.embeddings.position_embedding.weight", (CTX, DT)),
         ("vision_model.embeddings.class_embedding", (DV,)),
         ("vision_model.embeddings.patch_embedding.weight", (DV, 3, P, P)),
         ("vision_model.embeddings.position_embedding.weight", ((IMG // P) ** 2 + 1, DV)),
         ("vision_model.pre_layrnorm.weight", (DV,)), ("vision_model.pre_layrnorm.bias", (DV,)),
         ("vision_model.post_layernorm.weight", (DV,)), ("vision_model.post_layernorm.bias", (DV,)),
         ("text_model.final_layer_norm.weight", (DT,)), ("text_model.final_layer_norm.bias", (DT,)),
         ("text_projection.weight", (E, DT)), ("visual_projection.weight", (E, DV))]
    for tower, D, L, FF in [("text_model", DT, LT, FFT), ("vision_model", DV, LV, FFV)]:
        for l in range(L):
            pre = f"{tower}.encoder.layers.{l}."
            for x in ["q_proj", "k_proj", "v_proj", "out_proj"]:
                n += [(pre + f"self_attn.{x}.weight", (D, D)), (pre + f"self_attn.{x}.bias", (D,))]
            n += [(pre + "layer_norm1.weight", (D,)), (pre + "layer_norm1.bias", (D,)),
                  (pre + "mlp.fc1.weight", (FF, D)), (pre + "mlp.fc1.bias", (FF,)),
                  (pre + "mlp.fc2.weight", (D, FF)), (pre + "mlp.fc2.bias", (D,)),
                  (pre + "layer_norm2.weight", (D,)), (pre + "layer_norm2.bias", (D,))]
    return n


def rand_params(g):
    """Norm gains around 1, the rest N(0, 0.2^2)-ish so that every path carries signal."""
    p = {}
    for name, shape in names():
        if ("layer_norm" in name or "layrnorm" in name) and name.endswith("weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.2 * torch.randn(shape, generator=g)
        p[name] = t.float().requires_grad_(True)
    p["logit_scale"] = torch.tensor(2.3, requires_grad=True)
    return p


def block(p, pre, x, D, NH, mask):
    """Pre-LN residual block with separate q/k/v Linears, QuickGELU MLP."""
    def lin(n, h):
        return h @ p[pre + n + ".weight"].t() + p[pre + n + ".bias"]
    B, T, _ = x.shape
    hs = D // NH
    h = F.layer_norm(x, (D,), p[pre + "layer_norm1.weight"], p[pre + "layer_norm1.bias"], 1e-5)
    q, k, v = (lin("self_attn." + n, h).view(B, T, NH, hs).transpose(1, 2) for n in ["q_proj", "k_proj", "v_proj"])
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
    x = x + lin("self_attn.out_proj", o)
    h = F.layer_norm(x, (D,), p[pre + "layer_norm2.weight"], p[pre + "layer_norm2.bias"], 1e-5)
    return x + lin("mlp.fc2", quick_gelu(lin("mlp.fc1", h)))


def encode_image(p, px):
    """A.2: conv (no bias) -> [CLS, patches] + pos -> ln_pre -> blocks -> ln_post(CLS) -> proj."""
    B = px.shape[0]
    e = F.conv2d(px, p["vision_model.embeddings.patch_embedding.weight"], stride=P)  # [B, D, g, g]
    e = e.flatten(2).transpose(1, 2)
    cls = p["vision_model.embeddings.class_embedding"].expand(B, 1, DV)
    x = torch.cat([cls, e], 1) + p["vision_model.embeddings.position_embedding.weight"][None]
    x = F.layer_norm(x, (DV,), p["vision_model.pre_layrnorm.weight"], p["vision_model.pre_layrnorm.bias"], 1e-5)
    for l in range(LV):
        x = block(p, f"vision_model.encoder.layers.{l}.", x, DV, NHV, None)
    c = F.layer_norm(x[:, 0], (DV,), p["vision_model.post_layernorm.weight"],
                     p["vision_model.post_layernorm.bias"], 1e-5)
    return c @ p["visual_projection.weight"].t()


def encode_text(p, ids):
    """A.3: tokens + pos -> causal blocks -> final LN -> row of the first EOT -> projection."""
    B, T = ids.shape
    x = p["text_model.embeddings.token_embedding.weight"][ids.long()] + \
        p["text_model.embeddings.position_embedding.weight"][:T][None]
    t = torch.arange(T)
    mask = (t[:, None] >= t[None, :])[None, None]
    for l in range(LT):
        x = block(p, f"text_model.encoder.layers.{l}.", x, DT, NHT, mask)
    h = F.layer_norm(x, (DT,), p["text_model.final_layer_norm.weight"], p["text_model.final_layer_norm.bias"], 1e-5)
    idx = (ids == EOT).int().argmax(dim=-1)
    return h[torch.arange(B), idx] @ p["text_projection.weight"].t()


def clip_logits(p, px, ids):
    i = encode_image(p, px)
    t = encode_text(p, ids)
    i = i / i.norm(dim=-1, keepdim=True)
    t = t / t.norm(dim=-1, keepdim=True)
    return i, t, p["logit_scale"].exp() * i @ t.t()


def tokenize():
    ids = torch.zeros(len(TEXTS), CTX, dtype=torch.int32)
    for b, (_, toks) in enumerate(TEXTS):
        row = [SOT] + toks + [EOT]
        ids[b, :len(row)] = torch.tensor(row)
    return ids


def preprocess(img):
    """A.7 as HF CLIPImageProcessor: PIL bicubic shortest edge to IMG (long side int(IMG*l/s)),
    center crop with offsets (H-h)//2, /255, OpenAI mean/std."""
    w, h = img.size
    if w <= h:
        nw, nh = IMG, int(IMG * h / w)
    else:
        nw, nh = int(IMG * w / h), IMG
    r = np.asarray(img.resize((nw, nh), Image.BICUBIC)).astype(np.float32)
    top, left = (nh - IMG) // 2, (nw - IMG) // 2
    r = r[top:top + IMG, left:left + IMG] / 255.0
    r = (r - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(r.transpose(2, 0, 1).astype(np.float32).copy())


def main(out):
    from skimage import data
    d = os.path.join(out, "clip")
    md = os.path.join(d, "model")
    os.makedirs(md, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    p = rand_params(g)
    tensors = {k: v.detach() for k, v in p.items()}
    tensors["text_model.embeddings.position_ids"] = np.arange(CTX, dtype=np.int64)[None]
    tensors["vision_model.embeddings.position_ids"] = np.arange((IMG // P) ** 2 + 1, dtype=np.int64)[None]
    st.save(os.path.join(md, "model.safetensors"), tensors, {"format": "pt"})
    cfg = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": E,
           "logit_scale_init_value": 2.6592, "initializer_factor": 1.0,
           "text_config": {"vocab_size": VOCAB, "hidden_size": DT, "intermediate_size": FFT,
                           "num_hidden_layers": LT, "num_attention_heads": NHT, "max_position_embeddings": CTX,
                           "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": SOT,
                           "eos_token_id": EOT, "pad_token_id": 1, "projection_dim": E},
           "vision_config": {"hidden_size": DV, "intermediate_size": FFV, "num_hidden_layers": LV,
                             "num_attention_heads": NHV, "image_size": IMG, "patch_size": P,
                             "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": E,
                             "dropout": 0.0}}
    with open(os.path.join(md, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    ppc = {"crop_size": IMG, "do_center_crop": True, "do_normalize": True, "do_resize": True,
           "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(MEAN), "image_std": list(STD),
           "resample": 3, "size": IMG}
    with open(os.path.join(md, "preprocessor_config.json"), "w") as f:
        json.dump(ppc, f, indent=2)

    photos = [("chelsea", data.chelsea()), ("coffee", data.coffee())]
    imgs = []
    for name, a in photos:
        im = Image.fromarray(a)
        im.save(os.path.join(d, name + ".png"))
        imgs.append(preprocess(im))
    px = torch.stack(imgs)
    ids = tokenize()
    with torch.no_grad():
        ie, te, logits = clip_logits(p, px, ids)
    io = {"ids": ids.numpy(), "pixels": px, "image_embeds": ie, "text_embeds": te, "logits_per_image": logits}

    # one training step: symmetric InfoNCE on 4 pairs (A.8), gradients of every parameter
    spx = torch.randn(len(TEXTS), 3, IMG, IMG, generator=g)
    _, _, lg = clip_logits(p, spx, ids)
    y = torch.arange(len(TEXTS))
    loss = 0.5 * (F.cross_entropy(lg.double(), y) + F.cross_entropy(lg.t().double(), y))
    loss.backward()
    io["step.pixels"], io["step.ids"], io["step.loss"] = spx, ids.numpy(), loss.detach().reshape(1)
    for k, v in p.items():
        io["grad." + k] = v.grad.detach().reshape(v.shape)
        v.grad = None

    # the same batch with one hard-negative caption per pair (clip_loss.c, NegCLIP)
    nids = torch.zeros_like(ids)
    for b, (_, toks) in enumerate(TEXTS):
        row = [SOT] + toks[::-1] + [EOT]
        nids[b, :len(row)] = torch.tensor(row)
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0])
    i = encode_image(p, spx)
    t = encode_text(p, torch.cat([ids, nids]))
    i = i / i.norm(dim=-1, keepdim=True)
    t = t / t.norm(dim=-1, keepdim=True)
    lg = p["logit_scale"].exp() * i @ t.t()
    keep = torch.cat([torch.ones(len(TEXTS)), valid]).bool()
    lg = lg.masked_fill(~keep[None], float("-inf"))
    loss = 0.5 * (F.cross_entropy(lg.double(), y) + F.cross_entropy(lg[:, :len(TEXTS)].t().double(), y))
    loss.backward()
    io["negstep.ids"], io["negstep.valid"] = torch.cat([ids, nids]).numpy(), valid
    io["negstep.loss"] = loss.detach().reshape(1)
    for k, v in p.items():
        io["neggrad." + k] = v.grad.detach().reshape(v.shape)
        v.grad = None

    # caption groups (clip_loss.c): pairs 0 and 2 declared equal captions; each row's target is
    # uniform over its group, in both directions; alone ("grp") and with the negatives ("grpneg")
    grp = torch.tensor([0, 1, 0, 2])
    tgt = (grp[:, None] == grp[None, :]).double()
    tgt = tgt / tgt.sum(1, keepdim=True)
    for tag, neg in (("grp", False), ("grpneg", True)):
        i = encode_image(p, spx)
        t = encode_text(p, torch.cat([ids, nids]) if neg else ids)
        i = i / i.norm(dim=-1, keepdim=True)
        t = t / t.norm(dim=-1, keepdim=True)
        lg = p["logit_scale"].exp() * i @ t.t()
        if neg:
            lg = lg.masked_fill(~keep[None], float("-inf"))
        ti = torch.cat([tgt, torch.zeros(len(TEXTS), len(TEXTS))], 1) if neg else tgt
        li = -(ti * torch.log_softmax(lg.double(), 1).nan_to_num(neginf=0.0)).sum(1).mean()
        lt = -(tgt * torch.log_softmax(lg[:, :len(TEXTS)].t().double(), 1)).sum(1).mean()
        loss = 0.5 * (li + lt)
        loss.backward()
        io[tag + "step.loss"] = loss.detach().reshape(1)
        for k, v in p.items():
            io[tag + "grad." + k] = v.grad.detach().reshape(v.shape)
            v.grad = None
    io["grpstep.groups"] = grp.float()
    st.save(os.path.join(d, "io.safetensors"), io)


if __name__ == "__main__":
    main(sys.argv[1])
