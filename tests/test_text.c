/* test_text.c: text transformers (src/nn/text.c, text_io.c), the MLM head and masking (src/nn/mlm.c)
 * and the masked attention they use (src/ops/attention.c).
 * - Parity with PyTorch (fixtures by tests/py/gen_text.py): last hidden state, pooled/projected
 *   embeddings, the MLM loss and logits, and every parameter gradient, for CLIP (causal, QuickGELU;
 *   GELU with argmax pooling) and BERT (post-norm, padding mask, learned and sinusoidal positions).
 * - Inference forward equals the training forward; save/load round trip; loader errors.
 * - Masked attention: probabilities exactly 0 where masked, and finite differences of the
 *   backward (direct kernels, portable copy, and the reference path past T = 128).
 * - MLM selection statistics over many draws (15% of eligible tokens, then 80/10/10). */
#include "check.h"
#include "../src/nn/mlm.h"

/* ---- fixture helpers ------------------------------------------------------------------------- */

/* Tensor name of st as a malloc'ed float32 copy (*n elements); NULL (and a failure) if absent. */
static float *fx_f32(dinoc_safetensors *st, const char *name, int64_t *n) {
    const dinoc_tensor *t = st ? dinoc_safetensors_find(st, name) : NULL;
    CHECK_MSG(t != NULL, "fixture tensor %s missing", name);
    if (!t) return NULL;
    int64_t k = dinoc_tensor_numel(t);
    float  *x = malloc(sizeof(float) * (size_t)k);
    CHECK_OK(dinoc_tensor_to_f32(t, x, k));
    if (n) *n = k;
    return x;
}

static const int32_t *fx_i32(dinoc_safetensors *st, const char *name) {
    const dinoc_tensor *t = st ? dinoc_safetensors_find(st, name) : NULL;
    CHECK_MSG(t && t->dtype == DINOC_DTYPE_I32, "fixture tensor %s missing or not I32", name);
    return t && t->dtype == DINOC_DTYPE_I32 ? (const int32_t *)t->data : NULL;
}

/* |got - want| <= rel * scale everywhere, scale = max(max |want|, floor): the bound is relative to
 * the tensor's scale (elementwise relative error means nothing where an entry is ~0). */
static double check_scaled(const float *got, const float *want, size_t n, double rel, double floor,
                           const char *label) {
    double scale = floor, worst = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - want[i]));
    CHECK_MSG(worst <= rel * scale, "%s: max |diff| %.3g > %.1g x scale %.3g", label, worst, rel, scale);
    return worst / scale;
}

/* ---- parity ---------------------------------------------------------------------------------- */

