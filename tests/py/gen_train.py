"""gen_train.py OUTDIR: PyTorch autograd references for the ViT backward (tests/test_vit_train.c).

For small DINOv2-with-registers, DINOv2 (SwiGLU) and ViT (DINO v1 layout) models with random weights
(vit_ref.init_random), writes OUTDIR/train/<name>/ as a Hugging Face folder plus grads.safetensors:
pixel_values, bool_masked_pos (dinov2 models), dout (a random cotangent on the final normed
tokens), last_hidden_state, and "grad.<HF tensor name>" for every parameter, from
loss = (last_hidden_state * dout).sum(). Inputs are non-square so the position embeddings are
resized (bicubic, or antialiased bicubic for the register model) and their backward is exercised.
The same loss under Bf16Train gives "bf16.last_hidden_state" and "bf16.grad.<name>": dinoc's bf16
training (every Linear and the patch Conv2d multiply bf16-rounded inputs and weights, and their
backward products bf16-rounded incoming gradients, all accumulating in fp32); "bf16p.*" is the same
with the pixels perturbed by 1e-6 relative (PyTorch's own sensitivity to rounding flips).
Run with Debian's /usr/bin/python3 (torch 1.13)."""
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
import vit_ref  # noqa: E402

torch.set_num_threads(2)

def bf(t):
    return t.to(torch.bfloat16).to(torch.float32)


class BfLinear(torch.autograd.Function):
    """y = bf(x) @ bf(w)^T + b; backward: dx = bf(dy) @ bf(w), dw = bf(dy)^T @ bf(x), db = sum bf(dy)."""

    @staticmethod
    def forward(ctx, x, w, b):
        xr, wr = bf(x), bf(w)
        ctx.save_for_backward(xr, wr)
        return F.linear(xr, wr, b)

    @staticmethod
    def backward(ctx, dy):
        xr, wr = ctx.saved_tensors
        dyr = bf(dy)
        d2, x2 = dyr.reshape(-1, dyr.shape[-1]), xr.reshape(-1, xr.shape[-1])
        return dyr @ wr, d2.t() @ x2, d2.sum(0)


def bf_patch_conv(mod, x):
    """The patch Conv2d (kernel = stride = P) as unfold + BfLinear."""
    P = mod.kernel_size[0]
    B, _, H, W = x.shape
    cols = F.unfold(x, P, stride=P).transpose(1, 2)  # [B, L, C*P*P], (c, ky, kx) as the weight
    y = BfLinear.apply(cols, mod.weight.reshape(mod.weight.shape[0], -1), mod.bias)
    return y.transpose(1, 2).reshape(B, -1, H // P, W // P)


class Bf16Train:
    """Within it, nn.Linear and nn.Conv2d run as dinoc's bf16 training products."""

    def __enter__(self):
        self.saved = nn.Linear.forward, nn.Conv2d.forward
        nn.Linear.forward = lambda mod, x: BfLinear.apply(x, mod.weight, mod.bias)
        nn.Conv2d.forward = bf_patch_conv
        return self

    def __exit__(self, *exc):
        nn.Linear.forward, nn.Conv2d.forward = self.saved


MODELS = {
    "reg_mlp": {"architectures": ["Dinov2WithRegistersModel"], "model_type": "dinov2_with_registers",
                "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "mlp_ratio": 4,
                "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": 32, "patch_size": 8,
                "num_channels": 3, "qkv_bias": True, "layerscale_value": 1.0, "use_swiglu_ffn": False,
                "num_register_tokens": 4},
    "dinov2_swiglu": {"architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": 48,
                      "num_hidden_layers": 2, "num_attention_heads": 3, "mlp_ratio": 4, "hidden_act": "gelu",
                      "layer_norm_eps": 1e-6, "image_size": 32, "patch_size": 8, "num_channels": 3,
                      "qkv_bias": True, "layerscale_value": 1.0, "use_swiglu_ffn": True},
    "vit": {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
            "image_size": 32, "patch_size": 8, "num_channels": 3, "qkv_bias": True},
}


def bf16_pass(model, x, mask, dout, prefix, tensors):
    """The loss's output and gradients under Bf16Train into tensors[prefix + ...]."""
    model.zero_grad()
    with Bf16Train():
        out = model(x, bool_masked_pos=mask, keep_hidden=False)["last_hidden_state"]
    (out * dout).sum().backward()
    tensors[prefix + "last_hidden_state"] = out.detach()
    for k, p in model.named_parameters():
        tensors[prefix + "grad." + k] = p.grad.detach().clone()


def main(out):
    root = os.path.join(out, "train")
    os.makedirs(root, exist_ok=True)
    for i, (name, cfg) in enumerate(MODELS.items()):
        torch.manual_seed(100 + i)
        model = vit_ref.ViTRef(cfg)
        vit_ref.init_random(model, seed=200 + i)
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        st.save(os.path.join(d, "model.safetensors"), {k: v for k, v in model.state_dict().items()},
                metadata={"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        B, H, W = 2, 24, 40
        P = cfg["patch_size"]
        npatch = (H // P) * (W // P)
        x = torch.randn(B, 3, H, W)
        mask = None
        if cfg["model_type"] != "vit":
            mask = torch.rand(B, npatch) < 0.3
        out_ = model(x, bool_masked_pos=mask, keep_hidden=False)["last_hidden_state"]
        dout = torch.randn_like(out_)
        model.zero_grad()
        (out_ * dout).sum().backward()
        tensors = {"pixel_values": x, "dout": dout, "last_hidden_state": out_.detach()}
        if mask is not None:
            tensors["bool_masked_pos"] = mask.to(torch.uint8)
        for k, p in model.named_parameters():
            tensors["grad." + k] = p.grad.detach().clone()
        bf16_pass(model, x, mask, dout, "bf16.", tensors)
        # PyTorch against itself: the same with the pixels moved by ~1e-6 relative (the size of an
        # fp32 summation-order difference), to bound how far rounding flips alone carry
        xp = x * (1 + 1e-6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(300 + i)))
        bf16_pass(model, xp, mask, dout, "bf16p.", tensors)
        st.save(os.path.join(d, "grads.safetensors"), tensors,
                metadata={"pos_interp": model.default_pos_interp})
        print("wrote", d)


if __name__ == "__main__":
    main(sys.argv[1])
