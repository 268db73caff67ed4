"""gen_dinov2.py OUTDIR: references for DINOv2's objectives (tests/test_dinov2_masking.c,
tests/test_dinov2_loss.c), written from the reference facts (dino_dinov2.md 3.2-3.3).

OUTDIR/dinov2/masks.safetensors: statistics of the mask collate over many draws of Python's
random (the C generator uses its own RNG, so distributions are compared, not draws). Per case
g<h> (grid h x h): meta [h, w, n_img, draws, mask_prob, ratio_min, ratio_max], ratio_mean/_std [S]
(masked fraction per stratum S = int(n_img * mask_prob)), blocks [mean, std, q10, q50, q90] of the
accepted blocks per batch, hw [mean h, std h, mean w, std w, mean log(h/w), std log(h/w)] of the
accepted blocks, n_masked [mean, std] per batch.

OUTDIR/dinov2/loss.safetensors: fixed inputs and torch outputs (float32 math, F64 scalars):
  dino:  t [2B, K], s [(2+nL)B, K], center [K], temp, sk targets, centered targets, loss and ds for
         both, the new center
  ibot:  t [M, K], s [M, K], w [M], n_img, center, loss and ds (centered and SK), the new center
  koleo: x [n, D], loss, dx (duplicate-free rows; the nearest neighbour is unique)
Run with Debian's /usr/bin/python3 (torch 1.13)."""
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

torch.set_num_threads(1)


# ---- masks (§3.2) --------------------------------------------------------------------------------

class MaskingGenerator:
    """BEiT-style block masking as DINOv2 configures it; counts accepted blocks and their sides."""

    def __init__(self, h, w, max_num_patches, min_num_patches=4, min_aspect=0.3):
        self.height, self.width = h, w
        self.min_num_patches, self.max_num_patches = min_num_patches, max_num_patches
        self.log_aspect_ratio = (math.log(min_aspect), math.log(1 / min_aspect))
        self.blocks = []

    def _mask(self, mask, max_mask_patches):
        for _ in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= max_mask_patches:
                    mask[top:top + h, left:left + w] = True
                    self.blocks.append((h, w))
                    return new
        return 0

    def __call__(self, n):
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < n:
            delta = self._mask(mask, min(n - count, self.max_num_patches))
            if delta == 0:
                break
            count += delta
        return mask


def collate_masks(gen, n_img, N, prob, rmin, rmax):
    """collate_data_and_cast's mask part; returns [(stratum or -1, mask)] in shuffled order."""
    n = int(n_img * prob)
    probs = torch.linspace(rmin, rmax, n + 1)
    out = []
    for i in range(n):
        out.append((i, gen(int(N * random.uniform(probs[i], probs[i + 1])))))
    for _ in range(n, n_img):
        out.append((-1, gen(0)))
    random.shuffle(out)
    return out


