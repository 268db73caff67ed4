"""gen_multicrop.py: PIL fixtures for DINO's multi-crop augmentation (tests/test_multicrop.c).

Run with Debian's python (python3-pil 9.4, numpy, torch, python3-skimage):
    /usr/bin/python3 tests/py/gen_multicrop.py OUTDIR
Writes OUTDIR/multicrop/:
  manifest.json        {"images": [{"name", "file", "cases": [{"op": ..., params..., "out": key}]}]}
  <image>.safetensors  input [H, W, C] U8 (C = 1 for PIL "L" images, 3 for "RGB") and one output
                       per case: U8 [h, w, C] for the 8-bit ops, F32 [C, h, w] for the tensors.

Each op runs with fixed parameters through what torchvision 0.14 does on PIL images. torchvision is
not installed here, so its PIL paths (transforms/functional_pil.py) are written out below, line for
line: adjust_{brightness,contrast,saturation} = ImageEnhance.{Brightness,Contrast,Color}.enhance,
adjust_hue through HSV with a uint8 shift, to_grayscale, resized_crop = crop + resize(BICUBIC),
to_tensor = float(uint8) / 255, normalize = (x - mean) / std in float32 (torch). Blur and solarize
are DINO's utils.GaussianBlur (ImageFilter.GaussianBlur(radius)) and utils.Solarization
(ImageOps.solarize). Factors and radii are float32 values (what torch's uniform_ gives and what the
C side stores), written to JSON exactly.

Op cases (all images): flip, brightness, contrast, saturation, hue, jitter (order + 4 factors),
gray, blur, solarize, resized_crop, to_tensor, and "pipeline": a whole crop (box, flip, jitter,
grayscale, blur, solarize, normalize) as dinoc_mc_apply runs it, for channels 1 and 3.
"""
import gzip
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FMNIST_MEAN = [0.2860, 0.2860, 0.2860]
FMNIST_STD = [0.3530, 0.3530, 0.3530]


def f32(x):
    return float(np.float32(x))


# ---- torchvision 0.14 transforms/functional_pil.py, as used on PIL images ----------------------

def adjust_brightness(img, f):
    return ImageEnhance.Brightness(img).enhance(f)


def adjust_contrast(img, f):
    return ImageEnhance.Contrast(img).enhance(f)


def adjust_saturation(img, f):
    return ImageEnhance.Color(img).enhance(f)


def adjust_hue(img, hue_factor):
    assert -0.5 <= hue_factor <= 0.5
    input_mode = img.mode
    if input_mode in {"L", "1", "I", "F"}:
        return img
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    # uint8 addition take cares of rotation across boundaries
    with np.errstate(over="ignore"):
        np_h += np.uint8(hue_factor * 255)
    h = Image.fromarray(np_h, "L")
    return Image.merge("HSV", (h, s, v)).convert(input_mode)


JITTER_OPS = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]


def color_jitter(img, order, factor):
    """ColorJitter.forward with fixed parameters (order entries -1: op disabled, i.e. None)."""
    for o in order:
        if o >= 0:
            img = JITTER_OPS[o](img, factor[o])
    return img


def to_grayscale(img):
    """F.rgb_to_grayscale(img, num_output_channels=channels of img) (RandomGrayscale)."""
    if img.mode == "L":
        return img.convert("L")
    np_img = np.array(img.convert("L"), dtype=np.uint8)
    return Image.fromarray(np.dstack([np_img, np_img, np_img]), "RGB")


def resized_crop(img, top, left, height, width, size):
    img = img.crop((left, top, left + width, top + height))
    return img.resize((size, size), Image.Resampling.BICUBIC)


def gaussian_blur(img, radius):
    return img.filter(ImageFilter.GaussianBlur(radius=radius))


def solarize(img):
    return ImageOps.solarize(img, threshold=128)


def flip(img):
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def to_tensor_normalize(img, mean, std):
    a = np.array(img, np.uint8, copy=True)
    c = len(img.getbands())
    t = torch.from_numpy(a).view(img.size[1], img.size[0], c).permute(2, 0, 1).contiguous()
    t = t.to(dtype=torch.float32).div(255)
    m = torch.as_tensor(mean[:c], dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std[:c], dtype=torch.float32).view(-1, 1, 1)
    return t.sub(m).div(s).numpy()


