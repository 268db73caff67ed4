"""gen_clip_eval.py OUTDIR: fixtures for tests/test_clip_eval.c (zero-shot ensembling and top-k,
retrieval recall), computed with numpy in float64.

Writes OUTDIR/clip_eval/clip_eval.safetensors:
  ens.emb [K*T, P] F32      T template embeddings per class (random, NOT normalised: norms 0.5..3)
  ens.W [K, P] F32          prompt ensemble of each class (openai/CLIP zeroshot_classifier:
                            normalise each row, mean over templates, normalise again)
  zs.x [N, P] F32           image embeddings (not normalised); zs.y [N] I32 labels
  zs.logits [N, K] F32      100 * normalise(x) . W^T
  zs.top5 [N, 5] I32        the 5 best classes per row (no near-ties: min gap checked > 1e-4)
  zs.acc [2] F64            top-1 / top-5 accuracy
  rf.img [NI, P], rf.txt [NT, P] F32, rf.pairs [NP, 2] I32: random float embeddings, texts near
                            their images plus noise; some images share a text, some pairs repeat
  rf.recall [2, 3] F64      R@1/5/10 text->image (row 0) and image->text (row 1), CLIP_benchmark's
                            definitions with dinoc's tie rule; rf.mrank [2] F64 mean ranks
  ri.* the same on small-integer embeddings: every score is an exact integer, so ties are
                            everywhere and the tie rule (lower index first) decides the ranks
Run with Debian's python3: /usr/bin/python3 tests/py/gen_clip_eval.py build/fixtures
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def normalise(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def ensemble(emb, K, T):
    e = normalise(emb.astype(np.float64)).reshape(K, T, -1).mean(axis=1)
    return normalise(e)


def rank_of(scores, positives):
    """Candidates ordered by score desc, then index asc; rank = position of the first positive."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    pos = set(positives)
    for r, c in enumerate(order):
        if c in pos:
            return r
    raise AssertionError


def recall(img, txt, pairs, ks=(1, 5, 10)):
    S = txt.astype(np.float64) @ img.astype(np.float64).T  # [NT, NI]
    t2i = {}
    i2t = {}
    for i, t in pairs:
        t2i.setdefault(t, []).append(i)
        i2t.setdefault(i, []).append(t)
    rt = [rank_of(S[t], v) for t, v in sorted(t2i.items())]
    ri = [rank_of(S[:, i], v) for i, v in sorted(i2t.items())]
    rec = np.array([[np.mean([r < k for r in rs]) for k in ks] for rs in (rt, ri)])
    return rec, np.array([np.mean(rt) + 1, np.mean(ri) + 1]), S


def make_pairs(rng, NI, NT):
    pairs = [(i, i) for i in range(NI)]                     # every image its own caption
    extra = NT - NI
    for t in range(NI, NI + extra):
        pairs.append((int(rng.integers(NI)), t))             # second captions
    for _ in range(6):                                       # texts shared by two images
        pairs.append((int(rng.integers(NI)), int(rng.integers(NT))))
    pairs += pairs[:3]                                       # repeated pairs count once
    return np.array(pairs, dtype=np.int32)


def main(out):
    d = os.path.join(out, "clip_eval")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(20261126)
    t = {}
    K, T, P, N = 7, 5, 16, 40
    emb = rng.standard_normal((K * T, P)) * rng.uniform(0.5, 3, (K * T, 1))
    W = ensemble(emb, K, T)
    t["ens.emb"], t["ens.W"] = emb.astype(np.float32), W.astype(np.float32)
    while True:
        x = rng.standard_normal((N, P))
        logits = 100 * normalise(x) @ W.T
        srt = -np.sort(-logits, axis=1)
        if np.min(srt[:, :6] - srt[:, 1:7]) > 1e-4:
            break
    y = rng.integers(0, K, N).astype(np.int32)
    y[:10] = np.argmax(logits[:10], axis=1)                  # some right answers
    top5 = np.argsort(-logits, axis=1)[:, :5]
    acc = [np.mean(top5[:, 0] == y), np.mean([y[i] in top5[i] for i in range(N)])]
    t["zs.x"], t["zs.y"] = x.astype(np.float32), y
    t["zs.logits"], t["zs.top5"], t["zs.acc"] = logits.astype(np.float32), top5.astype(np.int32), np.array(acc)

    NI, NT, P = 30, 45, 8
    while True:
        img = rng.standard_normal((NI, P))
        pairs = make_pairs(rng, NI, NT)
        txt = np.zeros((NT, P))
        for i, tt in pairs:
            txt[tt] = img[i] + 1.2 * rng.standard_normal(P)
        rec, mr, S = recall(img, txt, pairs)
        gaps = np.diff(np.sort(S, axis=None))
        if gaps.min() > 1e-5:                                # float32 rounding cannot reorder
            break
    t["rf.img"], t["rf.txt"], t["rf.pairs"] = img.astype(np.float32), txt.astype(np.float32), pairs
    t["rf.recall"], t["rf.mrank"] = rec, mr

    img = rng.integers(-2, 3, (NI, P)).astype(np.float64)
    img[7] = img[3]                                          # identical images: exact ties
    pairs = make_pairs(rng, NI, NT)
    txt = rng.integers(-1, 2, (NT, P)).astype(np.float64)
    for i, tt in pairs[:NI]:
        txt[tt] = np.clip(img[i] + rng.integers(-1, 2, P), -2, 2)
    rec, mr, _ = recall(img, txt, pairs)
    t["ri.img"], t["ri.txt"], t["ri.pairs"] = img.astype(np.float32), txt.astype(np.float32), pairs
    t["ri.recall"], t["ri.mrank"] = rec, mr
    st.save(os.path.join(d, "clip_eval.safetensors"), t)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures")
