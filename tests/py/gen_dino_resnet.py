"""gen_dino_resnet.py OUTDIR: PyTorch reference for one DINO step with a ResNet backbone
(tests/test_dino_resnet.c), as facebookresearch/dino main_dino.py runs one for --arch resnet50:
the backbone's fc replaced by Identity (features = global average of the last stage),
MultiCropWrapper (one backbone pass per crop size: the 2 global 28 px crops, then the 2 local 14 px
crops, both through the same network), BatchNorm in training mode for the student AND the teacher
(DINO never calls teacher.eval(); under no_grad the teacher's forward still uses batch statistics
and updates its running statistics), the EMA over parameters only (main_dino.py zips
parameters(), so BN buffers are not averaged), per-parameter gradient clipping, AdamW with DINO
v1's two groups (no decay for biases and 1-D tensors: every BN weight and bias here).

The step (DINOHead, DINOLoss, clipping, freeze_last_layer) is gen_dino.py's; the ResNet is
gen_resnet.py's (torchvision layout, resnet_small: small stem, BasicBlocks [2,2,2], widths 16/32/64,
1 channel) with its random BN weights and running statistics.

References run in float64 on the float32 inputs and weights (saved as float32), so they carry no
rounding of their own.

Cases (OUTDIR/dino_resnet/<case>/): frozen (norm_last_layer, freeze_last_layer active, clip 3,
teacher temp 0.04) and trained (weight_g trained, no freeze, clip 0.3, teacher temp 0.07). Each
holds model/ (config.json + model.safetensors: the student backbone before the step, running
statistics included) and step.safetensors:
  x [B, item] F32                the batch as dinoc's multi-crop transform lays it out
  teacher.<name>                 the teacher's state_dict (parameters and running statistics)
  shead.<name>, thead.<name>, center [K]
  sched [5] F64, cfg [13] F64    as gen_dino.py
  loss [1] F64
  grad.<name>, grad.head.<name>  student gradients after clipping (absent where torch has None)
  after.student.<name>, after.teacher.<name> (parameters and running statistics), after.shead.*,
  after.thead.*, after.center
num_batches_tracked is left out of the tensors (the test checks the counts: +2 student, +1 teacher).
Run with Debian's /usr/bin/python3 (torch 1.13)."""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_dino  # noqa: E402
import gen_resnet  # noqa: E402
import st  # noqa: E402

torch.set_num_threads(1)

NG, NL, B, G, L = 2, 2, 4, 28, 14
K, HID, BN, LAYERS = 64, 32, 16, 3
F_DIM = 64
CONFIG = {"model_type": "resnet", "arch": "resnet_small", "in_channels": 1, "num_classes": 0}
# gen_dino.dino_loss reads its crop counts from its module globals: this step's counts
gen_dino.NG, gen_dino.NL = NG, NL


