"""bench_dino_torch.py: PyTorch baseline for `dinoc bench dino` (whole DINO training steps).

  /usr/bin/python3 bench/bench_dino_torch.py [--threads 2] [--iters 3 | --min-time 5] [--json]
      [--dim 192 --depth 12 --heads 3 --patch 4 --channels 1 --global-size 32 --local-size 16
       --global-crops 2 --local-crops 6 --head-hidden 1024 --head-bottleneck 256 --out-dim 4096
       --batch 64 --drop-path 0.1] [--precision fp32|bf16]

One step is what src/train/dino.c dinoc_dino_step does (and `dinoc bench dino` times), written as
facebookresearch/dino main_dino.py train_one_epoch does it, on random crops held in memory:
  teacher (torch.no_grad): backbone on the global crops (one pass) -> DINOHead
  student: backbone on the global crops (one pass) and on the local crops (one pass; position
           embeddings resized bicubic to the local grid, HF ViT's way), DINOHead on all CLS rows
  DINOLoss: teacher softmax((t - center) / 0.04), student log_softmax(s / 0.1), mean over the
           cross-view pairs
  zero_grad; backward; per-parameter gradient clipping at 3.0 (utils.clip_gradients); AdamW with
  two groups (regularized: ndim > 1 and not .bias, wd 0.04; not_regularized: wd 0), lr 5e-4*B/256;
  EMA of the teacher (momentum 0.996, torch._foreach ops); center EMA (0.9) of the teacher output.
The ViT is timm / DINO's VisionTransformer: Conv2d patch embedding, fused qkv nn.Linear, matmul
attention (torch 1.13 has no scaled_dot_product_attention), exact nn.GELU, LayerNorm eps 1e-6,
MLP 4D, stochastic depth linspace(0, drop_path, depth) over the blocks with a per-sample mask
scaled by 1/keep (dinoc computes dropped samples too, so both sides do the same work).
DINOHead: Linear-GELU-Linear-GELU-Linear, L2 normalise, weight_norm last layer with weight_g frozen
(norm_last_layer); the last layer is trained (no freeze_last_layer, as the C bench's schedule).

Timing: --warmup steps (2), then --iters timed steps (0: until --min-time seconds and >= 3 steps);
img/s = batch / median step (source images per second). Phases (mean ms): teacher (backbone + head),
student_fwd (backbones), heads_loss (student head + loss), backward, update (clip, AdamW, EMA,
center), the C bench's split. Prints one line, or with --json one JSON object.
--precision bf16 runs the three forwards under torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's
mixed precision: bf16 products, fp32 master weights and AdamW; the loss on fp32 logits), the peer
of `dinoc bench dino --precision bf16`.
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

STUDENT_TEMP, TEACHER_TEMP, CENTER_MOM, CLIP, WD, MOMENTUM = 0.1, 0.04, 0.9, 3.0, 0.04, 0.996


def set_threads(n):
    """torch intra-op threads and, for Debian's torch (BLAS_INFO=generic, OpenBLAS-pthread behind
    libblas.so.3), OpenBLAS's own thread count, which torch does not set."""
    torch.set_num_threads(n)
    for lib in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(lib).openblas_set_num_threads(n)
        except (OSError, AttributeError):
            pass


# ---- model (timm / DINO vision_transformer.py) ----------------------------------------------------