def pipeline(img, p, channels, mean, std):
    """One crop as dinoc_mc_apply runs it (DataAugmentationDINO with its random choices fixed)."""
    if channels == 1 and img.mode != "L":
        img = img.convert("L")
    elif channels == 3 and img.mode == "L":
        img = img.convert("RGB")
    x = resized_crop(img, p["top"], p["left"], p["height"], p["width"], p["size"])
    if p["flip"]:
        x = flip(x)
    if p["jitter"]:
        x = color_jitter(x, p["order"], p["factor"])
    if p["gray"]:
        x = to_grayscale(x)
    if p["blur"]:
        x = gaussian_blur(x, p["blur_radius"])
    if p["solarize"]:
        x = solarize(x)
    return to_tensor_normalize(x, mean, std)


# ---- torchvision's RandomResizedCrop.get_params, with numpy's generator --------------------------

def rrc_params(rs, w, h, scale, ratio):
    area = h * w
    log_ratio = np.log(ratio)
    for _ in range(10):
        target_area = area * rs.uniform(scale[0], scale[1])
        aspect_ratio = float(np.exp(rs.uniform(log_ratio[0], log_ratio[1])))
        cw = int(round(np.sqrt(target_area * aspect_ratio)))
        ch = int(round(np.sqrt(target_area / aspect_ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rs.randint(0, h - ch + 1)), int(rs.randint(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


# ---- inputs ------------------------------------------------------------------------------------

def load_fmnist(n):
    if not os.path.exists(FMNIST):
        return []
    with gzip.open(FMNIST, "rb") as f:
        buf = f.read()
    a = np.frombuffer(buf, np.uint8, offset=16).reshape(-1, 28, 28)
    return [Image.fromarray(a[i].copy(), "L") for i in (0, 1, 17)[:n]]


def inputs():
    import skimage
    d = skimage.data_dir
    out = []
    rgb = lambda f: Image.open(os.path.join(d, f)).convert("RGB")  # noqa: E731
    out.append(("astronaut96", rgb("astronaut.png").resize((96, 96), Image.Resampling.BICUBIC)))
    out.append(("coffee120x80", rgb("coffee.png").resize((120, 80), Image.Resampling.LANCZOS)))
    ch = np.asarray(rgb("chelsea.png"))
    out.append(("chelsea_crop101x75", Image.fromarray(ch[60:135, 120:221].copy(), "RGB")))
    out.append(("camera64", Image.open(os.path.join(d, "camera.png")).convert("L").resize(
        (64, 64), Image.Resampling.BICUBIC)))
    for i, im in enumerate(load_fmnist(3)):
        out.append((f"fmnist{i}", im))
    rs = np.random.RandomState(7)
    # Random colours, greys and the extremes (hue/saturation/contrast corner cases).
    cube = rs.randint(0, 256, size=(48, 40, 3)).astype(np.uint8)
    cube[0, :20] = np.arange(20)[:, None] * 13  # greys
    cube[1, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                   [255, 255, 0], [0, 255, 255], [255, 0, 255]]
    out.append(("colors40x48", Image.fromarray(cube, "RGB")))
    # Tiny images: blur radius beyond the image, RRC on 1-pixel sides.
    out.append(("tiny5x3", Image.fromarray(rs.randint(0, 256, (3, 5, 3)).astype(np.uint8), "RGB")))
    out.append(("tiny2x7", Image.fromarray(rs.randint(0, 256, (7, 2)).astype(np.uint8), "L")))
    return out


# ---- cases -------------------------------------------------------------------------------------

def u8(img):
    a = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(a.reshape(img.size[1], img.size[0], -1))


def make_cases(name, img, rs):
    w, h = img.size
    tensors = {"input": u8(img)}
    cases = []

    def add(case, out):
        key = f"out/{len(cases)}"
        tensors[key] = out
        case["out"] = key
        cases.append(case)

    add({"op": "flip"}, u8(flip(img)))
    for f in (0.0, 0.6, 0.83, 1.0, 1.4, 1.17, 2.5):
        add({"op": "brightness", "factor": f32(f)}, u8(adjust_brightness(img, f32(f))))
    for f in (0.0, 0.6, 0.95, 1.0, 1.4, 3.0):
        add({"op": "contrast", "factor": f32(f)}, u8(adjust_contrast(img, f32(f))))
    for f in (0.0, 0.8, 1.2, 1.9):
        add({"op": "saturation", "factor": f32(f)}, u8(adjust_saturation(img, f32(f))))
    for f in (0.0, -0.1, -0.037, 0.05, 0.1, 0.5, -0.5, 0.0019):
        add({"op": "hue", "factor": f32(f)}, u8(adjust_hue(img, f32(f))))
    for _ in range(4):
        order = [int(v) for v in rs.permutation(4)]
        if rs.rand() < 0.3:
            order[rs.randint(4)] = -1
        factor = [f32(rs.uniform(0.6, 1.4)), f32(rs.uniform(0.6, 1.4)), f32(rs.uniform(0.8, 1.2)),
                  f32(rs.uniform(-0.1, 0.1))]
        add({"op": "jitter", "order": order, "factor": factor},
            u8(color_jitter(img, order, factor)))
    add({"op": "gray"}, u8(to_grayscale(img)))
    for r in (0.1, 0.5, 1.0, 1.37, 2.0, 5.0, 23.0, f32(rs.uniform(0.1, 2.0))):
        add({"op": "blur", "radius": f32(r)}, u8(gaussian_blur(img, f32(r))))
    add({"op": "solarize"}, u8(solarize(img)))
    sizes = [28, 14, 96] if min(w, h) > 20 else [4, 9]
    for k in range(6):
        scale = (0.4, 1.0) if k % 2 == 0 else (0.05, 0.4)
        top, left, ch, cw = rrc_params(rs, w, h, scale, (3 / 4, 4 / 3))
        size = sizes[k % len(sizes)]
        add({"op": "resized_crop", "top": top, "left": left, "height": ch, "width": cw,
             "size": size}, u8(resized_crop(img, top, left, ch, cw, size)))
    add({"op": "resized_crop", "top": 0, "left": 0, "height": h, "width": w, "size": w},
        u8(resized_crop(img, 0, 0, h, w, w)))  # same size: a copy
    c = len(img.getbands())
    add({"op": "to_tensor", "channels": c, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        to_tensor_normalize(img, IMAGENET_MEAN, IMAGENET_STD))
    if c == 1:  # a grey image feeding three output channels
        add({"op": "to_tensor", "channels": 3, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            to_tensor_normalize(img.convert("RGB"), IMAGENET_MEAN, IMAGENET_STD))
    # Whole crops: both channel counts, every op on in some of them.
    for k in range(8):
        channels = 1 if k % 2 else 3
        mean, std = (FMNIST_MEAN, FMNIST_STD) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
        scale = (0.4, 1.0) if k < 4 else (0.05, 0.4)
        top, left, ch, cw = rrc_params(rs, w, h, scale, (3 / 4, 4 / 3))
        order = [int(v) for v in rs.permutation(4)]
        p = {"top": top, "left": left, "height": ch, "width": cw,
             "size": (28 if k < 4 else 14) if min(w, h) > 20 else 6,
             "flip": int(k in (1, 2, 5, 6)), "jitter": int(k != 3), "order": order,
             "factor": [f32(rs.uniform(0.6, 1.4)), f32(rs.uniform(0.6, 1.4)),
                        f32(rs.uniform(0.8, 1.2)), f32(rs.uniform(-0.1, 0.1))],
             "gray": int(k in (2, 6)), "blur": int(k != 4),
             "blur_radius": f32(rs.uniform(0.1, 2.0)),
             "solarize": int(k in (1, 4, 7))}
        add({"op": "pipeline", "crop": p, "channels": channels, "mean": mean, "std": std},
            pipeline(img, p, channels, mean, std))
    return tensors, cases


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tests/py/gen_multicrop.py OUTDIR")
    out = os.path.join(sys.argv[1], "multicrop")
    os.makedirs(out, exist_ok=True)
    rs = np.random.RandomState(1234)
    images = []
    for name, img in inputs():
        tensors, cases = make_cases(name, img, rs)
        fn = name + ".safetensors"
        st.save(os.path.join(out, fn), tensors)
        images.append({"name": name, "file": fn, "cases": cases})
        print(f"{name}: {img.size[0]}x{img.size[1]} {img.mode}, {len(cases)} cases")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"images": images}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
