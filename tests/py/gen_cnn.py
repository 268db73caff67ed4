"""gen_cnn.py OUTDIR: forward/backward fixtures of the CNN ops (src/ops/conv.c, batchnorm.c,
pool.c) for tests/test_cnn.c, by the recipe of gen_ops.py: random inputs and parameters, a random
dout, L = (out * dout).sum(), torch autograd for every gradient. Writes OUTDIR/cnn/<case>.safetensors:

  conv_<name>   inp [B,C,H,W], w [K,C/g,k,k], b [K] (or none), dout, out, dinp, dw, db;
                metadata stride, pad, groups. Cases: k3s2p1 (strided, padded, odd sizes),
                g2 (grouped), 1x1 (the direct path), 1x1s2 (downsample), k7s2p3 (ResNet stem)
  bn_train      inp, w, b, rm0, rv0 (running stats before), dout, out, dinp, dw, db, rm, rv
                (after one training forward); metadata eps 1e-5, momentum 0.1
  bn_eval       inp, w, b, rm, rv, out
  maxpool       inp [2,3,9,10], dout, out, dinp: 3x3 stride 2 pad 1 (ResNet's stem pool)
  avgpool       inp [2,3,9,10], dout, out, dinp: AvgPool2d(2) (CLIP's anti-aliased stride)
  gap           inp [2,5,3,4], dout, out [2,5], dinp: adaptive_avg_pool2d(1)
  relu          inp, dout, out, dinp

Float32 on the CPU, fixed seed. Run with Debian's python3 (torch 1.13):
/usr/bin/python3 tests/py/gen_cnn.py build/fixtures
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def leaf(t):
    return t.detach().clone().float().requires_grad_(True)


def backprop(out):
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    return dout


def case_conv(B, C, H, W, K, k, stride, pad, groups, bias=True):
    inp = leaf(torch.randn(B, C, H, W))
    w = leaf(torch.randn(K, C // groups, k, k) / (C // groups * k * k) ** 0.5)
    b = leaf(torch.randn(K)) if bias else None
    out = F.conv2d(inp, w, b, stride=stride, padding=pad, groups=groups)
    dout = backprop(out)
    t = {"inp": inp, "w": w, "dout": dout, "out": out, "dinp": inp.grad, "dw": w.grad}
    if bias:
        t.update({"b": b, "db": b.grad})
    return t, {"stride": stride, "pad": pad, "groups": groups}


def case_bn_train():
    B, C, H, W = 3, 5, 4, 6
    # channel offsets and scales, as conv outputs have
    inp = leaf(torch.randn(B, C, H, W) * (1 + torch.rand(1, C, 1, 1) * 2) + torch.randn(1, C, 1, 1) * 3)
    w, b = leaf(1 + 0.3 * torch.randn(C)), leaf(0.3 * torch.randn(C))
    rm0, rv0 = 0.5 * torch.randn(C), 0.5 + torch.rand(C)
    rm, rv = rm0.clone(), rv0.clone()
    out = F.batch_norm(inp, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    dout = backprop(out)
    return {"inp": inp, "w": w, "b": b, "rm0": rm0, "rv0": rv0, "dout": dout, "out": out,
            "dinp": inp.grad, "dw": w.grad, "db": b.grad, "rm": rm, "rv": rv}, \
        {"eps": "1e-5", "momentum": "0.1"}


def case_bn_eval():
    B, C, H, W = 2, 6, 3, 5
    inp = torch.randn(B, C, H, W) * 2 + 1
    w, b = 1 + 0.3 * torch.randn(C), 0.3 * torch.randn(C)
    rm, rv = 0.5 * torch.randn(C), 0.5 + torch.rand(C)
    out = F.batch_norm(inp, rm, rv, w, b, training=False, eps=1e-5)
    return {"inp": inp, "w": w, "b": b, "rm": rm, "rv": rv, "out": out}, {"eps": "1e-5"}


def case_unary(fn, shape):
    inp = leaf(torch.randn(*shape))
    out = fn(inp)
    dout = backprop(out)
    return {"inp": inp, "dout": dout, "out": out, "dinp": inp.grad}, {}


def main():
    out_dir = os.path.join(sys.argv[1], "cnn")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    cases = {
        "conv_k3s2p1": case_conv(2, 6, 9, 11, 8, 3, 2, 1, 1),
        "conv_g2": case_conv(2, 6, 7, 8, 4, 3, 1, 1, 2),
        "conv_1x1": case_conv(2, 8, 5, 6, 12, 1, 1, 0, 1, bias=False),
        "conv_1x1s2": case_conv(2, 8, 7, 6, 12, 1, 2, 0, 1, bias=False),
        "conv_k7s2p3": case_conv(2, 3, 16, 15, 8, 7, 2, 3, 1, bias=False),
        "bn_train": case_bn_train(),
        "bn_eval": case_bn_eval(),
        "maxpool": case_unary(lambda x: F.max_pool2d(x, 3, 2, 1), (2, 3, 9, 10)),
        "avgpool": case_unary(lambda x: F.avg_pool2d(x, 2), (2, 3, 9, 10)),
        "gap": case_unary(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), (2, 5, 3, 4)),
        "relu": case_unary(F.relu, (3, 4, 5, 6)),
    }
    for name, (tensors, meta) in cases.items():
        st.save(os.path.join(out_dir, name + ".safetensors"), tensors, meta)


if __name__ == "__main__":
    main()