static void parity(const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/text/%s/model", dinoc_test_fixtures(), name);
    snprintf(path, sizeof path, "%s/text/%s/io.safetensors", dinoc_test_fixtures(), name);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    dinoc_text_model *m = NULL;
    CHECK_OK(dinoc_text_model_load(&m, dir));
    if (!st || !m) {
        CHECK_MSG(0, "run /usr/bin/python3 tests/py/gen_text.py %s first", dinoc_test_fixtures());
        dinoc_text_free(m);
        dinoc_safetensors_close(st);
        return;
    }
    const dinoc_tensor *tid = dinoc_safetensors_find(st, "ids");
    const int32_t      *ids = fx_i32(st, "ids"), *len = fx_i32(st, "lengths");
    int64_t             nh, np;
    float *want_h = fx_f32(st, "hidden", &nh), *want_p = fx_f32(st, "pooled", &np);
    float *dh = fx_f32(st, "dhidden", NULL), *dp = fx_f32(st, "dpooled", NULL);
    const int B = tid ? (int)tid->shape[0] : 1, T = tid ? (int)tid->shape[1] : 1;
    dinoc_text_state *s = NULL, *si = NULL;
    CHECK_OK(dinoc_text_state_init(&s, m, B, T, 1));
    CHECK_OK(dinoc_text_state_init(&si, m, B, T, 0));
    if (!ids || !len || !want_h || !want_p || !dh || !dp || !s || !si) goto done;
    CHECK_OK(dinoc_text_forward(m, s, ids, len));
    CHECK_OK(dinoc_text_forward(m, si, ids, len));
    /* float32 with a different summation order than torch; 1e-4 of the tensor's scale */
    double eh = check_scaled(dinoc_text_state_hidden(s), want_h, (size_t)nh, 1e-4, 0, "hidden");
    double ep = check_scaled(dinoc_text_state_pooled(s), want_p, (size_t)np, 1e-4, 0, "pooled");
    /* the inference state runs the same kernels in the same order: identical */
    CHECK(memcmp(dinoc_text_state_hidden(s), dinoc_text_state_hidden(si), sizeof(float) * (size_t)nh) == 0);
    CHECK(memcmp(dinoc_text_state_pooled(s), dinoc_text_state_pooled(si), sizeof(float) * (size_t)np) == 0);

    float *g  = calloc(m->n_params, sizeof(float));
    float *dH = malloc(sizeof(float) * (size_t)nh);
    memcpy(dH, dh, sizeof(float) * (size_t)nh);
    double eml = 0;
    if (m->cfg.mlm_head) {
        const dinoc_tensor *tp  = dinoc_safetensors_find(st, "mlm_pos");
        const int32_t      *pos = fx_i32(st, "mlm_pos"), *tgt = fx_i32(st, "mlm_tgt");
        float              *wl  = fx_f32(st, "mlm_logits", NULL);
        const dinoc_tensor *tl  = dinoc_safetensors_find(st, "mlm_loss");
        int                 n   = tp ? (int)tp->shape[0] : 0;
        dinoc_mlm_state    *ms  = NULL;
        double              loss = 0, acc = 0;
        CHECK_OK(dinoc_mlm_state_init(&ms, m, n));
        if (ms && pos && tgt && wl && tl) {
            CHECK_ERR(dinoc_mlm_forward(m, ms, dinoc_text_state_hidden(s), 2, pos, tgt, n, &loss, &acc),
                      DINOC_ERR_ARG, "out of range");
            CHECK_OK(dinoc_mlm_forward(m, ms, dinoc_text_state_hidden(s), B * T, pos, tgt, n, &loss, &acc));
            const double want = *(const double *)tl->data;
            eml = fabs(loss - want) / fabs(want);
            /* loss in double from float logits: 1e-5 relative */
            CHECK_MSG(eml < 1e-5, "MLM loss %.8g vs torch %.8g", loss, want);
            check_scaled(dinoc_mlm_state_logits(ms), wl, (size_t)n * m->cfg.vocab, 1e-4, 0, "mlm logits");
            CHECK_OK(dinoc_mlm_backward(m, ms, dH, g));
        }
        free(wl);
        dinoc_mlm_state_free(ms);
    }
    CHECK_OK(dinoc_text_backward(m, s, dH, dp, g));
    int                n = dinoc_text_param_entries(m, NULL);
    dinoc_param_entry *e = calloc((size_t)n, sizeof *e);
    dinoc_text_param_entries(m, e);
    /* floor: 1e-3 of the largest gradient: the key biases' gradients are exactly 0 in exact
     * arithmetic (a per-row constant added to the scores), so both sides hold rounding noise */
    double floor = 0, worst = 0;
    for (int i = 0; i < n; i++) {
        char gn[160];
        snprintf(gn, sizeof gn, "grad.%s", e[i].name);
        int64_t k;
        float  *ref = fx_f32(st, gn, &k);
        for (int64_t j = 0; ref && j < k; j++) floor = fmax(floor, 1e-3 * fabs(ref[j]));
        free(ref);
    }
    for (int i = 0; i < n; i++) {
        char gn[160];
        snprintf(gn, sizeof gn, "grad.%s", e[i].name);
        int64_t k;
        float  *ref = fx_f32(st, gn, &k);
        if (!ref) continue;
        double w = check_scaled(e[i].data - m->params + g, ref, (size_t)k, 1e-4, floor, gn);
        if (getenv("DINOC_TEXT_VERBOSE")) fprintf(stderr, "      %-60s %.2e\n", gn, w);
        worst = fmax(worst, w);
        free(ref);
    }
    fprintf(stderr, "    %s: hidden %.2e, pooled %.2e, mlm loss %.2e, worst gradient %.2e (x scale)\n",
            name, eh, ep, eml, worst);
    free(e);
    free(g);
    free(dH);
done:
    free(want_h), free(want_p), free(dh), free(dp);
    dinoc_text_state_free(s);
    dinoc_text_state_free(si);
    dinoc_text_free(m);
    dinoc_safetensors_close(st);
}

