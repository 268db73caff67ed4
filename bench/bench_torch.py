"""bench_torch.py: PyTorch baseline throughput for the dinoc benchmarks.

  /usr/bin/python3 bench/bench_torch.py --model vits14 --batch 1 8 32 --threads 1 2 --iters 10 [--json]
      [--weights DIR] [--size 224]

Runs the reference DINOv2 ViT-S/14 (tests/py/vit_ref.py: D 384, depth 12, heads 6, patch 14) forward
under torch.inference_mode() on float32 images of --size x --size (default 224) and prints one line per
(batch, threads):
  torch vits14 batch=B threads=T img_s=X ms_per_batch=Y
--json prints a JSON list of those records at the end (each with the process's peak RSS so far).
--bf16 runs the forward under torch.autocast("cpu", torch.bfloat16) (PyTorch's bf16 mode).
--export-onnx FILE writes the reference module's forward (last_hidden_state, dynamic batch) as ONNX
(opset 14) for bench/ort/bench_ort.js and exits. Weights are random (vit_ref.init_random) unless
--weights names an HF dinov2 folder (config.json + model.safetensors), so C and torch can use the
same weights. Timing: warm-up runs, then repeat until at least max(5, --iters) runs and >= 1 s;
ms_per_batch is the median run.
"""
import argparse
import contextlib
import ctypes
import json
import math
import os
import resource
import statistics
import sys
import time

# libgomp's default spin-waiting fights OpenBLAS's own pthreads on few cores; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
import vit_ref  # noqa: E402

MODELS = {
    "vits14": dict(model_type="dinov2", hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                   patch_size=14, image_size=518, mlp_ratio=4, layer_norm_eps=1e-6),
    "vitb14": dict(model_type="dinov2", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   patch_size=14, image_size=518, mlp_ratio=4, layer_norm_eps=1e-6),
    "vits16": dict(model_type="vit", hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                   patch_size=16, image_size=224, intermediate_size=1536, layer_norm_eps=1e-12),
}


def set_threads(n):
    """torch intra-op threads and, for Debian's torch (BLAS_INFO=generic, OpenBLAS-pthread behind
    libblas.so.3), OpenBLAS's own thread count, which torch does not set."""
    torch.set_num_threads(n)
    for lib in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(lib).openblas_set_num_threads(n)
        except (OSError, AttributeError):
            pass


