"""gen_resnet.py OUTDIR: ResNet fixtures for tests/test_resnet.c. torchvision is not installed, so
the ResNet is written here in torchvision's layout (BasicBlock / Bottleneck v1.5 with the stride on
the 3x3 conv, downsample = conv1x1 + BN, state_dict names conv1.weight, bn1.*, layerS.i.convK /
bnK / downsample.{0,1}, fc.*) plus the small stem (3x3 stride-1 conv, no max pool).

References are float64 torch runs of the float32 weights and inputs (saved as float32).
Weights are random (conv kaiming_normal fan_out as torchvision; BN weight 1 + 0.2 N, bias 0.2 N,
running_mean 0.1 N, running_var 0.5 + U, so eval-mode BN is not the identity; the last BN weight of
each residual branch halved, see randomize). For each case:
  OUTDIR/resnet/<case>/config.json + model.safetensors   the model as dinoc_resnet_load reads it
  OUTDIR/resnet/<case>_io.safetensors:
    images [B,C,H,W]; feats_eval [B,F] (eval mode: running stats; fc dropped, global average pool);
    logits [B,K] (eval, if the case has an fc);
    train cases also: dfeats [B,F]; feats_train [B,F] (train mode: batch stats); grad.<name> for
    every parameter of L = (feats_train * dfeats).sum(); after.<bn>.running_mean / running_var
    after that one training forward (momentum 0.1, unbiased variance).
clip_narrow: OpenAI CLIP's ModifiedResNet (eval only; see make_clip_case).
Cases: resnet18 (the torchvision preset, 1000-class fc, 2x3x32x32, eval), resnet50_narrow (ResNet-50's
Bottleneck [3,4,6,3] layout at widths 8..64, 4x3x64x64, eval + train), small (resnet_small,
10-class fc, 4x1x28x28, eval + train).
Run with Debian's python3 (torch 1.13): /usr/bin/python3 tests/py/gen_resnet.py build/fixtures
"""
import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def conv(cin, cout, k, stride):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class Block(nn.Module):
    def __init__(self, bottleneck, inplanes, planes, stride):
        super().__init__()
        self.bottleneck = bottleneck
        out = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1, self.bn1 = conv(inplanes, planes, 1, 1), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = conv(planes, out, 1, 1), nn.BatchNorm2d(out)
        else:
            self.conv1, self.bn1 = conv(inplanes, planes, 3, stride), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv(planes, planes, 3, 1), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(conv(inplanes, out, 1, stride), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    def __init__(self, bottleneck, layers, widths, stem_width, in_ch, classes, small):
        super().__init__()
        self.small = small
        self.conv1 = conv(in_ch, stem_width, 3, 1) if small else \
            nn.Conv2d(in_ch, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        inplanes = stem_width
        for s, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for i in range(n):
                blocks.append(Block(bottleneck, inplanes, w, 2 if s > 0 and i == 0 else 1))
                inplanes = w * (4 if bottleneck else 1)
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.fc = nn.Linear(inplanes, classes) if classes else None

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.small:
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(self.n_stages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return x.mean(dim=(2, 3))


class ClipBottleneck(nn.Module):
    """openai/CLIP clip/model.py Bottleneck: stride by AvgPool2d after conv2 and before the
    downsample's stride-1 conv (anti-aliased strides)."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = conv(inplanes, planes, 1, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, 1), nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = conv(planes, planes * 4, 1, 1), nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)), ("0", conv(inplanes, planes * 4, 1, 1)),
                ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x.squeeze(0)


class ModifiedResNet(nn.Module):
    """openai/CLIP clip/model.py ModifiedResNet: 3-conv stem + AvgPool2d(2), CLIP Bottlenecks,
    attention pooling."""

    def __init__(self, layers, output_dim, heads, input_resolution, width):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width // 2)
        self.conv2, self.bn2 = conv(width // 2, width // 2, 3, 1), nn.BatchNorm2d(width // 2)
        self.conv3, self.bn3 = conv(width // 2, width, 3, 1), nn.BatchNorm2d(width)
        inplanes = width
        for s, n in enumerate(layers):
            blocks = []
            for i in range(n):
                blocks.append(ClipBottleneck(inplanes, width * 2 ** s, 2 if s > 0 and i == 0 else 1))
                inplanes = width * 2 ** s * 4
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def features(self, x):
        for i in (1, 2, 3):
            x = F.relu(getattr(self, "bn%d" % i)(getattr(self, "conv%d" % i)(x)))
        x = F.avg_pool2d(x, 2)
        for s in range(4):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return self.attnpool(x)


def randomize(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c))
                m.bias.copy_(0.2 * torch.randn(c))
                m.running_mean.copy_(0.1 * torch.randn(c))
                m.running_var.copy_(0.5 + torch.rand(c))
                m.num_batches_tracked.fill_(7)
        # Each residual branch's last BN weight halved (trained ResNets have small ones there;
        # torchvision's zero_init_residual sets them to 0). Without it the 16 undamped Bottlenecks
        # of the ResNet-50 layout blow the training-mode gradients up to ~1e4 and torch's own
        # float32 run differs from its float64 run by 10% of max|grad|: no parity is testable on
        # such a network. Halved: torch float32 vs float64 agree to 2e-5 of max|grad|.
        for blk in model.modules():
            if isinstance(blk, Block):
                (blk.bn3 if blk.bottleneck else blk.bn2).weight.mul_(0.5)
            if isinstance(blk, ClipBottleneck):
                blk.bn3.weight.mul_(0.5)


def make_case(root, name, config, bottleneck, layers, widths, stem_width, in_ch, classes, small,
              shape, train):
    model = ResNet(bottleneck, layers, widths, stem_width, in_ch, classes, small)
    randomize(model)
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    st.save(os.path.join(d, "model.safetensors"),
            {k: v.clone() for k, v in model.state_dict().items()}, {"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    x = torch.randn(*shape)
    io = {"images": x}
    # the references are computed in float64 from the float32 weights and inputs, so they carry no
    # rounding of their own: what the C test measures is its own float32 error
    model = model.double()
    model.eval()
    with torch.no_grad():
        io["feats_eval"] = model.features(x.double()).float()
        if model.fc is not None:
            io["logits"] = model.fc(model.features(x.double())).float()
    if train:
        model.train()
        feats = model.features(x.double())
        dfeats = torch.randn(feats.shape)
        (feats * dfeats.double()).sum().backward()
        io.update({"dfeats": dfeats, "feats_train": feats.detach().float()})
        for k, p in model.named_parameters():
            if not k.startswith("fc."):
                io["grad." + k] = p.grad.float()
        for k, v in model.state_dict().items():
            if k.endswith("running_mean") or k.endswith("running_var"):
                io["after." + k] = v.float()
    st.save(os.path.join(root, name + "_io.safetensors"), io)


def make_clip_case(root):
    """A narrow ModifiedResNet (layers [1,2,1,1], width 16, E 512, 8 heads, output 32, 64 px), saved
    under OpenAI's "visual." names next to two text-tower tensors the loader must skip."""
    model = ModifiedResNet([1, 2, 1, 1], 32, 8, 64, 16)
    randomize(model)
    d = os.path.join(root, "clip_narrow")
    os.makedirs(d, exist_ok=True)
    sd = {"visual." + k: v.clone() for k, v in model.state_dict().items()}
    sd.update({"token_embedding.weight": torch.randn(10, 8), "logit_scale": torch.tensor(4.6)})
    st.save(os.path.join(d, "model.safetensors"), sd)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "resnet", "arch": "clip_rn50", "layers": [1, 2, 1, 1],
                   "widths": [16, 32, 64, 128], "stem_width": 16, "attn_heads": 8,
                   "output_dim": 32, "image_size": 64}, f, indent=1)
    x = torch.randn(2, 3, 64, 64)
    model = model.double().eval()
    with torch.no_grad():
        feats = model.features(x.double()).float()
    st.save(os.path.join(root, "clip_narrow_io.safetensors"), {"images": x, "feats_eval": feats})


def main():
    root = os.path.join(sys.argv[1], "resnet")
    os.makedirs(root, exist_ok=True)
    torch.manual_seed(0)
    make_case(root, "resnet18", {"model_type": "resnet", "arch": "resnet18"}, False, [2, 2, 2, 2],
              [64, 128, 256, 512], 64, 3, 1000, False, (2, 3, 32, 32), False)
    make_case(root, "resnet50_narrow",
              {"model_type": "resnet", "arch": "resnet50", "widths": [8, 16, 32, 64],
               "stem_width": 16, "num_classes": 0},
              True, [3, 4, 6, 3], [8, 16, 32, 64], 16, 3, 0, False, (4, 3, 64, 64), True)
    make_case(root, "small", {"model_type": "resnet", "arch": "resnet_small", "num_classes": 10},
              False, [2, 2, 2], [16, 32, 64], 16, 1, 10, True, (4, 1, 28, 28), True)
    make_clip_case(root)


if __name__ == "__main__":
    main()