DINOC_TEST(text_parity_clip) { parity("clip"); }
DINOC_TEST(text_parity_clip_gelu_argmax) { parity("clip_gelu"); }
DINOC_TEST(text_parity_bert_mlm) { parity("bert_mlm"); }
DINOC_TEST(text_parity_bert_sinusoidal) { parity("bert_sin"); }

/* ---- I/O ------------------------------------------------------------------------------------- */

DINOC_TEST(text_save_load_roundtrip) {
    dinoc_text_config c = {DINOC_TEXT_BERT, 40, 16, 16, 2, 2, 32, DINOC_TEXT_GELU,
                           DINOC_TEXT_POS_LEARNED, 1e-12f, 0, 2, 1, 0, -1};
    dinoc_text_model *m = NULL, *r = NULL;
    CHECK_OK(dinoc_text_init_random(&m, &c, 7));
    char dir[600];
    snprintf(dir, sizeof dir, "%s/text_roundtrip", dinoc_test_tmpdir());
    if (!m) return;
    CHECK_OK(dinoc_text_model_save(m, dir));
    CHECK_OK(dinoc_text_model_load(&r, dir));
    if (r) {
        CHECK(r->n_params == m->n_params && r->cfg.mlm_head == 1 && r->cfg.type_vocab == 2);
        CHECK(memcmp(r->params, m->params, sizeof(float) * m->n_params) == 0);
    }
    /* parameter groups tile the buffer exactly once; matrices decayed, vectors not */
    int                ng = dinoc_text_param_groups(m, NULL);
    dinoc_param_group *gr = calloc((size_t)ng, sizeof *gr);
    CHECK(dinoc_text_param_groups(m, gr) == ng);
    unsigned char *cover = calloc(m->n_params, 1);
    for (int i = 0; i < ng; i++) {
        for (size_t j = 0; j < gr[i].count; j++) cover[gr[i].offset + j]++;
        CHECK(gr[i].wd_mult == (strstr(gr[i].name, "LayerNorm") || strstr(gr[i].name, "bias") ? 0.0 : 1.0));
    }
    int once = 1;
    for (size_t j = 0; j < m->n_params; j++) once &= cover[j] == 1;
    CHECK_MSG(once, "parameter groups do not cover every float exactly once");
    /* the padding row starts at zero (HF padding_idx) */
    for (int d = 0; d < c.dim; d++) CHECK(m->p.tok[(size_t)c.pad_id * c.dim + d] == 0.0f);
    free(cover), free(gr);
    dinoc_text_free(r), r = NULL;
    /* the same weights under TF-converted names (LayerNorm.gamma / .beta, as bert-base-uncased's
     * model.safetensors) and with the tied decoder stored: the same model; an untied one: refused */
    char st_path[700];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, st_path));
    if (!st) return;
    const int     nt = dinoc_safetensors_count(st);
    dinoc_tensor *ts = calloc((size_t)nt + 1, sizeof *ts);
    char        (*names)[128] = calloc((size_t)nt, sizeof *names);
    int           renamed = 0;
    for (int i = 0; i < nt; i++) {
        ts[i] = *dinoc_safetensors_get(st, i);
        const char *nm = ts[i].name, *dot = strrchr(nm, '.');
        if (strstr(nm, "LayerNorm.")) {
            snprintf(names[i], 128, "%.*s%s", (int)(dot - nm), nm, strcmp(dot, ".weight") == 0 ? ".gamma" : ".beta");
            ts[i].name = names[i], renamed++;
        }
    }
    float *dec = malloc(sizeof(float) * (size_t)c.vocab * c.dim);
    memcpy(dec, m->p.tok, sizeof(float) * (size_t)c.vocab * c.dim);
    ts[nt] = (dinoc_tensor){"cls.predictions.decoder.weight", DINOC_DTYPE_F32, 2, {c.vocab, c.dim},
                            sizeof(float) * (size_t)c.vocab * c.dim, dec};
    char legacy[600];
    snprintf(legacy, sizeof legacy, "%s/text_legacy_names", dinoc_test_tmpdir());
    CHECK_OK(dinoc_text_model_save(m, legacy)); /* config.json and the rest; the weights replaced next */
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", legacy);
    CHECK(renamed == 4 + 4 * c.layers); /* weight and bias of the embeddings LN, 2 per block, the head LN */
    CHECK_OK(dinoc_safetensors_write(st_path, ts, nt + 1, NULL));
    CHECK_OK(dinoc_text_model_load(&r, legacy));
    if (r) CHECK(r->n_params == m->n_params && memcmp(r->params, m->params, sizeof(float) * m->n_params) == 0);
    dinoc_text_free(r), r = NULL;
    dec[5] += 1.0f;
    CHECK_OK(dinoc_safetensors_write(st_path, ts, nt + 1, NULL));
    CHECK_ERR(dinoc_text_model_load(&r, legacy), DINOC_ERR_FORMAT, "untied MLM decoder");
    free(dec), free(ts), free(names);
    dinoc_safetensors_close(st);
    dinoc_text_free(m);
}

