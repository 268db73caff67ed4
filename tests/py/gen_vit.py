"""gen_vit.py OUTDIR: writes the ViT parity fixtures for dinoc under OUTDIR/vit/.

For each model OUTDIR/vit/<name>/ is a Hugging Face model folder (config.json, model.safetensors,
preprocessor_config.json) with random weights (fixed seeds; vit_ref.init_random), plus reference
outputs computed with tests/py/vit_ref.py:

  ref_<H>x<W>.safetensors          the model's HF default position interpolation
  ref_<H>x<W>_<mode>.safetensors   another mode ("offset": original DINO / DINOv2 non-reg repos)
  ref_<H>x<W>_mask.safetensors     dinov2 models: with "bool_masked_pos" [B, Np] U8 (default mode)

each holding "pixel_values" [B,3,H,W], "last_hidden_state" [B,T,D], "hidden_states.K" [B,T,D]
(K = 0..depth, 0 = embedding output, pre-final-norm), "attentions.last" [B,heads,T,T], and metadata
{"model", "pos_interp", "H", "W", "B", "masked"}. B = 2, except B = 1 at the full-grid sizes
(518x518, 480x480) to keep the fixture size down.

OUTDIR/vit/e2e.safetensors: dinov2_s on skimage astronaut.png + chelsea.png preprocessed the HF
BitImageProcessor way with PIL -> "pixel_values" [2,3,224,224], "last_hidden_state" [2,257,384].
OUTDIR/vit/index.json lists every fixture file.

Run with /usr/bin/python3 (torch). Uses 2 threads, float32.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
import vit_ref  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def dinov2_config(D, depth, heads, swiglu=False, registers=0):
    c = {
        "architectures": ["Dinov2Model"],
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": D,
        "image_size": 518,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "layerscale_value": 1.0,
        "mlp_ratio": 4,
        "model_type": "dinov2",
        "num_attention_heads": heads,
        "num_channels": 3,
        "num_hidden_layers": depth,
        "patch_size": 14,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.47.0",
        "use_swiglu_ffn": swiglu,
    }
    if registers:
        c["architectures"] = ["Dinov2WithRegistersModel"]
        c["model_type"] = "dinov2_with_registers"
        c["num_register_tokens"] = registers
        c["apply_layernorm"] = True
        c["reshape_hidden_states"] = True
        c["out_features"] = ["stage%d" % depth]
        c["out_indices"] = [depth]
        c["stage_names"] = ["stem"] + ["stage%d" % i for i in range(1, depth + 1)]
        c["transformers_version"] = "4.48.0.dev0"  # the model type first shipped in 4.48
    return dict(sorted(c.items()))


def vit_config():
    return {
        "architectures": ["ViTModel"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 16,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 384,
        "image_size": 224,
        "initializer_range": 0.02,
        "intermediate_size": 1536,
        "layer_norm_eps": 1e-12,
        "model_type": "vit",
        "num_attention_heads": 6,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 16,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.47.0",
    }


BIT_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": IMAGENET_MEAN,
    "image_processor_type": "BitImageProcessor",
    "image_std": IMAGENET_STD,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}

VIT_LEGACY_PREPROCESSOR = {
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": IMAGENET_MEAN,
    "image_std": IMAGENET_STD,
    "resample": 2,
    "size": 224,
}

# name, config, preprocessor, seed, [(H, W, mode or None = default, masked)]
MODELS = [
    ("dinov2_s", dinov2_config(384, 12, 6), BIT_PREPROCESSOR, 1,
     [(224, 224, None, False), (518, 518, None, False), (224, 336, None, False),
      (224, 224, "offset", False), (224, 336, "offset", False), (224, 224, None, True)]),
    ("dinov2_s_reg", dinov2_config(384, 12, 6, registers=4), BIT_PREPROCESSOR, 2,
     [(224, 224, None, False), (518, 518, None, False), (224, 336, None, False), (224, 224, None, True)]),
    ("dinov2_giant_style", dinov2_config(1536, 2, 24, swiglu=True), BIT_PREPROCESSOR, 3,
     [(224, 224, None, False), (224, 336, None, False), (224, 224, None, True)]),
    ("dino_vits16", vit_config(), VIT_LEGACY_PREPROCESSOR, 4,
     [(224, 224, None, False), (480, 480, None, False), (224, 336, None, False),
      (224, 224, "offset", False), (224, 336, "offset", False)]),
]

FULL_GRID_BATCH = 1  # B at the large sizes (518x518, 480x480)
BATCH = 2


def log(msg):
    print(msg, flush=True)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def run_ref(model, x, mask, mode):
    with torch.no_grad():
        out = model(x, bool_masked_pos=mask, pos_interp=mode)
    t = {"pixel_values": x, "last_hidden_state": out["last_hidden_state"],
         "attentions.last": out["attentions_last"]}
    for k, h in enumerate(out["hidden_states"]):
        t["hidden_states.%d" % k] = h
    if mask is not None:
        t["bool_masked_pos"] = mask.to(torch.uint8)
    return t, out


def shapes(t):
    return ", ".join("%s %s" % (k, list(v.shape)) for k, v in sorted(t.items(), key=lambda kv: kv[0]))


# ---------------------------------------------------------------------------------------------
# Independent cross-check: the original repos' math (fused qkv [3D, D], q * scale, fc1/fc2 or
# w12/w3 names mapped back), written functionally from the reference facts.


def original_forward(model, x, mode, mask=None):
    c = model.config
    sd = {k: v for k, v in model.state_dict().items()}
    D, P, NH = c["hidden_size"], c["patch_size"], c["num_attention_heads"]
    hd = D // NH
    eps = c["layer_norm_eps"]
    vit = c["model_type"] == "vit"
    B, _, H, W = x.shape
    e = F.conv2d(x, sd["embeddings.patch_embeddings.projection.weight"],
                 sd["embeddings.patch_embeddings.projection.bias"], stride=P)
    h0, w0 = e.shape[-2:]
    e = e.flatten(2).transpose(1, 2)
    if mask is not None:
        e = torch.where(mask.bool()[..., None], sd["embeddings.mask_token"][None], e)
    pos = sd["embeddings.position_embeddings"]
    N = pos.shape[1] - 1
    M = int(math.sqrt(N))
    if not (h0 * w0 == N and H == W):
        g = pos[:, 1:].reshape(1, M, M, D).permute(0, 3, 1, 2)
        if mode == "offset":
            g = F.interpolate(g, scale_factor=((h0 + 0.1) / M, (w0 + 0.1) / M), mode="bicubic")
        else:
            g = F.interpolate(g, size=(h0, w0), mode="bicubic", antialias=(mode == "antialias"))
        pos = torch.cat([pos[:, :1], g.permute(0, 2, 3, 1).reshape(1, -1, D)], 1)
    t = torch.cat([sd["embeddings.cls_token"].expand(B, -1, -1), e], 1) + pos
    if "embeddings.register_tokens" in sd:
        t = torch.cat([t[:, :1], sd["embeddings.register_tokens"].expand(B, -1, -1), t[:, 1:]], 1)
    T = t.shape[1]
    for i in range(c["num_hidden_layers"]):
        p = "encoder.layer.%d." % i
        n1 = "layernorm_before" if vit else "norm1"
        n2 = "layernorm_after" if vit else "norm2"
        y = F.layer_norm(t, (D,), sd[p + n1 + ".weight"], sd[p + n1 + ".bias"], eps)
        a = p + "attention.attention."
        wqkv = torch.cat([sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]], 0)
        bqkv = torch.cat([sd[a + "query.bias"], sd[a + "key.bias"], sd[a + "value.bias"]], 0)
        qkv = F.linear(y, wqkv, bqkv).reshape(B, T, 3, NH, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * hd ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(B, T, D)
        y = F.linear(y, sd[p + "attention.output.dense.weight"], sd[p + "attention.output.dense.bias"])
        if not vit:
            y = y * sd[p + "layer_scale1.lambda1"]
        t = t + y
        y = F.layer_norm(t, (D,), sd[p + n2 + ".weight"], sd[p + n2 + ".bias"], eps)
        if vit:
            y = F.linear(F.gelu(F.linear(y, sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"])),
                         sd[p + "output.dense.weight"], sd[p + "output.dense.bias"])
        elif p + "mlp.weights_in.weight" in sd:
            y = F.linear(y, sd[p + "mlp.weights_in.weight"], sd[p + "mlp.weights_in.bias"])
            Fh = y.shape[-1] // 2
            y = F.linear(F.silu(y[..., :Fh]) * y[..., Fh:], sd[p + "mlp.weights_out.weight"],
                         sd[p + "mlp.weights_out.bias"])
        else:
            y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        if not vit:
            y = y * sd[p + "layer_scale2.lambda1"]
        t = t + y
    return F.layer_norm(t, (D,), sd["layernorm.weight"], sd["layernorm.bias"], eps), attn


# ---------------------------------------------------------------------------------------------
# HF BitImageProcessor preprocessing with PIL


def preprocess_bit(path):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    short, long_ = (w, h) if w <= h else (h, w)
    new_short, new_long = 256, int(256 * long_ / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    im = im.resize((nw, nh), resample=Image.BICUBIC)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    a = np.asarray(im).astype(np.float32) / np.float32(255.0)
    a = (a - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)), (w, h), (nw, nh)


# ---------------------------------------------------------------------------------------------


def bf(t):
    return t.to(torch.bfloat16).to(torch.float32)


class Bf16Products:
    """Within it, every nn.Linear and nn.Conv2d (the ViT's five products) rounds its input and weight
    to bfloat16 and multiplies them in fp32 with an fp32 bias: dinoc's --precision bf16."""

    def __enter__(self):
        self.saved = nn.Linear.forward, nn.Conv2d.forward
        nn.Linear.forward = lambda mod, x: F.linear(bf(x), bf(mod.weight), mod.bias)
        nn.Conv2d.forward = lambda mod, x: mod._conv_forward(bf(x), bf(mod.weight), mod.bias)
        return self

    def __exit__(self, *exc):
        nn.Linear.forward, nn.Conv2d.forward = self.saved


def write_bf16(root, ms, mg, x_real):
    """OUTDIR/vit/bf16.safetensors: the bf16 mode's references.
    round_in / round_out: torch's float32 -> bfloat16 -> float32 on specials and random values;
    s_pixel_values: the e2e images; s_fp32, s_bf16, s_autocast: dinov2_s's last_hidden_state in
    fp32, with bf16 products (Bf16Products) and under torch.autocast("cpu", bfloat16) (real
    PyTorch bf16: also rounds attention's products and each product's output); s_fp32_block0,
    s_bf16_block0: the output of its first block (before the final norm);
    g_pixel_values [1,3,224,224], g_fp32, g_bf16: the same for dinov2_giant_style (SwiGLU)."""
    f32 = np.float32
    specials = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38,
                         1e-40, -1e-40, 1.17549435e-38, 65504.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                         1.0 + 2.0 ** -8 + 2.0 ** -20, 1.0 + 2.0 ** -8 - 2.0 ** -20, 3.3961776e38,
                         -1.0 - 2.0 ** -8, 0.1, 1.0 / 3.0], dtype=f32)
    g = torch.Generator().manual_seed(11)
    rnd = torch.randn(4096, generator=g) * torch.exp(torch.randn(4096, generator=g) * 8)
    rin = torch.cat([torch.from_numpy(specials), rnd.float()])
    rout = bf(rin)
    t = {"round_in": rin, "round_out": rout}
    with torch.no_grad():
        t["s_pixel_values"] = x_real
        o = ms(x_real)
        t["s_fp32"], t["s_fp32_block0"] = o["last_hidden_state"], o["hidden_states"][1]
        with Bf16Products():
            o = ms(x_real)
            t["s_bf16"], t["s_bf16_block0"] = o["last_hidden_state"], o["hidden_states"][1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t["s_autocast"] = ms(x_real)["last_hidden_state"].float()
        xg = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(12))
        t["g_pixel_values"] = xg
        t["g_fp32"] = mg(xg)["last_hidden_state"]
        with Bf16Products():
            t["g_bf16"] = mg(xg)["last_hidden_state"]
    fp = os.path.join(root, "bf16.safetensors")
    st.save(fp, t, {"what": "bf16 references (gen_vit.py write_bf16)"})
    e = lambda a, b: float((t[a] - t[b]).abs().max())
    log("wrote %s: dinov2_s max |bf16 products - fp32| %.3g, |autocast - fp32| %.3g, |autocast - bf16 "
        "products| %.3g; giant-style |bf16 - fp32| %.3g" % (fp, e("s_bf16", "s_fp32"), e("s_autocast", "s_fp32"),
                                                             e("s_autocast", "s_bf16"), e("g_bf16", "g_fp32")))
    return os.path.getsize(fp)


