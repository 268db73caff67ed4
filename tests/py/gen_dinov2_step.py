"""gen_dinov2_step.py OUTDIR: PyTorch reference for one DINOv2 step (tests/test_dinov2.c; the issue's
"one full DINOv2 step on fixed crops and masks").

Written from the reference facts (dino_dinov2.md 3.1-3.3), as SSLMetaArch.forward_backward does a
step on one process: teacher (no mask) on the 2 global crops; student on the masked global crops
(mask token) and the local crops; DINOHead (weight_g trainable, filled with 1) on CLS tokens and on
the masked patch tokens (shared head, or a separate iBOT head); teacher targets by softmax centering
or Sinkhorn-Knopp (3 iterations); DINO loss (locals against both teachers, globals against the
other global, / (2 + 2 nL)), KoLeo x 0.1 on the student's global CLS per crop, iBOT loss (weights
1 / masked count per image, / 2B); clip_grad_norm_ per submodule; AdamW with DINOv2's per-parameter
lr multipliers (layer decay, patch embedding x 0.2) and wd multipliers, the last layer at
last_layer_lr; EMA teacher; center EMAs.

Backbone: vit_ref.ViTRef as an HF Dinov2 (hidden 32, 2 layers, 2 heads, mlp 4, patch 4, 3 channels,
image 16, LayerScale, mask token); position embeddings resized "size"-style for the 8 px local crops.
Masks come from the collate of gen_dinov2.py (Python's random, seeded).

Cases (OUTDIR/dinov2/step_<case>/): shared_center: shared head, centering, last layer frozen
(last_layer_lr 0), clip 0.5 (clips); separate_sk: separate iBOT head, Sinkhorn-Knopp, 2 registers,
clip 3.0. Each holds model/ (config.json + model.safetensors: the student before the step) and
step.safetensors:
  x [B, item], masks [2B, Np] U8, teacher.<HF name>, shead.<n>, thead.<n>, sihead.<n>, tihead.<n>,
  center [K], icenter [Ki], sched [5] F64 (lr, last_layer_lr, wd, momentum, teacher_temp),
  cfg [20] F64 (see CFG_KEYS), loss [4] F64 (total, dino, ibot, koleo),
  grad.<HF name>, grad.dino_head.<n>, grad.ibot_head.<n> (after clipping),
  after.student.<..>, after.teacher.<..>, after.shead/thead/sihead/tihead.<..>, after.center, after.icenter
Run with Debian's /usr/bin/python3 (torch 1.13)."""
import copy
import json
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_dinov2 as ref  # noqa: E402
import st  # noqa: E402
import vit_ref  # noqa: E402

torch.set_num_threads(1)

