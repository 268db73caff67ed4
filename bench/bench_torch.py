"""bench_torch.py: PyTorch baseline throughput for the dinoc benchmarks.

  /usr/bin/python3 bench/bench_torch.py --model vits14 --batch 1 8 32 --threads 1 2 --iters 10 [--json]
      [--weights DIR] [--size 224]

Runs the reference DINOv2 ViT-S/14 (tests/py/vit_ref.py: D 384, depth 12, heads 6, patch 14) forward
under torch.inference_mode() on float32 images of --size x --size (default 224) and prints one line per
(batch, threads):
  torch vits14 batch=B threads=T img_s=X ms_per_batch=Y
--json prints a JSON list of those records at the end. Weights are random (vit_ref.init_random) unless
--weights names an HF dinov2 folder (config.json + model.safetensors), so C and torch can use the
same weights. Timing: warm-up runs, then repeat until at least max(5, --iters) runs and >= 1 s;
ms_per_batch is the median run.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

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
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    if a.weights:
        model = vit_ref.from_pretrained(a.weights)
    else:
        model = vit_ref.ViTRef(MODELS[a.model]).eval()
        vit_ref.init_random(model, seed=0)
    P = model.config["patch_size"]
    H = W = a.size // P * P
    records = []
    g = torch.Generator().manual_seed(0)
    for T in a.threads:
        torch.set_num_threads(T)
        for B in a.batch:
            x = torch.randn(B, 3, H, W, generator=g)
            with torch.inference_mode():
                for _ in range(a.warmup):
                    model(x, keep_hidden=False)
                times = []
                t_all = time.perf_counter()
                while len(times) < max(5, a.iters) or time.perf_counter() - t_all < a.min_time:
                    t0 = time.perf_counter()
                    model(x, keep_hidden=False)
                    times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            r = {"impl": "torch", "model": a.model if not a.weights else os.path.basename(a.weights.rstrip("/")),
                 "batch": B, "threads": T, "H": H, "W": W, "img_s": round(B / (ms / 1e3), 3),
                 "ms_per_batch": round(ms, 3), "runs": len(times), "torch": torch.__version__}
            records.append(r)
            print("torch %s batch=%d threads=%d img_s=%.2f ms_per_batch=%.1f"
                  % (r["model"], B, T, r["img_s"], ms), flush=True)
    if a.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