def main():
    if len(sys.argv) != 2:
        print("usage: gen_vit.py OUTDIR", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    root = os.path.join(sys.argv[1], "vit")
    os.makedirs(root, exist_ok=True)
    index = []
    total = 0
    models = {}

    for name, cfg, pre, seed, cases in MODELS:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        m = vit_ref.ViTRef(cfg).eval()
        vit_ref.init_random(m, seed=seed)
        models[name] = m
        write_json(os.path.join(d, "config.json"), cfg)
        write_json(os.path.join(d, "preprocessor_config.json"), pre)
        sd = m.state_dict()
        p = os.path.join(d, "model.safetensors")
        st.save(p, sd, {"format": "pt"})
        total += os.path.getsize(p)
        log("wrote %s (%d tensors, %.1f MB)" % (p, len(sd), os.path.getsize(p) / 1e6))

        P = cfg["patch_size"]
        default = m.default_pos_interp
        for (H, W, mode, masked) in cases:
            g = torch.Generator().manual_seed(1000 * seed + H + 7 * W + (1 if masked else 0)
                                              + (3 if mode else 0))
            B = FULL_GRID_BATCH if H * W >= 480 * 480 else BATCH
            x = torch.randn(B, 3, H, W, generator=g)
            mask = None
            if masked:
                mask = (torch.rand(B, (H // P) * (W // P), generator=g) < 0.3)
            use = mode or default
            t, out = run_ref(m, x, mask, use)
            suffix = ("_" + mode if mode else "") + ("_mask" if masked else "")
            fn = "ref_%dx%d%s.safetensors" % (H, W, suffix)
            meta = {"model": name, "pos_interp": use, "H": H, "W": W, "B": B, "masked": int(masked)}
            fp = os.path.join(d, fn)
            st.save(fp, t, meta)
            total += os.path.getsize(fp)
            index.append(dict(meta, file="%s/%s" % (name, fn)))
            a = out["attentions_last"]
            ent = float(-(a.clamp_min(1e-30).log() * a).sum(-1).mean())
            log("wrote %s (%.1f MB) %s | |h_last| std %.2f, attn max-prob mean %.2f, entropy %.2f nats (uniform %.2f)"
                % (fp, os.path.getsize(fp) / 1e6, shapes(t), float(out["hidden_states"][-1].std()),
                   float(a.max(-1).values.mean()), ent, math.log(a.shape[-1])))

    # ---- self-checks
    ms = models["dinov2_s"]
    with torch.no_grad():
        x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(5))
        a = ms(x, pos_interp="size")["last_hidden_state"]
        b = ms(x, pos_interp="offset")["last_hidden_state"]
        c = ms(x, pos_interp="antialias")["last_hidden_state"]
        assert torch.equal(a, b) and torch.equal(a, c), "skip rule: 518x518 must not interpolate"
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(6))
        a = ms(x, pos_interp="size")["last_hidden_state"]
        b = ms(x, pos_interp="offset")["last_hidden_state"]
        c = ms(x, pos_interp="antialias")["last_hidden_state"]
        assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, c, atol=1e-3)
        log("self-check: 518x518 size/offset/antialias identical (skip rule); 224x224 differ "
            "(size vs offset max |d| %.3g, size vs antialias %.3g)"
            % (float((a - b).abs().max()), float((a - c).abs().max())))

        mr = models["dinov2_s_reg"]
        x = torch.randn(2, 3, 224, 336, generator=torch.Generator().manual_seed(7))
        h0 = mr(x)["hidden_states"][0]
        emb = mr.embeddings
        pos = emb.interpolate_pos_encoding(16 * 24, 224, 336, "antialias")
        patches = emb.patch_embeddings(x) + pos[:, 1:]
        assert h0.shape == (2, 1 + 4 + 16 * 24, 384)
        assert torch.allclose(h0[:, 0], (emb.cls_token + pos[:, :1])[:, 0].expand(2, -1))
        assert torch.equal(h0[:, 1:5], emb.register_tokens.expand(2, -1, -1))
        assert torch.allclose(h0[:, 5:], patches)
        log("self-check: reg token layout [CLS, 4 registers (no pos-embed), 384 patches] ok")

        for name, mode, (H, W), masked in [("dinov2_s", "offset", (224, 336), False),
                                           ("dinov2_s", "size", (224, 224), True),
                                           ("dinov2_s_reg", "antialias", (224, 336), False),
                                           ("dinov2_giant_style", "size", (224, 336), False),
                                           ("dino_vits16", "offset", (224, 336), False),
                                           ("dino_vits16", "size", (480, 480), False)]:
            m = models[name]
            P = m.config["patch_size"]
            x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(8))
            mask = (torch.rand(1, (H // P) * (W // P), generator=torch.Generator().manual_seed(9)) < 0.3) \
                if masked else None
            o = m(x, bool_masked_pos=mask, pos_interp=mode)
            y, attn = original_forward(m, x, mode, mask)
            dy = float((o["last_hidden_state"] - y).abs().max())
            da = float((o["attentions_last"] - attn).abs().max())
            assert dy < 1e-3 and da < 1e-4, (name, mode, dy, da)
            log("self-check: %s %dx%d %s%s matches fused-qkv original-style forward (max |d| %.2g, attn %.2g)"
                % (name, H, W, mode, " masked" if masked else "", dy, da))

    # ---- e2e: real images through the HF preprocessing
    from skimage import data_dir
    paths = [os.path.join(data_dir, "astronaut.png"), os.path.join(data_dir, "chelsea.png")]
    arrs, info = [], []
    for pth in paths:
        a, orig, resized = preprocess_bit(pth)
        arrs.append(a)
        info.append("%s %dx%d->%dx%d" % (os.path.basename(pth), orig[0], orig[1], resized[0], resized[1]))
    x = torch.from_numpy(np.stack(arrs))
    with torch.no_grad():
        y = ms(x)["last_hidden_state"]
    fp = os.path.join(root, "e2e.safetensors")
    meta = {"model": "dinov2_s", "pos_interp": "size", "images": ";".join(paths), "skimage_data_dir": data_dir,
            "preprocess": "PIL RGB, resize shortest edge 256 BICUBIC (long=int(256*long/short)), center crop "
                          "224 top=(h-224)//2 left=(w-224)//2, float32 /255, (x-mean)/std float32",
            "sizes": "; ".join(info)}
    st.save(fp, {"pixel_values": x, "last_hidden_state": y}, meta)
    total += os.path.getsize(fp)
    index.append({"model": "dinov2_s", "pos_interp": "size", "H": 224, "W": 224, "B": 2, "masked": 0,
                  "file": "e2e.safetensors", "images": paths})
    log("wrote %s pixel_values %s last_hidden_state %s (%s)" % (fp, list(x.shape), list(y.shape), "; ".join(info)))

    total += write_bf16(root, ms, models["dinov2_giant_style"], x)

    write_json(os.path.join(root, "index.json"), index)
    log("wrote %s (%d fixture files); total %.0f MB in %.1f s"
        % (os.path.join(root, "index.json"), len(index), total / 1e6, time.perf_counter() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
