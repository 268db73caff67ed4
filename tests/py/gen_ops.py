"""gen_ops.py OUTDIR: per-op forward/backward fixtures for tests/test_ops_parity.c (llm.c's recipe,
doc/layernorm/layernorm.py): random inputs and parameters, a random dout, the fake loss
L = (out * dout).sum(), torch autograd for every gradient. Writes OUTDIR/ops/<case>.safetensors:

  linear              inp [M,K], w [N,K], b [N], dout, out, dinp, dw, db        M=50 K=96 N=80
  layernorm           inp [B*T,D], w, b, dout, out, dinp, dw, db               eps 1e-6 (metadata)
  gelu                inp, dout, out, dinp                                     exact erf GELU
  swiglu              inp [N,2F], dout, out, dinp                              SiLU(x1) * x2
  attention_t17/_t65  qkv [B,T,3D], dout, out, dqkv; metadata NH              B=2 D=64 NH=4
  resize_*            inp [C,h,w], dout, out, dinp; metadata antialias, sf_h, sf_w (repr of the
                      Python double; -1 = size mode), C=16, 8x8 -> 5x7 and -> 12x12 in size,
                      scale-factor ((o + 0.1) / 8, DINO's offset), antialias (size) and
                      antialias with scale factors (coverage of the C AA scale path)
  ce_ls0 / ce_ls01    logits [N,K], targets I64 [N], loss [1], dlogits         label_smoothing 0, 0.1

Attention is multi-head SDPA written out on the packed qkv exactly as the C layout: columns
[0,D) q, [D,2D) k, [2D,3D) v, head h at columns h*HS. Everything float32 on the CPU, fixed seed.
Run with Debian's python3 (torch 1.13): /usr/bin/python3 tests/py/gen_ops.py build/fixtures
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def leaf(t):
    return t.detach().clone().float().requires_grad_(True)


def backprop(out, dout):
    (out * dout).sum().backward()


def case_linear():
    M, K, N = 50, 96, 80
    inp, w, b = leaf(torch.randn(M, K)), leaf(torch.randn(N, K) * 0.1), leaf(torch.randn(N))
    out = F.linear(inp, w, b)
    dout = torch.randn(M, N)
    backprop(out, dout)
    return {"inp": inp, "w": w, "b": b, "dout": dout, "out": out, "dinp": inp.grad, "dw": w.grad,
            "db": b.grad}, {}


def case_layernorm():
    B, T, D = 2, 17, 64
    # a non-zero mean per row, as in the residual stream
    inp = leaf(torch.randn(B * T, D) * 2 + torch.randn(B * T, 1) * 3)
    w, b = leaf(1 + 0.2 * torch.randn(D)), leaf(0.2 * torch.randn(D))
    out = F.layer_norm(inp, (D,), w, b, eps=1e-6)
    dout = torch.randn(B * T, D)
    backprop(out, dout)
    return {"inp": inp, "w": w, "b": b, "dout": dout, "out": out, "dinp": inp.grad, "dw": w.grad,
            "db": b.grad}, {"eps": "1e-6"}


def case_gelu():
    inp = leaf(torch.randn(34, 256) * 2)
    out = F.gelu(inp)  # approximate="none": the erf form
    dout = torch.randn_like(out)
    backprop(out, dout)
    return {"inp": inp, "dout": dout, "out": out, "dinp": inp.grad}, {}


def case_swiglu():
    N, Fh = 34, 96
    inp = leaf(torch.randn(N, 2 * Fh) * 2)
    x1, x2 = inp[:, :Fh], inp[:, Fh:]
    out = F.silu(x1) * x2
    dout = torch.randn_like(out)
    backprop(out, dout)
    return {"inp": inp, "dout": dout, "out": out, "dinp": inp.grad}, {}


def case_attention(T):
    B, D, NH = 2, 64, 4
    HS = D // NH
    qkv = leaf(torch.randn(B, T, 3 * D))
    q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]

    def heads(x):  # [B, T, D] -> [B, NH, T, HS], head h = columns h*HS .. h*HS+HS-1
        return x.reshape(B, T, NH, HS).transpose(1, 2)
    s = heads(q) @ heads(k).transpose(-2, -1) * HS ** -0.5
    p = s.softmax(-1)
    out = (p @ heads(v)).transpose(1, 2).reshape(B, T, D)
    dout = torch.randn_like(out)
    backprop(out, dout)
    return {"qkv": qkv, "dout": dout, "out": out, "dqkv": qkv.grad}, {"NH": str(NH)}


def case_resize(oh, ow, mode):
    C, M = 16, 8
    inp = leaf(torch.randn(C, M, M))
    aa = mode.startswith("aa")
    if mode.endswith("scale"):
        sf_h, sf_w = (oh + 0.1) / M, (ow + 0.1) / M  # Python doubles, as DINO's interpolate_pos_encoding
        out = F.interpolate(inp[None], scale_factor=(sf_h, sf_w), mode="bicubic", align_corners=False,
                            antialias=aa)[0]
    else:
        sf_h = sf_w = -1.0
        out = F.interpolate(inp[None], size=(oh, ow), mode="bicubic", align_corners=False,
                            antialias=aa)[0]
    assert out.shape == (C, oh, ow), out.shape
    dout = torch.randn_like(out)
    backprop(out, dout)
    return {"inp": inp, "dout": dout, "out": out, "dinp": inp.grad}, {
        "antialias": "1" if aa else "0", "sf_h": repr(sf_h), "sf_w": repr(sf_w)}


def case_ce(ls):
    N, K = 37, 50
    logits = leaf(torch.randn(N, K) * 3)
    targets = torch.randint(0, K, (N,))
    loss = F.cross_entropy(logits, targets, label_smoothing=ls)
    loss.backward()
    return {"logits": logits, "targets": targets.to(torch.int64), "loss": loss.reshape(1),
            "dlogits": logits.grad}, {"label_smoothing": repr(ls)}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_ops.py OUTDIR")
    out_dir = os.path.join(sys.argv[1], "ops")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    cases = {
        "linear": case_linear,
        "layernorm": case_layernorm,
        "gelu": case_gelu,
        "swiglu": case_swiglu,
        "attention_t17": lambda: case_attention(17),
        "attention_t65": lambda: case_attention(65),
        "resize_size_down": lambda: case_resize(5, 7, "size"),
        "resize_size_up": lambda: case_resize(12, 12, "size"),
        "resize_scale_down": lambda: case_resize(5, 7, "scale"),
        "resize_scale_up": lambda: case_resize(12, 12, "scale"),
        "resize_aa_down": lambda: case_resize(5, 7, "aa"),
        "resize_aa_up": lambda: case_resize(12, 12, "aa"),
        "resize_aa_scale_down": lambda: case_resize(5, 7, "aa_scale"),
        "resize_aa_scale_up": lambda: case_resize(12, 12, "aa_scale"),
        "ce_ls0": lambda: case_ce(0.0),
        "ce_ls01": lambda: case_ce(0.1),
    }
    for name, fn in cases.items():
        tensors, meta = fn()
        meta["torch"] = torch.__version__
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        st.save(os.path.join(out_dir, name + ".safetensors"), tensors, meta)
    print(f"wrote {len(cases)} op fixtures to {out_dir}")


if __name__ == "__main__":
    main()
