"""bench_train_torch.py: PyTorch baseline for `dinoc bench --train` (supervised training steps).

  /usr/bin/python3 bench/bench_train_torch.py --batch 64 128 --threads 1 2 [--json] [--min-time 2]
      [--dim 128 --depth 6 --heads 4 --patch 7 --image 28 --channels 1 --classes 10]

One step is what src/train/supervised.c does (and `dinoc bench --train` times), on random inputs and
labels held in memory, without augmentation, drop path or label smoothing:
  logits = head(model(x)["last_hidden_state"][:, 0]); loss = F.cross_entropy(logits, y)
  zero_grad; backward; clip_grad_norm_(backbone + head parameters, 1.0); AdamW step
The backbone is tests/py/vit_ref.py's ViTRef in the HF "vit" layout (layer_norm_eps 1e-6, MLP 4D)
with the given dims (default: dinoc's Fashion-MNIST classifier, D 128, 6 blocks, 4 heads, patch 7,
28x28x1, 10 classes); the head is nn.Linear(D, classes). AdamW (torch defaults: betas (0.9, 0.999),
eps 1e-8) at lr 1e-3 with weight decay 0.05 on matrices and none on biases, norms, cls_token and
position_embeddings, as the trainer groups them. Prints one line per (batch, threads):
  torch train MODEL batch=B threads=T img_s=X ms_per_batch=Y
--json prints a JSON list of those records at the end. Timing: warm-up steps, then repeat until at
least max(5, --iters) steps and >= --min-time seconds; ms_per_batch is the median step.
Run with Debian's /usr/bin/python3 (torch 1.13).
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time

# libgomp's default spin-waiting fights OpenBLAS's own pthreads on few cores; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
import vit_ref  # noqa: E402

LR, WD, CLIP = 1e-3, 0.05, 1.0


def set_threads(n):
    """torch intra-op threads and, for Debian's torch (BLAS_INFO=generic, OpenBLAS-pthread behind
    libblas.so.3), OpenBLAS's own thread count, which torch does not set."""
    torch.set_num_threads(n)
    for lib in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(lib).openblas_set_num_threads(n)
        except (OSError, AttributeError):
            pass


def decayed(name, p):
    """dinoc_vit_param_entries' decay flag: matrices, not cls_token / position_embeddings."""
    return p.dim() > 1 and not name.endswith("cls_token") and not name.endswith("position_embeddings")


class Step:
    """Model, head, optimiser and one fixed random batch; __call__ runs one training step."""

    def __init__(self, a, B):
        cfg = {"model_type": "vit", "hidden_size": a.dim, "num_hidden_layers": a.depth,
               "num_attention_heads": a.heads, "intermediate_size": 4 * a.dim, "hidden_act": "gelu",
               "layer_norm_eps": 1e-6, "image_size": a.image, "patch_size": a.patch,
               "num_channels": a.channels, "qkv_bias": True}
        torch.manual_seed(0)
        self.model = vit_ref.ViTRef(cfg).train()
        self.head = nn.Linear(a.dim, a.classes)
        with torch.no_grad():  # timm-like small init so the random run stays well conditioned
            for n, p in self.model.named_parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.02)
        named = list(self.model.named_parameters()) + [("head." + k, p) for k, p in self.head.named_parameters()]
        self.params = [p for _, p in named]
        dec = [p for k, p in named if decayed(k, p)]
        nodec = [p for k, p in named if not decayed(k, p)]
        self.opt = torch.optim.AdamW([{"params": dec, "weight_decay": WD}, {"params": nodec, "weight_decay": 0.0}],
                                     lr=LR, betas=(0.9, 0.999), eps=1e-8)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(B, a.channels, a.size, a.size, generator=g)
        self.y = torch.randint(0, a.classes, (B,), generator=g)
        self.n_params = sum(p.numel() for p in self.params)

    def __call__(self):
        cls = self.model(self.x, keep_hidden=False)["last_hidden_state"][:, 0]
        loss = F.cross_entropy(self.head(cls), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()
        return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=5, help="minimum timed steps (at least 5)")
    ap.add_argument("--min-time", type=float, default=1.0, help="minimum timed seconds per point")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--image", type=int, default=28, help="the model's image size (position grid)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=0, help="input side (0: --image)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    a.size = a.size or a.image
    if a.size % a.patch or a.image % a.patch or a.dim % a.heads:
        raise SystemExit("bench_train_torch: sizes must be multiples of the patch, dim of heads")
    name = "vit-d%d-l%d-h%d-p%d-i%d-c%d" % (a.dim, a.depth, a.heads, a.patch, a.image, a.channels)
    records = []
    for T in a.threads:
        set_threads(T)
        for B in a.batch:
            step = Step(a, B)
            loss0 = loss = step()
            for _ in range(a.warmup - 1):
                loss = step()
            times = []
            t_all = time.perf_counter()
            while len(times) < max(5, a.iters) or time.perf_counter() - t_all < a.min_time:
                t0 = time.perf_counter()
                loss = step()
                times.append(time.perf_counter() - t0)
            if not math.isfinite(loss):
                print("bench_train_torch: warning: the loss became %g" % loss, file=sys.stderr)
            ms = statistics.median(times) * 1e3
            r = {"impl": "torch", "mode": "train", "model": name, "batch": B, "threads": T, "size": a.size,
                 "classes": a.classes, "params": step.n_params, "img_s": round(B / (ms / 1e3), 3),
                 "ms_per_batch": round(ms, 3), "ms_per_batch_mean": round(statistics.mean(times) * 1e3, 3),
                 "ms_per_batch_best": round(min(times) * 1e3, 3), "runs": len(times),
                 "loss_first": round(loss0, 6), "loss_last": round(loss, 6), "torch": torch.__version__}
            records.append(r)
            print("torch train %s batch=%d threads=%d img_s=%.2f ms_per_batch=%.2f (%d steps; loss %.4f -> %.4f)"
                  % (name, B, T, r["img_s"], ms, len(times), loss0, loss), flush=True)
    if a.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