DINOC_TEST(text_load_errors) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/text/clip/model", dinoc_test_fixtures());
    dinoc_text_model *m = NULL;
    CHECK_OK(dinoc_text_model_load(&m, dir));
    if (!m) return;
    char bad[600];
    snprintf(bad, sizeof bad, "%s/text_bad", dinoc_test_tmpdir());
    /* save the first layer only, then claim two layers in config.json: tensors are missing */
    m->cfg.layers = 1;
    CHECK_OK(dinoc_text_model_save(m, bad));
    m->cfg.layers = 2;
    dinoc_text_model *r = NULL;
    char cfgp[700];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", bad);
    char *txt = NULL;
    size_t len;
    CHECK_OK(dinoc_read_file(cfgp, 1 << 20, &txt, &len));
    if (txt) {
        char *p = strstr(txt, "\"num_hidden_layers\":\t1");
        CHECK(p != NULL);
        if (p) p[strlen("\"num_hidden_layers\":\t")] = '2';
        CHECK_OK(dinoc_write_file_atomic(cfgp, txt, strlen(txt)));
        free(txt);
    }
    CHECK_ERR(dinoc_text_model_load(&r, bad), DINOC_ERR_SHAPE, "missing tensor 'text_model.encoder.layers.1.");
    CHECK(r == NULL);
    CHECK_ERR(dinoc_text_model_load(&r, "/nonexistent/text"), DINOC_ERR_IO, "not a model folder");
    /* bad inputs to the forward */
    dinoc_text_state *s = NULL;
    CHECK_ERR(dinoc_text_state_init(&s, m, 1, m->cfg.max_pos + 1, 0), DINOC_ERR_ARG, "T <=");
    CHECK_OK(dinoc_text_state_init(&s, m, 1, 4, 0));
    int32_t ids[4] = {1, 2, 3, 1000}, ln = 4, ln0 = 0;
    CHECK_ERR(dinoc_text_forward(m, s, ids, &ln), DINOC_ERR_ARG, "token id 1000");
    ids[3] = 4;
    CHECK_ERR(dinoc_text_forward(m, s, ids, &ln0), DINOC_ERR_ARG, "length 0");
    CHECK_ERR(dinoc_text_backward(m, s, NULL, NULL, m->params), DINOC_ERR_ARG, "train = 1");
    dinoc_text_state_free(s);
    dinoc_text_free(m);
}

