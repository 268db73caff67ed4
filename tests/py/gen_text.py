"""gen_text.py OUTDIR: PyTorch references for dinoc's text transformers and MLM head
(tests/test_text.c), written from the reference facts (clip_mlm_and_c_peers.md A.3, A.5, Part A'),
not from Hugging Face code.

Models (float32, random weights saved under the Hugging Face names):
  clip        CLIPTextModelWithProjection: causal pre-norm, QuickGELU, learned positions, final LN,
              pooling at the first eos_token_id, text_projection (no bias)
  clip_gelu   same with exact GELU and the legacy eos_token_id 2 (pooling = argmax of the ids)
  bert_mlm    BertForMaskedLM: post-norm, key-padding mask, learned positions, token type 0, and
              the MLM head (dense, GELU, LN, decoder tied to word_embeddings, own bias)
  bert_sin    BertModel with sinusoidal positions (position_embedding_type "sinusoidal", dinoc's
              extension: PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(...), in float64)

Each case OUTDIR/text/<case>/ holds model/ (config.json, model.safetensors; with a few tensors a
loader must skip: position_ids, logit_scale, the tied decoder copies) and io.safetensors:
  ids [B, T] I32, lengths [B] I32, dhidden [B, T, D], dpooled [B, P]
  hidden [B, T, D], pooled [B, P]           outputs
  mlm_pos [n] I32 (rows b*T+t), mlm_tgt [n] I32, mlm_loss [1] F64, mlm_logits [n, V]   (bert_mlm)
  grad.<HF name>                            gradient of <hidden, dhidden> + <pooled, dpooled>
                                            (+ the MLM loss for bert_mlm)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

V, D, L, NH, FF, MAXPOS, PROJ = 50, 32, 2, 4, 64, 12, 24
B, T = 3, 10
LENGTHS = [10, 7, 4]


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu(x):
    return F.gelu(x)  # exact erf form


def rand_params(names_shapes, g):
    """LayerNorm gains around 1, everything else N(0, 0.2^2)-ish so every path carries signal."""
    p = {}
    for name, shape in names_shapes:
        if "LayerNorm.weight" in name or "layer_norm" in name and name.endswith("weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.2 * torch.randn(shape, generator=g)
        p[name] = t.float().requires_grad_(True)
    return p


def attention(x_q, p, pre, qn, kn, vn, on, mask):
    """Multi-head attention on x [B, T, D] with separate q/k/v Linears; mask [B, T, T] bool
    (True = visible)."""
    def lin(n, x):
        return x @ p[pre + n + ".weight"].t() + p[pre + n + ".bias"]
    hs = D // NH
    q = lin(qn, x_q).view(B, T, NH, hs).transpose(1, 2)
    k = lin(kn, x_q).view(B, T, NH, hs).transpose(1, 2)
    v = lin(vn, x_q).view(B, T, NH, hs).transpose(1, 2)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    s = s.masked_fill(~mask[:, None], float("-inf"))
    a = torch.softmax(s, dim=-1)
    o = (a @ v).transpose(1, 2).reshape(B, T, D)
    return lin(on, o)


def key_mask(causal):
    t = torch.arange(T)
    m = t[None, None, :] < torch.tensor(LENGTHS)[:, None, None]  # [B, 1, T] keys
    m = m.expand(B, T, T)
    if causal:
        m = m & (t[None, :, None] >= t[None, None, :])
    return m


# ---- CLIP -------------------------------------------------------------------------------------

def clip_names():
    n = [("text_model.embeddings.token_embedding.weight", (V, D)),
         ("text_model.embeddings.position_embedding.weight", (MAXPOS, D))]
    for l in range(L):
        pre = f"text_model.encoder.layers.{l}."
        for x in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            n += [(pre + f"self_attn.{x}.weight", (D, D)), (pre + f"self_attn.{x}.bias", (D,))]
        n += [(pre + "layer_norm1.weight", (D,)), (pre + "layer_norm1.bias", (D,)),
              (pre + "mlp.fc1.weight", (FF, D)), (pre + "mlp.fc1.bias", (FF,)),
              (pre + "mlp.fc2.weight", (D, FF)), (pre + "mlp.fc2.bias", (D,)),
              (pre + "layer_norm2.weight", (D,)), (pre + "layer_norm2.bias", (D,))]
    n += [("text_model.final_layer_norm.weight", (D,)), ("text_model.final_layer_norm.bias", (D,)),
          ("text_projection.weight", (PROJ, D))]
    return n


def clip_forward(p, ids, act, eos):
    eps = 1e-5
    x = p["text_model.embeddings.token_embedding.weight"][ids] + \
        p["text_model.embeddings.position_embedding.weight"][:T][None]
    mask = key_mask(True)
    for l in range(L):
        pre = f"text_model.encoder.layers.{l}."
        h = F.layer_norm(x, (D,), p[pre + "layer_norm1.weight"], p[pre + "layer_norm1.bias"], eps)
        x = x + attention(h, p, pre + "self_attn.", "q_proj", "k_proj", "v_proj", "out_proj", mask)
        h = F.layer_norm(x, (D,), p[pre + "layer_norm2.weight"], p[pre + "layer_norm2.bias"], eps)
        h = act(h @ p[pre + "mlp.fc1.weight"].t() + p[pre + "mlp.fc1.bias"])
        x = x + h @ p[pre + "mlp.fc2.weight"].t() + p[pre + "mlp.fc2.bias"]
    hid = F.layer_norm(x, (D,), p["text_model.final_layer_norm.weight"],
                       p["text_model.final_layer_norm.bias"], eps)
    if eos == 2:  # legacy config: argmax of the ids (first occurrence)
        idx = ids.argmax(dim=-1)
    else:
        idx = (ids == eos).int().argmax(dim=-1)
    pooled = hid[torch.arange(B), idx] @ p["text_projection.weight"].t()
    return hid, pooled


def clip_ids(g, eot):
    ids = torch.randint(0, V - 2, (B, T), generator=g)
    for b, n in enumerate(LENGTHS):
        ids[b, n - 1] = eot
        ids[b, n:] = 0  # OpenAI pads with 0
    return ids


# ---- BERT -------------------------------------------------------------------------------------

def bert_names(pre, mlm, sinus):
    n = [(pre + "embeddings.word_embeddings.weight", (V, D))]
    if not sinus:
        n.append((pre + "embeddings.position_embeddings.weight", (MAXPOS, D)))
    n += [(pre + "embeddings.token_type_embeddings.weight", (2, D)),
          (pre + "embeddings.LayerNorm.weight", (D,)), (pre + "embeddings.LayerNorm.bias", (D,))]
    for l in range(L):
        q = pre + f"encoder.layer.{l}."
        for x in ["attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"]:
            n += [(q + x + ".weight", (D, D)), (q + x + ".bias", (D,))]
        n += [(q + "attention.output.LayerNorm.weight", (D,)), (q + "attention.output.LayerNorm.bias", (D,)),
              (q + "intermediate.dense.weight", (FF, D)), (q + "intermediate.dense.bias", (FF,)),
              (q + "output.dense.weight", (D, FF)), (q + "output.dense.bias", (D,)),
              (q + "output.LayerNorm.weight", (D,)), (q + "output.LayerNorm.bias", (D,))]
    if mlm:
        n += [("cls.predictions.transform.dense.weight", (D, D)), ("cls.predictions.transform.dense.bias", (D,)),
              ("cls.predictions.transform.LayerNorm.weight", (D,)),
              ("cls.predictions.transform.LayerNorm.bias", (D,)), ("cls.predictions.bias", (V,))]
    return n


def sinusoidal():
    pe = torch.zeros(T, D, dtype=torch.float64)
    for t in range(T):
        for i in range(0, D, 2):
            a = t / (10000.0 ** (i / D))
            pe[t, i] = math.sin(a)
            pe[t, i + 1] = math.cos(a)
    return pe.float()


def bert_forward(p, pre, ids, sinus):
    eps = 1e-12
    pos = sinusoidal() if sinus else p[pre + "embeddings.position_embeddings.weight"][:T]
    e = p[pre + "embeddings.word_embeddings.weight"][ids] + pos[None] + \
        p[pre + "embeddings.token_type_embeddings.weight"][0]
    x = F.layer_norm(e, (D,), p[pre + "embeddings.LayerNorm.weight"], p[pre + "embeddings.LayerNorm.bias"], eps)
    mask = key_mask(False)
    for l in range(L):
        q = pre + f"encoder.layer.{l}."
        a = attention(x, p, q + "attention.", "self.query", "self.key", "self.value", "output.dense", mask)
        x = F.layer_norm(x + a, (D,), p[q + "attention.output.LayerNorm.weight"],
                         p[q + "attention.output.LayerNorm.bias"], eps)
        h = gelu(x @ p[q + "intermediate.dense.weight"].t() + p[q + "intermediate.dense.bias"])
        h = h @ p[q + "output.dense.weight"].t() + p[q + "output.dense.bias"]
        x = F.layer_norm(x + h, (D,), p[q + "output.LayerNorm.weight"], p[q + "output.LayerNorm.bias"], eps)
    return x, x[:, 0]


def mlm_head(p, pre, hid, pos, tgt):
    h = hid.reshape(B * T, D)[pos]
    h = gelu(h @ p["cls.predictions.transform.dense.weight"].t() + p["cls.predictions.transform.dense.bias"])
    h = F.layer_norm(h, (D,), p["cls.predictions.transform.LayerNorm.weight"],
                     p["cls.predictions.transform.LayerNorm.bias"], 1e-12)
    logits = h @ p[pre + "embeddings.word_embeddings.weight"].t() + p["cls.predictions.bias"]
    return F.cross_entropy(logits.double(), tgt.long()), logits


# ---- cases ------------------------------------------------------------------------------------

def write_case(out, case, cfg, p, extra_tensors, io):
    d = os.path.join(out, "text", case, "model")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {k: v.detach() for k, v in p.items()}
    tensors.update(extra_tensors)
    st.save(os.path.join(d, "model.safetensors"), tensors, {"format": "pt"})
    st.save(os.path.join(out, "text", case, "io.safetensors"), io)


def run_case(out, case, g):
    clip = case.startswith("clip")
    sinus = case == "bert_sin"
    mlm = case == "bert_mlm"
    pre = "bert." if mlm else ""
    names = clip_names() if clip else bert_names(pre, mlm, sinus)
    p = rand_params(names, g)
    P = PROJ if clip else D
    dh = torch.randn(B, T, D, generator=g)
    dp = torch.randn(B, P, generator=g)
    io = {}
    extra = {}
    if clip:
        act, eos = (quick_gelu, V - 1) if case == "clip" else (gelu, 2)
        ids = clip_ids(g, V - 1)
        hid, pooled = clip_forward(p, ids, act, eos)
        loss = (hid * dh).sum() + (pooled * dp).sum()
        cfg = {"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model",
               "vocab_size": V, "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L,
               "num_attention_heads": NH, "max_position_embeddings": MAXPOS,
               "hidden_act": "quick_gelu" if case == "clip" else "gelu", "layer_norm_eps": 1e-5,
               "projection_dim": PROJ, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": eos,
               "attention_dropout": 0.0, "initializer_factor": 1.0}
        extra = {"text_model.embeddings.position_ids": torch.arange(MAXPOS)[None].long(),
                 "logit_scale": torch.tensor(2.6592)}
    else:
        ids = torch.randint(4, V, (B, T), generator=g)
        ids[:, 0] = 2  # [CLS]
        for b, n in enumerate(LENGTHS):
            ids[b, n - 1] = 3  # [SEP]
            ids[b, n:] = 0  # [PAD]
        hid, pooled = bert_forward(p, pre, ids, sinus)
        loss = (hid * dh).sum() + (pooled * dp).sum()
        cfg = {"architectures": ["BertForMaskedLM" if mlm else "BertModel"], "model_type": "bert",
               "vocab_size": V, "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": L,
               "num_attention_heads": NH, "max_position_embeddings": MAXPOS, "hidden_act": "gelu",
               "layer_norm_eps": 1e-12, "type_vocab_size": 2, "pad_token_id": 0,
               "position_embedding_type": "sinusoidal" if sinus else "absolute",
               "hidden_dropout_prob": 0.1, "initializer_range": 0.02}
        if mlm:
            pos = torch.tensor([1, 3, 5, 8, 10 + 2, 10 + 4, 20 + 1, 20 + 2], dtype=torch.int32)
            tgt = torch.randint(0, V, (len(pos),), generator=g).int()
            ml, logits = mlm_head(p, pre, hid, pos.long(), tgt)
            loss = loss + ml
            io.update({"mlm_pos": pos, "mlm_tgt": tgt, "mlm_loss": ml.detach().reshape(1),
                       "mlm_logits": logits.detach()})
            extra = {"cls.predictions.decoder.weight": p[pre + "embeddings.word_embeddings.weight"].detach(),
                     "cls.predictions.decoder.bias": p["cls.predictions.bias"].detach()}
    loss.backward()
    io.update({"ids": ids.int(), "lengths": torch.tensor(LENGTHS, dtype=torch.int32), "dhidden": dh,
               "dpooled": dp, "hidden": hid.detach(), "pooled": pooled.detach()})
    for n, t in p.items():
        io["grad." + n] = t.grad
    write_case(out, case, cfg, p, extra, io)


def main(out):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    for case in ["clip", "clip_gelu", "bert_mlm", "bert_sin"]:
        run_case(out, case, g)


if __name__ == "__main__":
    main(sys.argv[1])