class Wrapper(torch.nn.Module):
    """MultiCropWrapper: one backbone pass per crop size, the head once on all features."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops):
        return self.head(torch.cat([self.backbone.features(c) for c in crops]))


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def one_case(out, name, seed, norm_last_layer, freeze, clip, teacher_temp):
    root = os.path.join(out, "dino_resnet", name)
    mdir = os.path.join(root, "model")
    os.makedirs(mdir, exist_ok=True)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    backbone = gen_resnet.ResNet(False, [2, 2, 2], [16, 32, 64], 16, 1, 0, True)
    gen_resnet.randomize(backbone)
    head = gen_dino.DINOHead(F_DIM, K, norm_last_layer, LAYERS, HID, BN)
    gen_dino.init_head(head, g, not norm_last_layer)
    st.save(os.path.join(mdir, "model.safetensors"), {k: v.clone() for k, v in backbone.state_dict().items()},
            metadata={"format": "pt"})
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    student = Wrapper(backbone, head)
    teacher = Wrapper(gen_resnet.ResNet(False, [2, 2, 2], [16, 32, 64], 16, 1, 0, True),
                      gen_dino.DINOHead(F_DIM, K, True, LAYERS, HID, BN))
    teacher.load_state_dict(student.state_dict())
    with torch.no_grad():  # a teacher a few steps away from the student: parameters and BN stats
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for k, v in teacher.backbone.state_dict().items():
            if k.endswith("running_mean"):
                v.add_(0.05 * torch.randn(v.shape, generator=g))
    for p in teacher.parameters():
        p.requires_grad = False
    center = 0.3 * torch.randn(1, K, generator=g)
    globals_ = [torch.randn(B, 1, G, G, generator=g) for _ in range(NG)]
    locals_ = [torch.randn(B, 1, L, L, generator=g) for _ in range(NL)]
    x = torch.stack([torch.cat([c[b].reshape(-1) for c in globals_ + locals_]) for b in range(B)])

    tensors = {"x": x, "center": center[0].clone()}
    for k, v in state(teacher.backbone).items():
        tensors["teacher." + k] = v
    for k, v in head.state_dict().items():
        tensors["shead." + k] = v.clone()
    for k, v in teacher.head.state_dict().items():
        tensors["thead." + k] = v.clone()

    student.double().train()
    teacher.double().train()  # DINO's teacher: BN with batch statistics
    lr, wd, momentum = 5e-4 * B / 256 * 40, 0.04, 0.996
    regularized, not_regularized = [], []
    for n, p in student.named_parameters():
        if p.requires_grad:
            (not_regularized if n.endswith(".bias") or len(p.shape) == 1 else regularized).append(p)
    opt = torch.optim.AdamW([{"params": regularized, "weight_decay": wd},
                             {"params": not_regularized, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    with torch.no_grad():
        teacher_output = teacher([torch.cat(globals_).double()])
    student_output = student([torch.cat(globals_).double(), torch.cat(locals_).double()])
    loss, new_center = gen_dino.dino_loss(student_output, teacher_output, center.double(), teacher_temp)
    opt.zero_grad()
    loss.backward()
    for n, p in student.named_parameters():  # utils.clip_gradients: each tensor on its own
        if p.grad is not None:
            coef = clip / (p.grad.data.norm(2) + 1e-6)
            if coef < 1:
                p.grad.data.mul_(coef)
    if freeze:  # utils.cancel_gradients_last_layer
        for n, p in student.named_parameters():
            if "last_layer" in n:
                p.grad = None
    for n, p in student.named_parameters():
        if p.grad is not None:
            key = "grad." + (n[len("backbone."):] if n.startswith("backbone.") else n)
            tensors[key] = p.grad.float().clone()
    opt.step()
    with torch.no_grad():
        for pq, pk in zip(student.parameters(), teacher.parameters()):
            pk.data.mul_(momentum).add_((1 - momentum) * pq.detach().data)

    tensors["loss"] = np.array([loss.item()], dtype=np.float64)
    tensors["sched"] = np.array([lr, wd, momentum, teacher_temp, 1.0 if freeze else 0.0], dtype=np.float64)
    tensors["cfg"] = np.array([NG, NL, B, G, L, K, HID, BN, LAYERS, 1 if norm_last_layer else 0, clip,
                               gen_dino.STUDENT_TEMP, gen_dino.CENTER_MOM], dtype=np.float64)
    for prefix, mod in (("after.student.", backbone), ("after.teacher.", teacher.backbone),
                        ("after.shead.", head), ("after.thead.", teacher.head)):
        for k, v in state(mod).items():
            tensors[prefix + k] = v.float()
    tensors["after.center"] = new_center[0].float().clone()
    st.save(os.path.join(root, "step.safetensors"), tensors, metadata={"torch": torch.__version__})
    print("dino_resnet %s: loss %.6f" % (name, loss.item()))


def main(out):
    one_case(out, "frozen", 900, norm_last_layer=True, freeze=True, clip=3.0, teacher_temp=0.04)
    one_case(out, "trained", 910, norm_last_layer=False, freeze=False, clip=0.3, teacher_temp=0.07)


if __name__ == "__main__":
    main(sys.argv[1])