def mask_stats(tensors, h, n_img, draws, prob=0.5, rmin=0.1, rmax=0.5):
    random.seed(1000 + h)
    N = h * h
    gen = MaskingGenerator(h, h, 0.5 * (h * 14) // 14 * (h * 14) // 14)  # train.py's expression
    S = int(n_img * prob)
    ratios = [[] for _ in range(S)]
    blocks, n_masked = [], []
    for _ in range(draws):
        before = len(gen.blocks)
        batch = collate_masks(gen, n_img, N, prob, rmin, rmax)
        for stratum, m in batch:
            if stratum >= 0:
                ratios[stratum].append(m.sum() / N)
            else:
                assert m.sum() == 0
        blocks.append(len(gen.blocks) - before)
        n_masked.append(sum(int(m.sum()) for _, m in batch))
    hs = np.array([b[0] for b in gen.blocks], dtype=np.float64)
    ws = np.array([b[1] for b in gen.blocks], dtype=np.float64)
    lhw = np.log(hs / ws)
    bl = np.array(blocks, dtype=np.float64)
    p = "g%d/" % h
    tensors[p + "meta"] = np.array([h, h, n_img, draws, prob, rmin, rmax], dtype=np.float64)
    tensors[p + "ratio_mean"] = np.array([np.mean(r) for r in ratios], dtype=np.float64)
    tensors[p + "ratio_std"] = np.array([np.std(r) for r in ratios], dtype=np.float64)
    tensors[p + "blocks"] = np.array([bl.mean(), bl.std(), np.quantile(bl, 0.1), np.quantile(bl, 0.5),
                                      np.quantile(bl, 0.9)], dtype=np.float64)
    tensors[p + "hw"] = np.array([hs.mean(), hs.std(), ws.mean(), ws.std(), lhw.mean(), lhw.std()], dtype=np.float64)
    tensors[p + "n_masked"] = np.array([np.mean(n_masked), np.std(n_masked)], dtype=np.float64)
    print("masks g%d: ratio means %s, blocks/batch %.2f, n_masked %.1f" %
          (h, np.round(tensors[p + "ratio_mean"], 3), bl.mean(), np.mean(n_masked)))


# ---- losses (§3.3) -------------------------------------------------------------------------------

def sinkhorn_knopp(t, temp, n_iter=3):
    """SinkhornKnoppTeacher on one process: Q = exp(t / temp)^T [K, B], alternately normalised."""
    Q = torch.exp(t.float() / temp).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(n_iter):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def dino_loss_v2(s, q, n_global, n_local, B, student_temp=0.1):
    """DINOv2's DINO loss: locals against both teachers, globals against the other global (teacher
    chunks swapped), over n_global (n_global - 1) + max(n_global n_local, 1) terms."""
    denom = (n_global - 1) * n_global + max(n_local * n_global, 1)
    qs = q.chunk(n_global)
    tq = torch.cat((qs[1], qs[0]))
    sg, sl = s[:n_global * B], s[n_global * B:]
    total = 0
    for sc in sl.chunk(n_local):
        lsm = F.log_softmax(sc / student_temp, dim=-1)
        for t in qs:
            total = total - torch.sum(t * lsm, dim=-1).mean()
    total = total / denom
    lsm = F.log_softmax(sg / student_temp, dim=-1)
    total = total - torch.sum(tq * lsm, dim=-1).mean() * 2 / denom
    return total


def ibot_loss(s, q, w, n_img, student_temp=0.1):
    loss = torch.sum(q * F.log_softmax(s / student_temp, dim=-1), dim=-1)
    return -(loss * w).sum() / n_img


def koleo(x, eps=1e-8):
    xn = F.normalize(x, eps=eps, p=2, dim=-1)
    dots = torch.mm(xn, xn.t())
    n = xn.shape[0]
    dots.view(-1)[::(n + 1)].fill_(-1)
    _, I = torch.max(dots, dim=1)
    d = torch.nn.PairwiseDistance(2, eps=1e-8)(xn, xn[I])
    return -torch.log(d + eps).mean()


def loss_fixtures(out):
    g = torch.Generator().manual_seed(321)
    T = {}
    B, nL, K, temp, cm = 5, 3, 24, 0.06, 0.9
    t = torch.randn(2 * B, K, generator=g).clamp(-1, 1)  # cosine-like logits, as the head gives
    s = torch.randn((2 + nL) * B, K, generator=g)
    center = 0.2 * torch.randn(1, K, generator=g)
    q_c = F.softmax((t - center) / temp, dim=-1)
    q_sk = sinkhorn_knopp(t, temp)
    T.update({"dino.t": t, "dino.s": s, "dino.center": center[0], "dino.cfg": np.array([B, nL, K, temp, cm]),
              "dino.q_center": q_c, "dino.q_sk": q_sk,
              "dino.new_center": (center * cm + t.mean(0, keepdim=True) * (1 - cm))[0]})
    for name, q in (("center", q_c), ("sk", q_sk)):
        sv = s.clone().requires_grad_(True)
        loss = dino_loss_v2(sv, q, 2, nL, B)
        loss.backward()
        T["dino.loss_" + name] = np.array([loss.item()], dtype=np.float64)
        T["dino.ds_" + name] = sv.grad
    # iBOT: M masked tokens from n_img images with weights 1 / count
    counts = [3, 0, 5, 1, 4, 2]
    M, n_img = sum(counts), len(counts)
    w = torch.cat([torch.full((c,), 1.0 / max(c, 1)) for c in counts])
    t = torch.randn(M, K, generator=g).clamp(-1, 1)
    s = torch.randn(M, K, generator=g)
    center = 0.2 * torch.randn(1, K, generator=g)
    q_c = F.softmax((t - center) / temp, dim=-1)
    q_sk = sinkhorn_knopp(t, temp)
    T.update({"ibot.t": t, "ibot.s": s, "ibot.w": w, "ibot.center": center[0],
              "ibot.cfg": np.array([M, n_img, K, temp, cm]), "ibot.q_center": q_c, "ibot.q_sk": q_sk,
              "ibot.new_center": (center * cm + t.mean(0, keepdim=True) * (1 - cm))[0]})
    for name, q in (("center", q_c), ("sk", q_sk)):
        sv = s.clone().requires_grad_(True)
        loss = ibot_loss(sv, q, w, n_img)
        loss.backward()
        T["ibot.loss_" + name] = np.array([loss.item()], dtype=np.float64)
        T["ibot.ds_" + name] = sv.grad
    # KoLeo
    n, D = 9, 7
    x = torch.randn(n, D, generator=g).requires_grad_(True)
    loss = koleo(x)
    loss.backward()
    T.update({"koleo.x": x.detach(), "koleo.loss": np.array([loss.item()], dtype=np.float64), "koleo.dx": x.grad})
    st.save(os.path.join(out, "dinov2", "loss.safetensors"), T, metadata={"torch": torch.__version__})
    print("losses: dino %.6f/%.6f ibot %.6f/%.6f koleo %.6f" % (
        T["dino.loss_center"][0], T["dino.loss_sk"][0], T["ibot.loss_center"][0], T["ibot.loss_sk"][0],
        T["koleo.loss"][0]))


def main(out):
    os.makedirs(os.path.join(out, "dinov2"), exist_ok=True)
    T = {}
    mask_stats(T, 4, n_img=16, draws=4000)    # the Fashion-MNIST job's 28 / 7 grid
    mask_stats(T, 16, n_img=16, draws=600)    # DINOv2's 224 / 14 grid
    st.save(os.path.join(out, "dinov2", "masks.safetensors"), T)
    loss_fixtures(out)


if __name__ == "__main__":
    main(sys.argv[1])
