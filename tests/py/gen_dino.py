"""gen_dino.py OUTDIR: PyTorch reference for one DINO step (tests/test_dino.c; the issue's "one full
DINO step on fixed crops equals PyTorch").

Written from the reference facts (dino_dinov2.md 2.3-2.5), as facebookresearch/dino main_dino.py does
a step: MultiCropWrapper (crops of one size in one backbone pass, crop-major order), DINOHead (3-layer
MLP with GELU, L2-normalised bottleneck, weight_norm last layer; weight_g frozen under
norm_last_layer), DINOLoss (teacher softmax((t - center)/tau_t), student log_softmax(s/tau_s), mean
over cross-view pairs, center EMA after the loss), per-parameter clip_gradients, freeze_last_layer
(grads of "last_layer" set to None during the first epochs), AdamW with two groups (regularized:
ndim > 1 and not .bias; not_regularized: wd 0), EMA teacher. DINO's ViT fuses q, k, v into one
Linear (qkv), so clip_gradients treats a block's query/key/value weights (and biases) as one tensor.

Backbone: vit_ref.ViTRef, HF "vit" layout (hidden 32, 2 layers, 2 heads, intermediate 128, patch 4,
3 channels, image 16, layer_norm_eps 1e-6); global crops 16 px, local crops 8 px (position embeddings
resized bicubic to the size, HF ViT's way). No drop path.

Cases (OUTDIR/dino/<case>/): 
  frozen:   norm_last_layer True, freeze_last_layer active (epoch 0), clip 3.0, teacher temp 0.04
  trained:  norm_last_layer False (weight_g random and trained), no freeze, clip 0.3 (clips several
            tensors), teacher temp 0.07
Each holds model/ (config.json + model.safetensors: the student backbone before the step) and
step.safetensors:
  x [B, item] F32            the batch as dinoc's multi-crop transform lays it out (per image:
                             global 0, global 1, local 0..nL-1, each [C, side, side])
  teacher.<HF name>, shead.<name>, thead.<name>, center [K]      state before the step
  sched [5] F64              lr, wd, momentum, teacher_temp, freeze (0/1)
  cfg [13] F64               nG, nL, B, G, L, K, hidden, bottleneck, layers, norm_last_layer, clip,
                             student_temp, center_momentum
  loss [1] F64
  grad.<HF name>, grad.head.<name>   student gradients after clipping (absent where torch has None)
  after.student.<..>, after.shead.<..>, after.teacher.<..>, after.thead.<..>, after.center
Run with Debian's /usr/bin/python3 (torch 1.13)."""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
import vit_ref  # noqa: E402

torch.set_num_threads(1)

CONFIG = {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 128, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
          "image_size": 16, "patch_size": 4, "num_channels": 3, "qkv_bias": True}
