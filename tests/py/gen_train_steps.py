"""gen_train_steps.py OUTDIR: PyTorch reference for 10 AdamW training steps of a small ViT classifier
(tests/test_train_steps.c; the issue's "PyTorch parity for the losses of 10 AdamW steps").

Model: vit_ref.ViTRef, HF "vit" layout (hidden 64, 2 layers, 4 heads, intermediate 128, image 28,
patch 7, 1 channel, layer_norm_eps 1e-6) with vit_ref.init_random weights, and a head
nn.Linear(64, 10) with torch's default init under a fixed seed. Each step does what dinoc's
supervised trainer (src/train/supervised.c) does, without augmentation or drop path:
  logits = head(model(x)["last_hidden_state"][:, 0]); loss = F.cross_entropy(logits, y)
  zero_grad; backward; clip_grad_norm_(backbone + head parameters, 1.0); AdamW step
AdamW (torch 1.13, foreach=False, betas (0.9, 0.999), eps 1e-8) with two param groups, mirroring
dinoc_param_entry.decay: weight decay on the patch-embedding weight, the Linear weights of the
blocks (query/key/value/attention.output.dense/intermediate.dense/output.dense) and head.weight;
none on biases, LayerNorms, cls_token, position_embeddings and head.bias. lr and wd per step come
from DINO's cosine_scheduler (dinoc_cosine_schedule evaluates the same formula):
  lr: base LR_BASE, final LR_FINAL, WARMUP warmup iterations from LR_START, over STEPS
  wd: base WD_BASE, final WD_FINAL, no warmup
Batches: real Fashion-MNIST training images (the first STEPS * B images, in order), x / 255
normalised with the trainer's mean 0.2860 and std 0.3530; labels as I32.

Writes OUTDIR/train_steps/model/ (config.json + model.safetensors, the initial backbone) and
OUTDIR/train_steps/steps.safetensors:
  head.weight [10, 64], head.bias [10]   F32 initial head
  x.k [B, 1, 28, 28] F32, y.k [B] I32    the batch of step k (k = 0..STEPS-1)
  loss [STEPS] F64                       torch's float32 loss of each step (before its update)
  grad_norm [STEPS] F64                  what clip_grad_norm_ returned (before clipping)
  lr, wd [STEPS] F64                     schedule values given to each step
  sched [7] F64                          lr base, final, warmup, start; wd base, final; steps
  final.<HF name>, final.head.weight, final.head.bias   F32 parameters after the last step
Run with Debian's /usr/bin/python3 (torch 1.13)."""
import gzip
import json
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

STEPS, B = 10, 16
LR_BASE, LR_FINAL, WARMUP, LR_START = 2e-3, 1e-5, 3, 1e-4
WD_BASE, WD_FINAL = 0.05, 0.1
FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530

CONFIG = {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
          "image_size": 28, "patch_size": 7, "num_channels": 1, "qkv_bias": True}


def cosine_scheduler(base_value, final_value, total_iters, warmup_iters=0, start_warmup_value=0):
    """DINO's utils.cosine_scheduler in iterations (epochs * niter_per_ep = total_iters)."""
    warmup = np.array([])
    if warmup_iters > 0:
        warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(total_iters - warmup_iters)
    sched = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    sched = np.concatenate((warmup, sched))
    assert len(sched) == total_iters
    return sched


def idx_images(n):
    with gzip.open(os.path.join(FMNIST, "train-images-idx3-ubyte.gz"), "rb") as f:
        buf = f.read()
    assert int.from_bytes(buf[:4], "big") == 2051
    rows, cols = int.from_bytes(buf[8:12], "big"), int.from_bytes(buf[12:16], "big")
    a = np.frombuffer(buf, dtype=np.uint8, count=n * rows * cols, offset=16).reshape(n, 1, rows, cols)
    with gzip.open(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz"), "rb") as f:
        lb = f.read()
    assert int.from_bytes(lb[:4], "big") == 2049
    y = np.frombuffer(lb, dtype=np.uint8, count=n, offset=8).astype(np.int32)
    # the trainer's transform in float32: (v / 255 - mean) / std
    x = (a.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return x.astype(np.float32), y


def decayed(name, p):
    """dinoc_vit_param_entries' decay flag: matrices, not cls_token / position_embeddings."""
    return p.dim() > 1 and not name.endswith("cls_token") and not name.endswith("position_embeddings")


def main(out):
    root = os.path.join(out, "train_steps")
    mdir = os.path.join(root, "model")
    os.makedirs(mdir, exist_ok=True)
    torch.manual_seed(300)
    model = vit_ref.ViTRef(CONFIG)
    vit_ref.init_random(model, seed=301)
    torch.manual_seed(302)
    head = nn.Linear(CONFIG["hidden_size"], 10)
    st.save(os.path.join(mdir, "model.safetensors"), dict(model.state_dict()), metadata={"format": "pt"})
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)

    tensors = {"head.weight": head.weight.detach().clone(), "head.bias": head.bias.detach().clone()}
    xs, ys = idx_images(STEPS * B)
    lr = cosine_scheduler(LR_BASE, LR_FINAL, STEPS, WARMUP, LR_START)
    wd = cosine_scheduler(WD_BASE, WD_FINAL, STEPS)

    named = list(model.named_parameters()) + [("head." + k, p) for k, p in head.named_parameters()]
    params = [p for _, p in named]
    dec = [p for k, p in named if decayed(k, p)]
    nodec = [p for k, p in named if not decayed(k, p)]
    opt = torch.optim.AdamW([{"params": dec, "weight_decay": 0.0}, {"params": nodec, "weight_decay": 0.0}],
                            lr=LR_BASE, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    losses, norms = [], []
    for k in range(STEPS):
        x = torch.from_numpy(xs[k * B:(k + 1) * B].copy())
        y = torch.from_numpy(ys[k * B:(k + 1) * B].copy())
        tensors["x.%d" % k] = x
        tensors["y.%d" % k] = y
        for gi, g in enumerate(opt.param_groups):
            g["lr"] = float(lr[k])
            g["weight_decay"] = float(wd[k]) if gi == 0 else 0.0
        cls = model(x, keep_hidden=False)["last_hidden_state"][:, 0]
        loss = F.cross_entropy(head(cls), y.long())
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        norms.append(gn.item())
        print("step %d: lr %.6g wd %.6g loss %.7f grad_norm %.6g" % (k, lr[k], wd[k], losses[-1], norms[-1]))
    tensors["loss"] = np.array(losses, dtype=np.float64)
    tensors["grad_norm"] = np.array(norms, dtype=np.float64)
    tensors["lr"] = lr.astype(np.float64)
    tensors["wd"] = wd.astype(np.float64)
    tensors["sched"] = np.array([LR_BASE, LR_FINAL, WARMUP, LR_START, WD_BASE, WD_FINAL, STEPS], dtype=np.float64)
    for k, p in named:
        tensors["final." + k] = p.detach().clone()
    st.save(os.path.join(root, "steps.safetensors"), tensors,
            metadata={"steps": STEPS, "batch": B, "torch": torch.__version__})
    print("wrote", root)


if __name__ == "__main__":
    main(sys.argv[1])
