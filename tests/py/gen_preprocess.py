"""gen_preprocess.py: PIL / transformers-style preprocessing fixtures for tests/test_preprocess.c.

Run with Debian's python (python3-pil 9.x, numpy, python3-skimage):
    /usr/bin/python3 tests/py/gen_preprocess.py OUTDIR
Writes OUTDIR/preprocess/:
  manifest.json            {"images": [...], "pipelines": [...], "decode_only": [...]}
  <image>.safetensors      for each scikit-image sample photo:
      decoded                      [H, W, 3] U8  PIL open + convert("RGB")
      resize/<filter>/<W>x<H>      [H', W', 3] U8  Image.resize((W, H), filter) of `decoded`
      pipe/<case>/u8               [h, w, 3] U8  after resize + center crop (before rescale)
      pipe/<case>/f32              [3, h, w] F32 the normalised tensor
    metadata: source (absolute path of the photo), lossless ("1" for PNG: stb must decode it to
    exactly `decoded`; "0" for JPEG: decoders differ, so the C test feeds `decoded` to resize)
  <case>_preprocessor_config.json  the config of each pipeline case, loaded by the C test with
                                   dinoc_preprocess_load

The pipeline is transformers' BitImageProcessor / ViTImageProcessor path written out in numpy
(transformers is not installed here): PIL resize with reducing_gap=None -> image_transforms
.center_crop (floor offsets, zero padding when the crop is larger) -> rescale (float64 multiply,
cast to float32) -> normalize ((x - mean) / std in float32).
"""
import json
import math
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

PIPELINES = [
    # DINOv2's preprocessor_config.json (facebook/dinov2-*), as published.
    ("dinov2", {
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}),
    # DINO v1's legacy ViTFeatureExtractor form: square resize, bilinear, no crop, mean/std 0.5.
    ("legacy", {
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224}),
    # Crop larger than the resized image in height (zero padding), smaller in width; odd margins.
    ("pad", {
        "crop_size": {"height": 257, "width": 181}, "do_center_crop": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "resample": 1, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 203}}),
]

IMAGES = ["astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg"]
# PNGs only checked for decode (RGBA, palette with and without transparency, grey).
DECODE_ONLY = ["logo.png", "palette_color.png", "foo3x5x4indexed.png", "green_palette.png",
               "page.png"]


def resize_targets(w, h):
    """Down, strongly down, up (non-square), and one dimension only (one pass skipped)."""
    return [
        (int(w * 0.37) + 1, int(h * 0.61)),
        (max(1, w // 7), max(1, h // 5) + 1),
        (int(w * 1.3) + 1, int(h * 1.15)),
        (w, h // 2 + 3),
        (w // 2 + 1, h),
    ]


def hf_resize_size(cfg, w, h):
    size = cfg["size"]
    if isinstance(size, int):
        # ViTFeatureExtractor / ViTImageProcessor: int size means a square
        return size, size
    if "shortest_edge" in size:
        n = size["shortest_edge"]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = n, int(n * long / short)
        oh, ow = (new_long, new_short) if w <= h else (new_short, new_long)
        return ow, oh
    return size["width"], size["height"]


def hf_center_crop(img, ch, cw):
    """transformers.image_transforms.center_crop on an HWC array."""
    oh, ow = img.shape[:2]
    top = (oh - ch) // 2
    bottom = top + ch
    left = (ow - cw) // 2
    right = left + cw
    if top >= 0 and bottom <= oh and left >= 0 and right <= ow:
        return img[top:bottom, left:right]
    nh, nw = max(ch, oh), max(cw, ow)
    new = np.zeros((nh, nw) + img.shape[2:], dtype=img.dtype)
    tp = math.ceil((nh - oh) / 2)
    lp = math.ceil((nw - ow) / 2)
    new[tp:tp + oh, lp:lp + ow] = img
    top += tp
    bottom += tp
    left += lp
    right += lp
    return new[max(0, top):min(nh, bottom), max(0, left):min(nw, right)]


def hf_pipeline(rgb, cfg):
    img = np.asarray(rgb)
    if cfg.get("do_resize", True):
        ow, oh = hf_resize_size(cfg, img.shape[1], img.shape[0])
        img = np.asarray(Image.fromarray(img).resize((ow, oh), resample=cfg.get("resample", 2),
                                                     reducing_gap=None))
    if cfg.get("do_center_crop", False):
        cs = cfg["crop_size"]
        ch, cw = (cs, cs) if isinstance(cs, int) else (cs["height"], cs["width"])
        img = hf_center_crop(img, ch, cw)
    u8 = np.ascontiguousarray(img)
    x = img
    if cfg.get("do_rescale", True):
        x = (x.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    if cfg.get("do_normalize", True):
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        mean = np.array(cfg["image_mean"], dtype=x.dtype)
        std = np.array(cfg["image_std"], dtype=x.dtype)
        x = (x - mean) / std
    return u8, np.ascontiguousarray(x.transpose(2, 0, 1).astype(np.float32))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tests/py/gen_preprocess.py OUTDIR")
    import skimage
    data_dir = skimage.data_dir
    out = os.path.join(sys.argv[1], "preprocess")
    os.makedirs(out, exist_ok=True)

    pipes = []
    for name, cfg in PIPELINES:
        fn = f"{name}_preprocessor_config.json"
        with open(os.path.join(out, fn), "w") as f:
            json.dump(cfg, f, indent=2)
        pipes.append({"name": name, "config": fn})

    images = []
    for fname in IMAGES:
        src = os.path.join(data_dir, fname)
        if not os.path.exists(src):
            print(f"skip {src}: missing")
            continue
        rgb = Image.open(src).convert("RGB")
        w, h = rgb.size
        tensors = {"decoded": np.asarray(rgb)}
        for (tw, th) in resize_targets(w, h):
            for fid, fname_ in FILTERS.items():
                tensors[f"resize/{fname_}/{tw}x{th}"] = np.asarray(
                    rgb.resize((tw, th), resample=fid, reducing_gap=None))
        for name, cfg in PIPELINES:
            u8, f32 = hf_pipeline(rgb, cfg)
            tensors[f"pipe/{name}/u8"] = u8
            tensors[f"pipe/{name}/f32"] = f32
        stem = os.path.splitext(fname)[0]
        lossless = fname.lower().endswith(".png")
        st.save(os.path.join(out, stem + ".safetensors"), tensors,
                metadata={"source": src, "lossless": "1" if lossless else "0"})
        images.append({"name": stem, "file": stem + ".safetensors", "source": src,
                       "lossless": lossless})
        print(f"{stem}: {w}x{h}, {len(tensors)} tensors")

    decode_only = []
    for fname in DECODE_ONLY:
        src = os.path.join(data_dir, fname)
        if not os.path.exists(src):
            continue
        stem = "decode_" + os.path.splitext(fname)[0]
        st.save(os.path.join(out, stem + ".safetensors"),
                {"decoded": np.asarray(Image.open(src).convert("RGB"))},
                metadata={"source": src, "lossless": "1"})
        decode_only.append({"name": stem, "file": stem + ".safetensors", "source": src})

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"images": images, "pipelines": pipes, "decode_only": decode_only}, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