NG, NL, B, G, L = 2, 3, 4, 16, 8
K, HID, BN, LAYERS = 64, 48, 16, 3
STUDENT_TEMP, CENTER_MOM = 0.1, 0.9


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, norm_last_layer, nlayers, hidden, bottleneck):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, bottleneck))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class Student(nn.Module):
    """backbone + head, crops of equal size through the backbone in one pass (MultiCropWrapper)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops):
        outs = [self.backbone(c, keep_hidden=False)["last_hidden_state"][:, 0] for c in crops]
        return self.head(torch.cat(outs))


def dino_loss(student_output, teacher_output, center, teacher_temp):
    student_out = (student_output / STUDENT_TEMP).chunk(NG + NL)
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1).detach().chunk(NG)
    total, n = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            n += 1
    total /= n
    with torch.no_grad():
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
        new_center = center * CENTER_MOM + batch_center * (1 - CENTER_MOM)
    return total, new_center


def init_head(head, g, trained_g):
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g) if trained_g else torch.ones(p.shape))
            elif name.endswith("weight_v"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def one_case(out, name, seed, norm_last_layer, freeze, clip, teacher_temp):
    root = os.path.join(out, "dino", name)
    mdir = os.path.join(root, "model")
    os.makedirs(mdir, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    backbone = vit_ref.ViTRef(CONFIG)
    vit_ref.init_random(backbone, seed=seed + 1)
    head = DINOHead(CONFIG["hidden_size"], K, norm_last_layer, LAYERS, HID, BN)
    init_head(head, g, not norm_last_layer)
    student = Student(backbone, head)
    # DINO builds the teacher on its own (its head with norm_last_layer's default) and loads the
    # student's weights
    teacher = Student(vit_ref.ViTRef(CONFIG), DINOHead(CONFIG["hidden_size"], K, True, LAYERS, HID, BN))
    teacher.load_state_dict(student.state_dict())
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    for p in teacher.parameters():
        p.requires_grad = False
    center = 0.3 * torch.randn(1, K, generator=g)
    C = CONFIG["num_channels"]
    globals_ = [torch.randn(B, C, G, G, generator=g) for _ in range(NG)]
    locals_ = [torch.randn(B, C, L, L, generator=g) for _ in range(NL)]
    x = torch.stack([torch.cat([c[b].reshape(-1) for c in globals_ + locals_]) for b in range(B)])

    tensors = {"x": x, "center": center[0].clone()}
    st.save(os.path.join(mdir, "model.safetensors"), dict(backbone.state_dict()), metadata={"format": "pt"})
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    for k, v in teacher.backbone.state_dict().items():
        tensors["teacher." + k] = v.clone()
    for k, v in head.state_dict().items():
        tensors["shead." + k] = v.clone()
    for k, v in teacher.head.state_dict().items():
        tensors["thead." + k] = v.clone()

    lr, wd, momentum = 5e-4 * B / 256 * 40, 0.04, 0.996
    regularized, not_regularized = [], []
    for n, p in student.named_parameters():
        if not p.requires_grad:
            continue
        (not_regularized if n.endswith(".bias") or len(p.shape) == 1 else regularized).append(p)
    opt = torch.optim.AdamW([{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    opt.param_groups[0]["weight_decay"] = wd

    teacher_output = teacher.head(torch.cat([teacher.backbone(c, keep_hidden=False)["last_hidden_state"][:, 0]
                                             for c in globals_]))
    student_output = student([torch.cat(globals_), torch.cat(locals_)])
    loss, new_center = dino_loss(student_output, teacher_output, center, teacher_temp)
    opt.zero_grad()
    loss.backward()
    # utils.clip_gradients: each parameter's gradient norm clipped on its own. DINO's ViT has one
    # fused qkv Linear per block, so HF's query/key/value of a block are clipped as ONE tensor
    groups = {}
    for n, p in student.named_parameters():
        if p.grad is not None:
            key = n
            for part in ("query", "key", "value"):
                key = key.replace("attention.attention.%s." % part, "attention.attention.qkv.")
            groups.setdefault(key, []).append(p)
    for key, ps in groups.items():
        norm = torch.cat([p.grad.data.reshape(-1) for p in ps]).norm(2)
        coef = clip / (norm + 1e-6)
        if coef < 1:
            for p in ps:
                p.grad.data.mul_(coef)
    if freeze:  # utils.cancel_gradients_last_layer during epoch < freeze_last_layer
        for n, p in student.named_parameters():
            if "last_layer" in n:
                p.grad = None
    for n, p in student.named_parameters():
        if p.grad is not None:
            key = "grad." + (n[len("backbone."):] if n.startswith("backbone.") else n)
            tensors[key] = p.grad.clone()
    opt.step()
    with torch.no_grad():
        for pq, pk in zip(student.parameters(), teacher.parameters()):
            pk.data.mul_(momentum).add_((1 - momentum) * pq.detach().data)

    tensors["loss"] = np.array([loss.item()], dtype=np.float64)
    tensors["sched"] = np.array([lr, wd, momentum, teacher_temp, 1.0 if freeze else 0.0], dtype=np.float64)
    tensors["cfg"] = np.array([NG, NL, B, G, L, K, HID, BN, LAYERS, 1 if norm_last_layer else 0, clip,
                               STUDENT_TEMP, CENTER_MOM], dtype=np.float64)
    for k, v in backbone.state_dict().items():
        tensors["after.student." + k] = v.clone()
    for k, v in head.state_dict().items():
        tensors["after.shead." + k] = v.clone()
    for k, v in teacher.backbone.state_dict().items():
        tensors["after.teacher." + k] = v.clone()
    for k, v in teacher.head.state_dict().items():
        tensors["after.thead." + k] = v.clone()
    tensors["after.center"] = new_center[0].clone()
    st.save(os.path.join(root, "step.safetensors"), tensors, metadata={"torch": torch.__version__})
    print("%s: loss %.6f" % (name, loss.item()))


def main(out):
    one_case(out, "frozen", 700, norm_last_layer=True, freeze=True, clip=3.0, teacher_temp=0.04)
    one_case(out, "trained", 710, norm_last_layer=False, freeze=False, clip=0.3, teacher_temp=0.07)


if __name__ == "__main__":
    main(sys.argv[1])
