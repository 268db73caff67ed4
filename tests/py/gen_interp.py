"""gen_interp.py OUTDIR: fixtures for tests/test_interp.c (dinoc_bicubic_resize vs PyTorch).

Writes OUTDIR/interp/cases.safetensors holding, for every case k = 0 .. n-1:
  case.k.out     F32 [C, out_h, out_w]  torch.nn.functional.interpolate(bicubic, align_corners=False)
  case.k.params  F64 [3]                (antialias, sf_h, sf_w); sf <= 0 means size mode. F64 so the
                                        scale factors reach the C side bit for bit.
  case.k.in      is not stored: metadata "case.k.input" names the shared input tensor (in37, pos37,
                                        in14), metadata "case.k.name" describes the case.
and metadata "cases" = n, "torch" = torch.__version__.

Grids follow the position-embedding resizes the models do (reference/dino_dinov2.md 1.4):
  37 -> 16x16 (DINOv2 at 224), 37 -> 37x37, 37 -> 16x24, 14 -> 14x21 (DINO v1 at 224x336), 37 -> 74x74.
Each in four modes: size=, scale_factor=((h0 + 0.1) / M, (w0 + 0.1) / M) as Python doubles (original
DINO / DINOv2 non-reg), antialias=True with size= (DINOv2 reg, HF Dinov2WithRegisters), antialias=True
with scale factors (no reference uses it; kept as coverage of the AA scale path).

Run with Debian's python3 (torch 1.13): /usr/bin/python3 tests/py/gen_interp.py build/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

C = 384
GRIDS = [  # (input name, M, out_h, out_w)
    ("in37", 37, 16, 16),
    ("pos37", 37, 16, 16),
    ("in37", 37, 37, 37),
    ("in37", 37, 16, 24),
    ("in14", 14, 14, 21),
    ("in37", 37, 74, 74),
]
MODES = ["size", "scale", "aa_size", "aa_scale"]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_interp.py OUTDIR")
    out_dir = os.path.join(sys.argv[1], "interp")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    inputs = {
        "in37": torch.randn(C, 37, 37),
        # A DINOv2-like position embedding grid: pos_embed is trunc_normal(std=0.02) at init and keeps
        # that scale after training, so small values exercise the low bits of the weights.
        "pos37": torch.randn(C, 37, 37) * 0.02,
        "in14": torch.randn(C, 14, 14),
    }
    tensors = dict(inputs)
    meta = {"torch": torch.__version__}
    k = 0
    for in_name, m, oh, ow in GRIDS:
        x = inputs[in_name].unsqueeze(0).float()
        for mode in MODES:
            aa = mode.startswith("aa")
            if mode.endswith("scale"):
                # Exactly as dinov2 vision_transformer.py: float(h0 + 0.1) / M, a Python double.
                sf_h, sf_w = (oh + 0.1) / m, (ow + 0.1) / m
                y = F.interpolate(x, scale_factor=(sf_h, sf_w), mode="bicubic", align_corners=False,
                                  antialias=aa)
            else:
                sf_h = sf_w = -1.0
                y = F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False, antialias=aa)
            y = y[0].contiguous()
            assert y.shape == (C, oh, ow), (mode, y.shape, oh, ow)
            tensors[f"case.{k}.out"] = y
            tensors[f"case.{k}.params"] = np.array([1.0 if aa else 0.0, sf_h, sf_w], dtype=np.float64)
            meta[f"case.{k}.input"] = in_name
            meta[f"case.{k}.name"] = f"{in_name} {m}x{m}->{oh}x{ow} {mode}"
            k += 1
    meta["cases"] = k
    path = os.path.join(out_dir, "cases.safetensors")
    st.save(path, tensors, meta)
    print(f"wrote {k} cases to {path}")


if __name__ == "__main__":
    main()