NG, NL, B, G, L = 2, 2, 4, 16, 8
K, HID, BN, LAYERS, KI = 40, 48, 16, 3, 24
STUDENT_TEMP, CENTER_MOM, LAYER_DECAY, PE_MULT = 0.1, 0.9, 0.9, 0.2
MASK_PROB, RMIN, RMAX, KOLEO_W = 0.5, 0.1, 0.5, 0.1
CFG_KEYS = ["nG", "nL", "B", "G", "L", "K", "hidden", "bottleneck", "layers", "Ki", "separate", "sinkhorn",
            "clip", "student_temp", "center_momentum", "registers", "layer_decay", "patch_embed_lr_mult",
            "mask_prob", "koleo_weight"]


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, nlayers, hidden, bottleneck):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, bottleneck))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def randomize(module, g, scale=1.0):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("weight_v"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def clone_head(head, k):
    """A copy of a weight-normed head (deepcopy cannot copy weight_norm's derived weight)."""
    h = DINOHead(head.mlp[0].in_features, k, LAYERS, HID, BN)
    h.load_state_dict(head.state_dict())
    return h


def backbone_mults(name, depth):
    """DINOv2's get_params_groups_with_decay on HF names: (lr_mult, wd_mult)."""
    if name.startswith("embeddings."):
        lid = 0
    elif name.startswith("encoder.layer."):
        lid = int(name.split(".")[2]) + 1
    else:
        lid = depth + 1
    lr = LAYER_DECAY ** (depth + 1 - lid)
    if "patch_embeddings" in name:
        lr *= PE_MULT
    wd = 0.0 if name.endswith(".bias") or "norm" in name or "lambda1" in name else 1.0
    return lr, wd, False


def one_case(out, name, seed, separate, sinkhorn, registers, clip, freeze):
    root = os.path.join(out, "dinov2", "step_" + name)
    mdir = os.path.join(root, "model")
    os.makedirs(mdir, exist_ok=True)
    cfg = {"architectures": ["Dinov2WithRegistersModel" if registers else "Dinov2Model"],
           "model_type": "dinov2_with_registers" if registers else "dinov2", "hidden_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 4, "hidden_act": "gelu",
           "layer_norm_eps": 1e-6, "image_size": G, "patch_size": 4, "num_channels": 3, "qkv_bias": True,
           "layerscale_value": 1.0, "use_swiglu_ffn": False}
    if registers:
        cfg["num_register_tokens"] = registers
    g = torch.Generator().manual_seed(seed)
    D, depth, R, Np = cfg["hidden_size"], cfg["num_hidden_layers"], registers, (G // 4) ** 2
    backbone = vit_ref.ViTRef(cfg)
    vit_ref.init_random(backbone, seed=seed + 1)
    dhead = DINOHead(D, K, LAYERS, HID, BN)
    randomize(dhead, g)
    ihead = DINOHead(D, KI, LAYERS, HID, BN) if separate else dhead
    if separate:
        randomize(ihead, g)
    t_backbone, t_dhead = copy.deepcopy(backbone), clone_head(dhead, K)
    t_ihead = clone_head(ihead, KI) if separate else t_dhead
    teacher_mods = [t_backbone, t_dhead] + ([t_ihead] if separate else [])
    with torch.no_grad():
        for mod in teacher_mods:
            for p in mod.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
                p.requires_grad = False
    Kc = KI if separate else K
    center = 0.3 * torch.randn(1, K, generator=g)
    icenter = 0.3 * torch.randn(1, Kc, generator=g)
    C = cfg["num_channels"]
    globals_ = [torch.randn(B, C, G, G, generator=g) for _ in range(NG)]
    locals_ = [torch.randn(B, C, L, L, generator=g) for _ in range(NL)]
    x = torch.stack([torch.cat([c[b].reshape(-1) for c in globals_ + locals_]) for b in range(B)])
    random.seed(seed)
    mg = ref.MaskingGenerator(G // 4, G // 4, 0.5 * G // 4 * G // 4)
    masks = torch.stack([torch.from_numpy(m.reshape(-1)) for _, m in
                         ref.collate_masks(mg, NG * B, Np, MASK_PROB, RMIN, RMAX)])
    mask_idx = masks.flatten().nonzero().flatten()
    counts = masks.sum(-1).clamp(min=1)
    w = (1 / counts).unsqueeze(-1).expand_as(masks)[masks]

    T = {"x": x, "masks": masks.to(torch.uint8), "center": center[0].clone(), "icenter": icenter[0].clone()}
    st.save(os.path.join(mdir, "model.safetensors"), dict(backbone.state_dict()), metadata={"format": "pt"})
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for k, v in t_backbone.state_dict().items():
        T["teacher." + k] = v.clone()
    for tag, mod in (("shead", dhead), ("thead", t_dhead)) + ((("sihead", ihead), ("tihead", t_ihead)) if separate else ()):
        for k, v in mod.state_dict().items():
            T[tag + "." + k] = v.clone()

    lr, wd, momentum, teacher_temp = 2e-3, 0.05, 0.992, 0.05
    last_layer_lr = 0.0 if freeze else lr
    groups = []
    named = [("backbone", n, p) for n, p in backbone.named_parameters()]
    named += [("dino_head", n, p) for n, p in dhead.named_parameters()]
    if separate:
        named += [("ibot_head", n, p) for n, p in ihead.named_parameters()]
    for mod, n, p in named:
        lm, wm, last = backbone_mults(n, depth) if mod == "backbone" else (
            1.0, 0.0 if n.endswith(".bias") else 1.0, "last_layer" in n)
        groups.append({"params": [p], "lr": (last_layer_lr if last else lr) * lm, "weight_decay": wd * wm})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8, foreach=False)

    # teacher
    with torch.no_grad():
        tout = t_backbone(torch.cat(globals_), pos_interp="size", keep_hidden=False)["last_hidden_state"]
        t_cls = t_dhead(tout[:, 0])
        t_patch = t_ihead(tout[:, 1 + R:].flatten(0, 1)[mask_idx])
        if sinkhorn:
            q_dino, q_ibot = ref.sinkhorn_knopp(t_cls, teacher_temp), ref.sinkhorn_knopp(t_patch, teacher_temp)
        else:
            q_dino = F.softmax((t_cls - center) / teacher_temp, dim=-1)
            q_ibot = F.softmax((t_patch - icenter) / teacher_temp, dim=-1)
    # student
    sg = backbone(torch.cat(globals_), bool_masked_pos=masks, pos_interp="size", keep_hidden=False)["last_hidden_state"]
    sl = backbone(torch.cat(locals_), pos_interp="size", keep_hidden=False)["last_hidden_state"]
    s_cls = dhead(torch.cat([sg[:, 0], sl[:, 0]]))
    s_patch = ihead(sg[:, 1 + R:].flatten(0, 1)[mask_idx])
    dino = ref.dino_loss_v2(s_cls, q_dino, NG, NL, B, STUDENT_TEMP)
    koleo = sum(ref.koleo(p) for p in sg[:, 0].chunk(NG))
    ibot = ref.ibot_loss(s_patch, q_ibot, w, NG * B, STUDENT_TEMP)
    loss = dino + KOLEO_W * koleo + ibot
    opt.zero_grad()
    loss.backward()
    for mod in [backbone, dhead] + ([ihead] if separate else []):
        torch.nn.utils.clip_grad_norm_(mod.parameters(), clip)
    for mod, n, p in named:
        T["grad.%s" % n if mod == "backbone" else "grad.%s.%s" % (mod, n)] = p.grad.clone()
    opt.step()
    with torch.no_grad():
        for smod, tmod in zip([backbone, dhead] + ([ihead] if separate else []), teacher_mods):
            tl, sl_ = list(tmod.parameters()), list(smod.parameters())
            torch._foreach_mul_(tl, momentum)
            torch._foreach_add_(tl, sl_, alpha=1 - momentum)
        if not sinkhorn:
            center = center * CENTER_MOM + t_cls.mean(0, keepdim=True) * (1 - CENTER_MOM)
            icenter = icenter * CENTER_MOM + t_patch.mean(0, keepdim=True) * (1 - CENTER_MOM)

    T["loss"] = np.array([loss.item(), dino.item(), ibot.item(), koleo.item()], dtype=np.float64)
    T["sched"] = np.array([lr, last_layer_lr, wd, momentum, teacher_temp], dtype=np.float64)
    T["cfg"] = np.array([NG, NL, B, G, L, K, HID, BN, LAYERS, KI if separate else K, 1 if separate else 0,
                         1 if sinkhorn else 0, clip, STUDENT_TEMP, CENTER_MOM, R, LAYER_DECAY, PE_MULT, MASK_PROB,
                         KOLEO_W], dtype=np.float64)
    for k, v in backbone.state_dict().items():
        T["after.student." + k] = v.clone()
    for k, v in t_backbone.state_dict().items():
        T["after.teacher." + k] = v.clone()
    for tag, mod in (("shead", dhead), ("thead", t_dhead)) + ((("sihead", ihead), ("tihead", t_ihead)) if separate else ()):
        for k, v in mod.state_dict().items():
            T["after.%s.%s" % (tag, k)] = v.clone()
    T["after.center"], T["after.icenter"] = center[0].clone(), icenter[0].clone()
    st.save(os.path.join(root, "step.safetensors"), T, metadata={"torch": torch.__version__})
    print("step %s: loss %.6f (dino %.6f ibot %.6f koleo %.6f), %d masked tokens" %
          (name, loss.item(), dino.item(), ibot.item(), koleo.item(), len(mask_idx)))


def main(out):
    one_case(out, "shared_center", 900, separate=False, sinkhorn=False, registers=0, clip=0.5, freeze=True)
    one_case(out, "separate_sk", 910, separate=True, sinkhorn=True, registers=2, clip=3.0, freeze=False)


if __name__ == "__main__":
    main(sys.argv[1])