class FastForward:
    """Inference forward with the same math as vit_ref.ViTRef (last_hidden_state only): fused qkv
    weight with the 1/sqrt(hs) scale folded into q, LayerScale folded into the output projections,
    contiguous batched matmuls. Checked against the reference at start-up."""

    def __init__(self, model):
        c = model.config
        self.m = model
        self.vit = c["model_type"] == "vit"
        self.D, self.NH = c["hidden_size"], c["num_attention_heads"]
        self.hs = self.D // self.NH
        self.eps = c["layer_norm_eps"]
        self.layers = []
        sc = 1.0 / math.sqrt(self.hs)
        with torch.no_grad():
            for blk in model.encoder.layer:
                a = blk.attention.attention
                L = {}
                L["wqkv"] = torch.cat([a.query.weight * sc, a.key.weight, a.value.weight], 0).contiguous()
                L["bqkv"] = torch.cat([a.query.bias * sc, a.key.bias, a.value.bias], 0).contiguous()
                o = blk.attention.output.dense
                if self.vit:
                    n1, n2 = blk.layernorm_before, blk.layernorm_after
                    g1 = g2 = None
                    L["w1"], L["b1"] = blk.intermediate.dense.weight, blk.intermediate.dense.bias
                    w2, b2 = blk.output.dense.weight, blk.output.dense.bias
                    L["swiglu"] = False
                else:
                    n1, n2 = blk.norm1, blk.norm2
                    g1, g2 = blk.layer_scale1.lambda1, blk.layer_scale2.lambda1
                    mlp = blk.mlp
                    L["swiglu"] = hasattr(mlp, "weights_in")
                    fc1, fc2 = (mlp.weights_in, mlp.weights_out) if L["swiglu"] else (mlp.fc1, mlp.fc2)
                    L["w1"], L["b1"] = fc1.weight, fc1.bias
                    w2, b2 = fc2.weight, fc2.bias
                L["wo"] = (o.weight * g1[:, None] if g1 is not None else o.weight).contiguous()
                L["bo"] = (o.bias * g1 if g1 is not None else o.bias).contiguous()
                L["w2"] = (w2 * g2[:, None] if g2 is not None else w2).contiguous()
                L["b2"] = (b2 * g2 if g2 is not None else b2).contiguous()
                L["n1"] = (n1.weight, n1.bias)
                L["n2"] = (n2.weight, n2.bias)
                self.layers.append(L)

    def __call__(self, x):
        m = self.m
        t = m.embeddings(x, None, m.default_pos_interp)
        B, T, D = t.shape
        NH, hs, eps = self.NH, self.hs, self.eps
        for L in self.layers:
            y = F.layer_norm(t, (D,), L["n1"][0], L["n1"][1], eps)
            qkv = F.linear(y, L["wqkv"], L["bqkv"]).view(B, T, 3, NH, hs)
            q = qkv[:, :, 0].transpose(1, 2).reshape(B * NH, T, hs)
            kt = qkv[:, :, 1].permute(0, 2, 3, 1).reshape(B * NH, hs, T)
            v = qkv[:, :, 2].transpose(1, 2).reshape(B * NH, T, hs)
            p = torch.softmax(torch.bmm(q, kt), dim=-1)
            o = torch.bmm(p, v).view(B, NH, T, hs).transpose(1, 2).reshape(B, T, D)
            t = t + F.linear(o, L["wo"], L["bo"])
            y = F.layer_norm(t, (D,), L["n2"][0], L["n2"][1], eps)
            h = F.linear(y, L["w1"], L["b1"])
            if L["swiglu"]:
                x1, x2 = h.chunk(2, dim=-1)
                h = F.silu(x1) * x2
            else:
                h = F.gelu(h)
            t = t + F.linear(h, L["w2"], L["b2"])
        return m.layernorm(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vits14", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=5, help="minimum timed runs (at least 5)")
    ap.add_argument("--min-time", type=float, default=1.0, help="minimum timed seconds per point")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", type=int, default=224, help="image height = width")
    ap.add_argument("--weights", help="HF folder (config.json + model.safetensors) to load instead")
    ap.add_argument("--impl", choices=["fast", "ref"], default="fast",
                    help="fast: FastForward (default); ref: the vit_ref module as written")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16)")
    ap.add_argument("--export-onnx", metavar="FILE")
    a = ap.parse_args()

    if a.weights:
        model = vit_ref.from_pretrained(a.weights)
    else:
        model = vit_ref.ViTRef(MODELS[a.model]).eval()
        vit_ref.init_random(model, seed=0)
    P = model.config["patch_size"]
    H = W = a.size // P * P
    if a.export_onnx:
        class Last(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x, keep_hidden=False)["last_hidden_state"]
        with torch.no_grad():
            torch.onnx.export(Last(model), torch.randn(1, 3, H, W), a.export_onnx, input_names=["pixel_values"],
                              output_names=["last_hidden_state"], opset_version=14,
                              dynamic_axes={"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}})
        print("wrote %s (%dx%d)" % (a.export_onnx, H, W), file=sys.stderr)
        return
    fast = FastForward(model)
    with torch.inference_mode():
        x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(1))
        d = float((fast(x) - model(x, keep_hidden=False)["last_hidden_state"]).abs().max())
    if d > 1e-3:
        raise SystemExit("bench_torch: fast forward differs from the reference by %g" % d)
    fwd = fast if a.impl == "fast" else (lambda inp: model(inp, keep_hidden=False))
    records = []
    g = torch.Generator().manual_seed(0)
    for T in a.threads:
        set_threads(T)
        for B in a.batch:
            x = torch.randn(B, 3, H, W, generator=g)
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()
            with torch.inference_mode(), amp:
                for _ in range(a.warmup):
                    fwd(x)
                times = []
                t_all = time.perf_counter()
                while len(times) < max(5, a.iters) or time.perf_counter() - t_all < a.min_time:
                    t0 = time.perf_counter()
                    fwd(x)
                    times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            r = {"impl": "torch", "model": a.model if not a.weights else os.path.basename(a.weights.rstrip("/")),
                 "batch": B, "threads": T, "H": H, "W": W, "img_s": round(B / (ms / 1e3), 3),
                 "ms_per_batch": round(ms, 3), "runs": len(times), "torch": torch.__version__,
                 "impl_detail": a.impl, "precision": "bf16" if a.bf16 else "fp32",
                 "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            records.append(r)
            print("torch %s batch=%d threads=%d img_s=%.2f ms_per_batch=%.1f"
                  % (r["model"], B, T, r["img_s"], ms), flush=True)
    if a.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