/* ---- masked attention ------------------------------------------------------------------------ */

static double attn_loss(float *out, float *att, const float *qkv, const dinoc_attn_mask *mk,
                        const float *dout, int B, int T, int D, int NH, float *scr) {
    dinoc_attention_forward_masked(out, att, qkv, mk, B, T, D, NH, scr, 1);
    double l = 0;
    for (size_t i = 0; i < (size_t)B * T * D; i++) l += (double)out[i] * dout[i];
    return l;
}

/* Finite differences of <attention(qkv), dout> on 40 random qkv entries, plus the exact zeros. */
static void masked_attention_fd(int T, int causal, int portable, const char *label) {
    const int B = 2, D = 16, NH = 2;
    int32_t   kl[2] = {T, T / 2 + 1};
    dinoc_attn_mask mk = {causal, kl};
    size_t    nq = (size_t)B * T * 3 * D, no = (size_t)B * T * D, na = (size_t)B * NH * T * T;
    float    *qkv = malloc(nq * 4), *dq = calloc(nq, 4), *out = malloc(no * 4), *dout = malloc(no * 4);
    float    *att = malloc(na * 4);
    size_t    ns = dinoc_attention_scratch_floats(T, D / NH), nb = dinoc_attention_backward_scratch_floats(T, D / NH);
    float    *scr = malloc((ns > nb ? ns : nb) * 4);
    dinoc_rng r;
    dinoc_rng_seed(&r, 3);
    for (size_t i = 0; i < nq; i++) qkv[i] = dinoc_rng_normal(&r);
    for (size_t i = 0; i < no; i++) dout[i] = dinoc_rng_normal(&r);
    dinoc_ops_force_portable(portable);
    attn_loss(out, att, qkv, &mk, dout, B, T, D, NH, scr);
    int zeros = 1, sums = 1;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *p = att + (((size_t)b * NH + h) * T + t) * T;
                double       sum = 0;
                for (int u = 0; u < T; u++) {
                    sum += p[u];
                    if ((causal && u > t) || u >= kl[b]) zeros &= p[u] == 0.0f;
                }
                sums &= fabs(sum - 1) < 1e-5; /* float softmax of <= 130 terms */
            }
    CHECK_MSG(zeros, "%s: masked probabilities are not exactly 0", label);
    CHECK_MSG(sums, "%s: probability rows do not sum to 1", label);
    dinoc_attention_backward(dq, dout, qkv, att, B, T, D, NH, scr, 1);
    double worst = 0;
    for (int k = 0; k < 40; k++) {
        size_t       i = dinoc_rng_u64(&r) % nq;
        const float  x = qkv[i];
        const double h = 1e-2; /* float forward: error ~1e-7 |f| / h, curvature O(h^2) */
        qkv[i]         = x + (float)h;
        double fp      = attn_loss(out, att, qkv, &mk, dout, B, T, D, NH, scr);
        qkv[i]         = x - (float)h;
        double fm      = attn_loss(out, att, qkv, &mk, dout, B, T, D, NH, scr);
        qkv[i]         = x;
        double fd = (fp - fm) / (2 * h), err = fabs(fd - dq[i]) / fmax(1.0, fabs(fd));
        worst = fmax(worst, err);
    }
    dinoc_ops_force_portable(0);
    fprintf(stderr, "    %s: worst finite-difference error %.2e\n", label, worst);
    /* central differences at h = 1e-2 on O(1) values: truncation ~1e-4, rounding ~1e-5 */
    CHECK_MSG(worst < 2e-3, "%s: finite differences disagree (%.3g)", label, worst);
    free(qkv), free(dq), free(out), free(dout), free(att), free(scr);
}