class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, a):
        super().__init__()
        D, self.patch, self.grid = a.dim, a.patch, a.global_size // a.patch
        self.patch_embed = nn.Conv2d(a.channels, D, a.patch, stride=a.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, D))
        dpr = [a.drop_path * i / (a.depth - 1) if a.depth > 1 else 0.0 for i in range(a.depth)]
        self.blocks = nn.ModuleList([Block(D, a.heads, 4, dpr[i]) for i in range(a.depth)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pos(self, gh, gw):
        """position embeddings for a gh x gw grid: bicubic resize to the size (HF ViT's way)."""
        if gh == self.grid and gw == self.grid:
            return self.pos_embed
        D, M = self.pos_embed.shape[-1], self.grid
        p = self.pos_embed[:, 1:].reshape(1, M, M, D).permute(0, 3, 1, 2)
        p = F.interpolate(p, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], p.permute(0, 2, 3, 1).reshape(1, gh * gw, D)], dim=1)

    def forward(self, x):
        B, _, H, W = x.shape
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + self.pos(H // self.patch, W // self.patch)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden, bottleneck, nlayers=3):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, bottleneck))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False  # norm_last_layer

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class MultiCrop(nn.Module):
    """DINO's MultiCropWrapper: crops of one size through the backbone in one pass, then the head."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head


# ---- the step -------------------------------------------------------------------------------------

class Step:
    def __init__(self, a):
        torch.manual_seed(0)
        self.a = a
        self.student = MultiCrop(ViT(a), DINOHead(a.dim, a.out_dim, a.head_hidden, a.head_bottleneck)).train()
        self.teacher = MultiCrop(ViT(a), DINOHead(a.dim, a.out_dim, a.head_hidden, a.head_bottleneck)).train()
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad = False
        # teacher has no drop path in DINO (drop_path_rate only on the student); dinoc's teacher is an
        # inference forward
        for m in self.teacher.modules():
            if isinstance(m, DropPath):
                m.p = 0.0
        reg, noreg = [], []
        for n, p in self.student.named_parameters():
            if p.requires_grad:
                (noreg if n.endswith(".bias") or p.dim() == 1 else reg).append(p)
        lr = 5e-4 * a.batch / 256
        kw = {"foreach": True} if a.foreach else {}
        self.opt = torch.optim.AdamW([{"params": reg, "weight_decay": WD}, {"params": noreg, "weight_decay": 0.0}],
                                     lr=lr, betas=(0.9, 0.999), eps=1e-8, **kw)
        self.sparams = [p for p in self.student.parameters()]
        self.tparams = [p for p in self.teacher.parameters()]
        self.trainable = [p for p in self.sparams if p.requires_grad]
        self.center = torch.zeros(1, a.out_dim)
        self.n_params = sum(p.numel() for p in self.student.backbone.parameters())
        # random crops, held in memory, one tensor per crop as the data loader hands them over
        g = torch.Generator().manual_seed(1)
        B, C = a.batch, a.channels
        self.globals = [torch.rand(B, C, a.global_size, a.global_size, generator=g) * 2 - 1
                        for _ in range(a.global_crops)]
        self.locals = [torch.rand(B, C, a.local_size, a.local_size, generator=g) * 2 - 1
                       for _ in range(a.local_crops)]

    def loss(self, s_out, t_out):
        nG, nS = self.a.global_crops, self.a.global_crops + self.a.local_crops
        student_out = (s_out / STUDENT_TEMP).chunk(nS)
        teacher_out = F.softmax((t_out - self.center) / TEACHER_TEMP, dim=-1).detach().chunk(nG)
        total, n = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(nS):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                n += 1
        return total / n

    def __call__(self, ph):
        t0 = time.perf_counter()
        xg = torch.cat(self.globals)
        xl = torch.cat(self.locals) if self.locals else None
        # --precision bf16: the forwards under CPU autocast (bf16 products, fp32 master weights and
        # AdamW), PyTorch's mixed-precision training; the loss in fp32
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.a.precision == "bf16")
        with torch.no_grad(), amp:
            t_out = self.teacher.head(self.teacher.backbone(xg)).float()
        t1 = time.perf_counter()
        with amp:
            feats = [self.student.backbone(xg)]
            if xl is not None:
                feats.append(self.student.backbone(xl))
        t2 = time.perf_counter()
        with amp:
            s_out = self.student.head(torch.cat(feats))
        loss = self.loss(s_out.float(), t_out)
        lv = loss.item()
        if not math.isfinite(lv):
            raise SystemExit("bench_dino_torch: the loss became %g" % lv)
        t3 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        # utils.clip_gradients: each tensor's gradient norm clipped to CLIP on its own
        grads = [p.grad for p in self.trainable if p.grad is not None]
        norms = torch.stack([g.norm(2) for g in grads])
        coefs = (CLIP / (norms + 1e-6)).tolist()
        for gr, c in zip(grads, coefs):
            if c < 1:
                gr.mul_(c)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_mul_(self.tparams, MOMENTUM)
            torch._foreach_add_(self.tparams, self.sparams, alpha=1 - MOMENTUM)
            batch_center = torch.sum(t_out, dim=0, keepdim=True) / len(t_out)
            self.center = self.center * CENTER_MOM + batch_center * (1 - CENTER_MOM)
        t5 = time.perf_counter()
        for k, v in zip(("teacher", "student_fwd", "heads_loss", "backward", "update"),
                        (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            ph[k] = ph.get(k, 0.0) + v
        return lv, t5 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, v in (("dim", 192), ("depth", 12), ("heads", 3), ("patch", 4), ("channels", 1),
                    ("global-size", 32), ("local-size", 16), ("global-crops", 2), ("local-crops", 6),
                    ("head-hidden", 1024), ("head-bottleneck", 256), ("out-dim", 4096), ("batch", 64)):
        ap.add_argument("--" + name, type=int, default=v)
    ap.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth of the last block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=0, help="timed steps (0: until --min-time, >= 3 steps)")
    ap.add_argument("--min-time", type=float, default=5.0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-foreach", dest="foreach", action="store_false", help="AdamW's per-tensor loop")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: forwards under torch.autocast('cpu', bfloat16)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if (a.global_size % a.patch or a.local_size % a.patch or a.dim % a.heads or a.global_crops < 1
            or a.batch < 1 or a.iters < 0):
        raise SystemExit("bench_dino_torch: crop sides must be multiples of the patch, dim of heads")
    set_threads(a.threads)
    step = Step(a)
    ph = {}
    for _ in range(a.warmup):
        loss0 = step(ph)[0]
    ph, times = {}, []
    while (len(times) < a.iters) if a.iters else (sum(times) < a.min_time or len(times) < 3):
        loss, dt = step(ph)
        times.append(dt)
    med = statistics.median(times)
    n = len(times)
    r = {"impl": "torch", "mode": "dino", "dim": a.dim, "depth": a.depth, "heads": a.heads, "patch": a.patch,
         "batch": a.batch, "global": [a.global_crops, a.global_size], "local": [a.local_crops, a.local_size],
         "out_dim": a.out_dim, "threads": torch.get_num_threads(), "precision": a.precision, "img_s": round(a.batch / med, 3),
         "ms_per_step": round(med * 1e3, 2), "runs": n}
    for k, v in ph.items():
        r["ms_" + k] = round(v * 1e3 / n, 2)
    r.update({"loss": round(loss, 5), "params": step.n_params, "torch": torch.__version__})
    if a.json:
        print(json.dumps(r))
    else:
        print("torch dino step D%d L%d P%d batch=%d threads=%d img_s=%.2f ms_per_step=%.1f (%d steps; teacher %.1f, "
              "student fwd %.1f, heads+loss %.1f, backward %.1f, update %.1f ms; loss %.4f -> %.4f)"
              % (a.dim, a.depth, a.patch, a.batch, r["threads"], r["img_s"], r["ms_per_step"], n,
                 r["ms_teacher"], r["ms_student_fwd"], r["ms_heads_loss"], r["ms_backward"], r["ms_update"],
                 loss0, loss), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
