"""gen_eval.py OUTDIR: fixtures for tests/test_eval.c (k-NN and the linear probe's SGD step).

Writes OUTDIR/eval/knn.safetensors:
  train [NTR, DIM] F32, ytrain [NTR] I32, test [NTE, DIM] F32, ytest [NTE] I32: clustered random
      features (NCLS overlapping Gaussian clusters, some labels flipped), NOT normalised
  ks [NK] I32, T F64 [1]
  torch_top1, torch_top5 [NK] I64: correct counts of DINO's knn_classifier (eval_knn.py, copied
      below, torch float32)
  ref_top1, ref_top5 [NK] I64: a float64 numpy version with dinoc's tie rule (lower train index,
      then lower class index first)
  ambiguous5 [NK] I64: test rows whose top-5 verdict depends on how classes of equal score (zero
      votes) are ordered; torch's sort does not promise an order, so top-5 may differ from ours by
      at most this many rows
Test rows whose neighbour set or class ranking is within 1e-5 of a tie in float64 are dropped, so
float32 rounding (torch.mm vs sgemm) cannot change a verdict: top-1 must match torch exactly.

and OUTDIR/eval/sgd.safetensors: STEPS steps of torch.optim.SGD(momentum=0.9) on two nn.Linear
(D -> K) classifiers from the same init, with learning rates lr [2], mean cross-entropy:
  w0 [K, D], b0 [K] F32       the initial parameters (both classifiers)
  x.s [B, D] F32, y.s [B] I32 batch of step s
  w.s [2*K, D], b.s [2*K] F32 parameters after step s (classifier j at rows j*K..)
  loss.s [2] F64              loss of step s (before the update)
  lr [2] F64

Run with Debian's python3 (torch 1.13): /usr/bin/python3 tests/py/gen_eval.py build/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

NTR, NTE, DIM, NCLS = 2000, 400, 32, 10
KS = [1, 5, 20, 100]
T = 0.07
MARGIN = 1e-5


@torch.no_grad()
def knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes=1000):
    """facebookresearch/dino eval_knn.py knn_classifier, returning counts instead of percentages."""
    top1, top5, total = 0.0, 0.0, 0
    train_features = train_features.t()
    num_test_images, num_chunks = test_labels.shape[0], 100
    imgs_per_chunk = max(num_test_images // num_chunks, 1)
    retrieval_one_hot = torch.zeros(k, num_classes).to(train_features.device)
    for idx in range(0, num_test_images, imgs_per_chunk):
        features = test_features[idx: min((idx + imgs_per_chunk), num_test_images), :]
        targets = test_labels[idx: min((idx + imgs_per_chunk), num_test_images)]
        batch_size = targets.shape[0]
        similarity = torch.mm(features, train_features)
        distances, indices = similarity.topk(k, largest=True, sorted=True)
        candidates = train_labels.view(1, -1).expand(batch_size, -1)
        retrieved_neighbors = torch.gather(candidates, 1, indices)
        retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
        retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
        distances_transform = distances.clone().div_(T).exp_()
        probs = torch.sum(
            torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes), distances_transform.view(batch_size, -1, 1)),
            1,
        )
        _, predictions = probs.sort(1, True)
        correct = predictions.eq(targets.data.view(-1, 1))
        top1 = top1 + correct.narrow(1, 0, 1).sum().item()
        top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()
        total += targets.size(0)
    return int(top1), int(top5)


def normalize(x):
    n = np.sqrt((x.astype(np.float64) ** 2).sum(1, keepdims=True))
    return x.astype(np.float64) / np.maximum(n, 1e-12)


def ref_knn(tr, ytr, te, yte, k):
    """float64 k-NN with dinoc's tie rule; also flags rows near a tie and top-5 tie ambiguity."""
    sims = normalize(te) @ normalize(tr).T
    c1 = c5 = amb = 0
    near = np.zeros(len(te), bool)
    n5 = min(5, k, NCLS)
    for i in range(len(te)):
        order = np.lexsort((np.arange(len(tr)), -sims[i]))  # by -sim, then index
        s = sims[i, order]
        if k < len(tr) and s[k - 1] - s[k] < MARGIN:
            near[i] = True
        score = np.zeros(NCLS)
        for j in order[:k]:
            score[ytr[j]] += np.exp(sims[i, j] / T)
        t = yte[i]
        rank = int((score > score[t]).sum() + ((score == score[t]) & (np.arange(NCLS) < t)).sum())
        c1 += rank == 0
        c5 += rank < n5
        # only the target's comparisons decide its rank
        other = np.delete(score, t)
        if score[t] > 0 and (np.abs(other - score[t]) < MARGIN * score[t]).any():
            near[i] = True
        if score[t] == 0 and (score > 0).sum() < n5:
            amb += 1
    return c1, c5, amb, near


