"""gen_optim.py OUTDIR: fixtures for tests/test_optim.c (AdamW, clipping, schedules vs PyTorch).

Writes OUTDIR/optim/adamw.safetensors. Two runs r of STEPS torch.optim.AdamW steps (torch 1.13,
foreach=False: the single-tensor path dinoc mirrors) over four parameters in two param groups:
  group 0 (decayed):   weight_decay = wd[s] * WD_MULT0, lr = lr[s] * LR_MULT0: p0 [64,32], p2 [1,1,32],
                       p3 [10,64]
  group 1 (no decay):  weight_decay = 0, lr = lr[s]: p1 [64]
lr[s] and wd[s] come from DINO's cosine_scheduler (copied below). Before each step the gradients are
clipped: run 0 with torch.nn.utils.clip_grad_norm_(params, 1.0), run 1 with DINO's per-parameter
utils.clip_gradients(clip=0.05) and betas (0.9, 0.95), eps 1e-6. Step 4's gradient is 1000x larger so
global clipping fires; per-parameter clipping fires on most steps.
Tensors (k = parameter 0..3, s = step 0..STEPS-1):
  run.r.init.k                  F32  initial parameter
  run.r.grad.s.k                F32  gradient before clipping
  run.r.clipped.s.k             F32  gradient after clipping
  run.r.param.s.k / exp_avg.s.k / exp_avg_sq.s.k   F32  state after step s
  run.r.lr, run.r.wd            F64 [STEPS]  schedule values given to the step (before multipliers)
  run.r.lr_mult, run.r.wd_mult  F64 [4]      per-parameter multipliers
  run.r.hyper                   F64 [4]      beta1, beta2, eps, clip threshold
  run.r.norm64                  F64 [STEPS]  global grad norm before clipping, float64 numpy
  run.r.norm_torch              F32 [STEPS]  what torch's clip_grad_norm_ returned (run 0 only)
  sched.j.args                  F64 [5]      base, final, total_iters, warmup_iters, start_warmup
  sched.j.values                F64 [total]  cosine_scheduler(...) values
metadata: runs, steps, scheds, torch version, run.r.clip ("global" | "per_param").

Run with Debian's python3 (torch 1.13): /usr/bin/python3 tests/py/gen_optim.py build/fixtures
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

STEPS = 10
SHAPES = [(64, 32), (64,), (1, 1, 32), (10, 64)]
GROUP = [0, 1, 0, 0]
LR_MULT0 = 0.65 ** 3  # a layer-decay-like multiplier, not float32-representable on purpose
WD_MULT0 = 1.0
HUGE_STEP = 4


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                     start_warmup_value=0):
    """facebookresearch/dino utils.cosine_scheduler, verbatim apart from the assert."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)

    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))

    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def clip_gradients(params, clip):
    """DINO utils.clip_gradients over a parameter list."""
    norms = []
    for p in params:
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def run(r, clip_mode, betas, eps, clip, out, meta):
    g = torch.Generator().manual_seed(1234 + r)
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.5) for s in SHAPES]
    for k, p in enumerate(params):
        out[f"run.{r}.init.{k}"] = p.detach().clone()
    lr_mult = [LR_MULT0 if GROUP[k] == 0 else 1.0 for k in range(4)]
    wd_mult = [WD_MULT0 if GROUP[k] == 0 else 0.0 for k in range(4)]
    groups = [
        {"params": [params[k] for k in range(4) if GROUP[k] == 0], "lr_mult": LR_MULT0,
         "wd_mult": WD_MULT0},
        {"params": [params[k] for k in range(4) if GROUP[k] == 1], "lr_mult": 1.0, "wd_mult": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=betas, eps=eps, weight_decay=0.0, foreach=False)
    # Per-iteration schedules as DINO builds them (10 'epochs' of 1 iteration, 3 of warmup).
    lr_s = cosine_scheduler(5e-3, 1e-5, STEPS, 1, warmup_epochs=3, start_warmup_value=1e-4)
    wd_s = cosine_scheduler(0.05, 0.4, STEPS, 1)
    norms64, norms_t = [], []
    for s in range(STEPS):
        scale = 1000.0 if s == HUGE_STEP else 1.0
        grads = [torch.randn(sh, generator=g) * 0.01 * scale for sh in SHAPES]
        for k, p in enumerate(params):
            p.grad = grads[k].clone()
            out[f"run.{r}.grad.{s}.{k}"] = grads[k]
        norms64.append(np.sqrt(sum(float(np.sum(x.numpy().astype(np.float64) ** 2)) for x in grads)))
        if clip_mode == "global":
            norms_t.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
        else:
            clip_gradients(params, clip)
        for k, p in enumerate(params):
            out[f"run.{r}.clipped.{s}.{k}"] = p.grad.detach().clone()
        for pg in opt.param_groups:
            pg["lr"] = lr_s[s] * pg["lr_mult"]
            pg["weight_decay"] = wd_s[s] * pg["wd_mult"]
        opt.step()
        for k, p in enumerate(params):
            stt = opt.state[p]
            out[f"run.{r}.param.{s}.{k}"] = p.detach().clone()
            out[f"run.{r}.exp_avg.{s}.{k}"] = stt["exp_avg"].clone()
            out[f"run.{r}.exp_avg_sq.{s}.{k}"] = stt["exp_avg_sq"].clone()
    out[f"run.{r}.lr"] = np.asarray(lr_s, dtype=np.float64)
    out[f"run.{r}.wd"] = np.asarray(wd_s, dtype=np.float64)
    out[f"run.{r}.lr_mult"] = np.asarray(lr_mult, dtype=np.float64)
    out[f"run.{r}.wd_mult"] = np.asarray(wd_mult, dtype=np.float64)
    out[f"run.{r}.hyper"] = np.asarray([betas[0], betas[1], eps, clip], dtype=np.float64)
    out[f"run.{r}.norm64"] = np.asarray(norms64, dtype=np.float64)
    if norms_t:
        out[f"run.{r}.norm_torch"] = np.asarray(norms_t, dtype=np.float32)
    meta[f"run.{r}.clip"] = clip_mode


# (base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value)
SCHEDS = [
    (5e-4, 1e-6, 10, 10, 1, 0.0),        # DINO lr: warmup then cosine
    (0.04, 0.4, 10, 5, 0, 0.0),          # DINO wd: no warmup, rising
    (0.996, 1.0, 7, 3, 0, 0.0),          # teacher momentum
    (1e-3, 1e-6, 4, 5, 4, 0.0),          # total == warmup: linspace only
    (2e-3, 1e-5, 6, 1, 1, 1e-4),         # a single warmup iteration: start value, not base
    (5e-3, 1e-5, 300, 100, 10, 1e-6),    # DINO-sized (30000 iterations)
    (0.07, 0.07, 5, 4, 2, 0.04),         # constant after warmup
]


def main():
    outdir = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures", "optim")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    out, meta = {}, {}
    run(0, "global", (0.9, 0.999), 1e-8, 1.0, out, meta)
    run(1, "per_param", (0.9, 0.95), 1e-6, 0.05, out, meta)
    for j, (base, final, ep, nip, wep, start) in enumerate(SCHEDS):
        v = cosine_scheduler(base, final, ep, nip, wep, start)
        out[f"sched.{j}.args"] = np.asarray([base, final, ep * nip, wep * nip, start], dtype=np.float64)
        out[f"sched.{j}.values"] = np.asarray(v, dtype=np.float64)
    meta.update({"runs": 2, "steps": STEPS, "scheds": len(SCHEDS), "torch": torch.__version__})
    st.save(os.path.join(outdir, "adamw.safetensors"), out, meta)
    print(f"wrote {outdir}/adamw.safetensors ({len(out)} tensors)")


if __name__ == "__main__":
    main()
