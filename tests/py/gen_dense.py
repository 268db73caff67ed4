"""gen_dense.py OUTDIR: fixtures for tests/test_dense.c (PCA, segmentation scores, upsampling).

Writes OUTDIR/dense/pca.safetensors, for two cases c in {tall, wide}:
  X.c [n, D] F32            features with a planted spectrum (random orthonormal directions scaled
                            10, 6, 4, 2.5, 1.5, ... plus isotropic noise and an offset);
                            tall: n 400, D 48; wide: n 30, D 100 (fewer rows than features: rank 29)
  mean.c [D] F64, comp.c [3, D] F64, var.c [3] F64, ratio.c [3] F64
                            numpy.linalg.eigh of np.cov(X, ddof=1) in float64 (top 3, descending;
                            sign undefined: the test compares up to sign), ratio = var / trace
and OUTDIR/dense/seg.safetensors:
  truth, pred [N] U8        random pixel classes in 0..K-1 (K = 6; class 5 never occurs, class 4
                            only predicted, so its IoU is 0 and class 5's is NaN)
  iou [K] F64 (NaN = no union), miou [1] F64 (nanmean), pixel_acc [1] F64   computed by numpy
  up_in.a [5, 7, 3] F32, up_out.a [13, 17, 3] F32   torch F.interpolate(bilinear, align_corners=False)
  up_in.b [7, 7, 11] F32, up_out.b [28, 28, 11] F32   the Fashion-MNIST geometry (patch 4)

Run with Debian's python3 (torch 1.13): /usr/bin/python3 tests/py/gen_dense.py build/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def pca_case(rng, n, D):
    scales = np.array([10, 6, 4, 2.5, 1.5] + [1.0 / (1 + i) for i in range(D - 5)])
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    Z = rng.standard_normal((n, D)) * scales
    X = Z @ Q.T + 0.05 * rng.standard_normal((n, D)) + rng.standard_normal(D)
    X = X.astype(np.float32)
    Xd = X.astype(np.float64)
    C = np.cov(Xd, rowvar=False, ddof=1)
    w, V = np.linalg.eigh(C)
    idx = np.argsort(w)[::-1][:3]
    return X, Xd.mean(0), V[:, idx].T.copy(), w[idx].copy(), w[idx] / np.trace(C)


def main():
    out = os.path.join(sys.argv[1], "dense")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(6)
    t = {}
    for name, n, D in (("tall", 400, 48), ("wide", 30, 100)):
        X, mean, comp, var, ratio = pca_case(rng, n, D)
        t["X." + name], t["mean." + name], t["comp." + name] = X, mean, comp
        t["var." + name], t["ratio." + name] = var, ratio
    st.save(os.path.join(out, "pca.safetensors"), t)

    K, N = 6, 5000
    truth = rng.integers(0, 4, N).astype(np.uint8)  # classes 0..3 present
    pred = truth.copy()
    flip = rng.random(N) < 0.3
    pred[flip] = rng.integers(0, 5, flip.sum())  # class 4 only ever predicted
    conf = np.zeros((K, K), np.int64)
    np.add.at(conf, (truth, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    s = {"truth": truth, "pred": pred, "iou": iou, "miou": np.array([np.nanmean(iou)]),
         "pixel_acc": np.array([tp.sum() / N])}
    for name, (ih, iw, C, oh, ow) in (("a", (5, 7, 3, 13, 17)), ("b", (7, 7, 11, 28, 28))):
        x = torch.randn(ih, iw, C, generator=torch.Generator().manual_seed(ord(name)))
        y = F.interpolate(x.permute(2, 0, 1)[None], size=(oh, ow), mode="bilinear", align_corners=False)
        s["up_in." + name], s["up_out." + name] = x, y[0].permute(1, 2, 0).contiguous()
    st.save(os.path.join(out, "seg.safetensors"), s)


if __name__ == "__main__":
    main()