DINOC_TEST(text_attention_masked_fd) {
    masked_attention_fd(9, 1, 0, "causal+padding T=9");
    masked_attention_fd(9, 1, 1, "causal+padding T=9 portable");
    masked_attention_fd(12, 0, 0, "padding T=12");
    masked_attention_fd(130, 1, 0, "causal+padding T=130 (reference path)");
    masked_attention_fd(130, 0, 0, "padding T=130 (reference path)");
}

/* ---- MLM masking statistics ------------------------------------------------------------------ */

DINOC_TEST(text_mlm_mask_statistics) {
    const int B = 32, T = 64, V = 1000, draws = 100;
    int32_t   never[3] = {0, 1, 2};
    dinoc_mlm_mask_params mp = dinoc_mlm_mask_default(3, V);
    mp.never = never, mp.n_never = 3;
    int32_t *ids = malloc(sizeof(int32_t) * B * T), *orig = malloc(sizeof(int32_t) * B * T);
    int32_t *pos = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    int32_t  len[32];
    dinoc_rng r, data;
    dinoc_rng_seed(&r, 1), dinoc_rng_seed(&data, 2);
    long eligible = 0, selected = 0, masked = 0, randomized = 0, kept = 0, bad = 0;
    for (int k = 0; k < draws; k++) {
        for (int b = 0; b < B; b++) {
            len[b] = 8 + (int)(dinoc_rng_u64(&data) % (T - 7));
            for (int t = 0; t < T; t++) {
                int32_t id = t >= len[b] ? 0 : (int32_t)(dinoc_rng_u64(&data) % V);
                ids[b * T + t] = orig[b * T + t] = id;
                eligible += t < len[b] && id > 2;
            }
        }
        int n = dinoc_mlm_mask(ids, pos, tgt, B * T, len, B, T, &mp, &r);
        selected += n;
        for (int i = 0; i < n; i++) {
            const int32_t p = pos[i];
            bad += (i && pos[i - 1] >= p) || tgt[i] != orig[p] || orig[p] <= 2 || p % T >= len[p / T];
            if (ids[p] == 3 && orig[p] != 3) masked++;
            else if (ids[p] != orig[p]) randomized++;
            else kept++;
        }
        int changed_elsewhere = 0;
        for (int i = 0, j = 0; i < B * T; i++) {
            if (j < n && pos[j] == i) { j++; continue; }
            changed_elsewhere |= ids[i] != orig[i];
        }
        bad += changed_elsewhere;
    }
    const double sel = (double)selected / eligible, mk = (double)masked / selected;
    const double rnd = (double)randomized / selected, kp = (double)kept / selected;
    fprintf(stderr, "    %ld eligible: selected %.4f, [MASK] %.4f, random %.4f, kept %.4f\n", eligible,
            sel, mk, rnd, kp);
    CHECK_MSG(bad == 0, "%ld selections broke the rules (order, targets, never-mask, padding)", bad);
    /* ~110k eligible tokens: the share's sd is 0.001; ~16k selected: 80/10/10 shares' sd <= 0.003.
     * Bounds at ~5 sd. A random replacement that draws the original id (or [MASK]) counts as kept
     * or masked: 0.1 * 2/V shifts, negligible here. */
    CHECK(fabs(sel - 0.15) < 0.005);
    CHECK(fabs(mk - 0.80) < 0.015);
    CHECK(fabs(rnd - 0.10) < 0.015);
    CHECK(fabs(kp - 0.10) < 0.015);
    /* capacity: a uniform subset, still sorted and distinct */
    for (int i = 0; i < B * T; i++) ids[i] = 10 + i % 50;
    int n = dinoc_mlm_mask(ids, pos, tgt, 20, NULL, B, T, &mp, &r);
    CHECK(n == 20);
    for (int i = 1; i < n; i++) CHECK(pos[i] > pos[i - 1]);
    free(ids), free(orig), free(pos), free(tgt);
}