def make_knn(out_dir):
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((NCLS, DIM)) * 1.2

    def draw(n):
        y = rng.integers(0, NCLS, n)
        x = centers[y] + rng.standard_normal((n, DIM))
        flip = rng.random(n) < 0.1
        y[flip] = rng.integers(0, NCLS, flip.sum())
        return x.astype(np.float32), y.astype(np.int32)

    tr, ytr = draw(NTR)
    te, yte = draw(NTE)
    near = np.zeros(NTE, bool)
    for k in KS:
        near |= ref_knn(tr, ytr, te, yte, k)[3]
    te, yte = te[~near], yte[~near]
    print(f"knn: dropped {near.sum()} of {NTE} test rows near a tie", file=sys.stderr)
    out = {"train": tr, "ytrain": ytr, "test": te, "ytest": yte, "ks": np.array(KS, np.int32),
           "T": np.array([T], np.float64)}
    ttr = torch.nn.functional.normalize(torch.from_numpy(tr), dim=1, p=2)
    tte = torch.nn.functional.normalize(torch.from_numpy(te), dim=1, p=2)
    res = {n: [] for n in ("torch_top1", "torch_top5", "ref_top1", "ref_top5", "ambiguous5")}
    for k in KS:
        a1, a5 = knn_classifier(ttr, torch.from_numpy(ytr).long(), tte, torch.from_numpy(yte).long(), k, T, NCLS)
        r1, r5, amb, _ = ref_knn(tr, ytr, te, yte, k)
        assert a1 == r1, (k, a1, r1)
        assert abs(a5 - r5) <= amb, (k, a5, r5, amb)
        for n, v in zip(res, (a1, a5, r1, r5, amb)):
            res[n].append(v)
        print(f"knn k={k}: top1 {r1}/{len(te)} top5 {r5} (torch {a5}, ambiguous {amb})", file=sys.stderr)
    for n, v in res.items():
        out[n] = np.array(v, np.int64)
    st.save(os.path.join(out_dir, "knn.safetensors"), out, {"torch": torch.__version__})


def make_sgd(out_dir, D=24, K=5, B=16, steps=3, lrs=(0.05, 0.3)):
    g = torch.Generator().manual_seed(11)
    w0 = torch.randn(K, D, generator=g) * 0.1
    b0 = torch.randn(K, generator=g) * 0.1
    xs = [torch.randn(B, D, generator=g) for _ in range(steps)]
    ys = [torch.randint(0, K, (B,), generator=g) for _ in range(steps)]
    out = {"w0": w0, "b0": b0, "lr": np.array(lrs, np.float64)}
    heads, opts = [], []
    for lr in lrs:
        lin = nn.Linear(D, K)
        with torch.no_grad():
            lin.weight.copy_(w0)
            lin.bias.copy_(b0)
        heads.append(lin)
        opts.append(torch.optim.SGD(lin.parameters(), lr=lr, momentum=0.9, weight_decay=0, foreach=False))
    for s in range(steps):
        losses = []
        for lin, opt in zip(heads, opts):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(lin(xs[s]), ys[s])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out[f"x.{s}"] = xs[s]
        out[f"y.{s}"] = ys[s].to(torch.int32)
        out[f"w.{s}"] = torch.cat([h.weight.detach() for h in heads])
        out[f"b.{s}"] = torch.cat([h.bias.detach() for h in heads])
        out[f"loss.{s}"] = np.array(losses, np.float64)
    st.save(os.path.join(out_dir, "sgd.safetensors"), out,
            {"torch": torch.__version__, "steps": steps, "D": D, "K": K, "B": B})


def main():
    out_dir = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures", "eval")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    make_knn(out_dir)
    make_sgd(out_dir)
    print(f"wrote {out_dir}/knn.safetensors, sgd.safetensors", file=sys.stderr)


if __name__ == "__main__":
    main()
