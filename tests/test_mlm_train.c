/* test_mlm_train.c: MLM pretraining (src/data/textdata.c, src/train/mlm_train.c,
 * src/eval/mlm_eval.c): corpus entries, split and packing on a small text; the loader's order and
 * resume position; the vocabulary file round trip; a short run's loss falls; a run resumed from a
 * checkpoint equals an uninterrupted one bit for bit; the evaluation equals a direct computation
 * from full logits on a tiny random model. Needs the CLIP BPE vocabulary (data/), no fixtures. */
#include "check.h"
#include "../src/train/mlm_train.h"

static dinoc_tokenizer *load_tok(void) {
    char             path[4096];
    dinoc_tokenizer *t = NULL;
    int32_t          mask;
    CHECK_OK(dinoc_tokenizer_find_vocab(path, sizeof path, NULL));
    CHECK_OK(dinoc_tokenizer_load(&t, path));
    if (t) CHECK_OK(dinoc_tokenizer_add_token(t, "[MASK]", &mask));
    return t;
}

/* Seven fortune entries (the first one empty, as a file starting with "%" has). */
static const char *FORTUNES = "%\nthe cat sat\n%\non the mat\n%\na dog\nate a bone\n%\n%\nbirds fly\n%\n"
                              "fish swim\n%\nthe end\n%\nof all\n";

DINOC_TEST(mlm_corpus_split_pack) {
    dinoc_tokenizer *tok = load_tok();
    if (!tok) return;
    dinoc_text_corpus *all = NULL, *tr = NULL, *ho = NULL;
    CHECK_OK(dinoc_text_corpus_from_text(&all, tok, FORTUNES, strlen(FORTUNES)));
    if (!all) return;
    CHECK(all->n_entries == 7); /* empty entries dropped */
    /* "a dog\nate a bone": 5 words, one id each in CLIP's BPE */
    CHECK(all->off[3] - all->off[2] == 5);
    CHECK(dinoc_tokenizer_token_id(tok, "cat</w>") == all->ids[all->off[0] + 1]);
    /* every 3rd entry held out: entries 2 and 5 */
    CHECK_OK(dinoc_text_corpus_split(&tr, all, 3, 0));
    CHECK_OK(dinoc_text_corpus_split(&ho, all, 3, 1));
    CHECK(tr && ho && tr->n_entries == 5 && ho->n_entries == 2);
    if (ho) CHECK(ho->off[1] == 5 && ho->ids[0] == all->ids[all->off[2]]);
    dinoc_text_vocab v;
    CHECK_OK(dinoc_text_vocab_build(&v, tr, tok));
    /* training words: the cat sat on mat birds fly fish swim of all -> 11 distinct + 5 specials */
    CHECK(v.n == DINOC_TV_N_SPECIAL + 11);
    CHECK(v.to_tok[DINOC_TV_MASK] == 49408 && v.to_tok[DINOC_TV_CLS] == 49406 && v.to_tok[DINOC_TV_SEP] == 49407);
    const int the = v.to_model[dinoc_tokenizer_token_id(tok, "the</w>")];
    CHECK(the >= DINOC_TV_N_SPECIAL && v.counts[the] == 2 && v.counts[DINOC_TV_SEP] == 5);
    CHECK(v.to_model[dinoc_tokenizer_token_id(tok, "dog</w>")] == DINOC_TV_UNK); /* held out only */
    /* packing at T = 8: stream = 12 ids + 5 [SEP] = 17 -> chunks of 7: 3 sequences, lengths 8 8 4 */
    dinoc_text_packed p;
    CHECK_OK(dinoc_text_pack(&p, tr, &v, 8));
    CHECK(p.n_seq == 3 && p.len[0] == 8 && p.len[1] == 8 && p.len[2] == 4 && p.n_tokens == 20);
    CHECK(p.ids[0] == DINOC_TV_CLS && p.ids[8] == DINOC_TV_CLS && p.ids[1] == the);
    CHECK(p.ids[4] == DINOC_TV_SEP);             /* "the cat sat" [SEP] */
    CHECK(p.ids[16 + 3] == DINOC_TV_SEP && p.ids[16 + 4] == DINOC_TV_PAD && p.ids[16 + 7] == DINOC_TV_PAD);
    /* the vocabulary file round trip */
    char *dir = dinoc_path_join(dinoc_test_tmpdir(), "mlm_vocab");
    CHECK_OK(dinoc_mkdir(dir));
    CHECK_OK(dinoc_text_vocab_save(&v, dir, "test"));
    dinoc_text_vocab w;
    CHECK_OK(dinoc_text_vocab_load(&w, dir, dinoc_tokenizer_vocab_size(tok)));
    CHECK(w.n == v.n && !memcmp(w.to_tok, v.to_tok, sizeof(int32_t) * v.n) &&
          !memcmp(w.counts, v.counts, sizeof(int64_t) * v.n) && w.to_model[49408] == DINOC_TV_MASK);
    dinoc_text_vocab_free(&w);
    /* paragraphs: blank lines split a plain text */
    dinoc_text_corpus *par = NULL;
    const char        *txt = "one two\nthree\n\n  \nfour\n\n\nfive six";
    CHECK_OK(dinoc_text_corpus_from_text(&par, tok, txt, strlen(txt)));
    CHECK(par && par->n_entries == 3 && par->off[1] == 3 && par->off[3] - par->off[2] == 2);
    dinoc_text_corpus_free(par);
    /* invalid UTF-8: the error names the entry */
    CHECK_ERR(dinoc_text_corpus_from_text(&par, tok, "ok\n%\nbad \xff byte\n", 17), DINOC_ERR_ARG, "entry 1");
    free(dir);
    dinoc_text_packed_free(&p);
    dinoc_text_vocab_free(&v);
    dinoc_text_corpus_free(all), dinoc_text_corpus_free(tr), dinoc_text_corpus_free(ho);
    dinoc_tokenizer_free(tok);
}

/* The vocabulary file's ids and counts must be exact integers in range (no cast of an
 * out-of-range double, no silent truncation of 8.5) and the ids distinct; the errors name the
 * file and the entry. */
DINOC_TEST(mlm_vocab_file_errors) {
    static const struct {
        const char *name, *json, *needle; /* needle NULL: loads */
    } cases[] = {
        {"ok", "{\"ids\":[-1,-2,7,8,9,10],\"counts\":[0,0,1,2,3,4]}", NULL},
        {"frac_id", "{\"ids\":[-1,-2,7,8.5,9,10],\"counts\":[0,0,1,2,3,4]}", "ids[3]"},
        {"huge_id", "{\"ids\":[-1,-2,7,8,1e300,10],\"counts\":[0,0,1,2,3,4]}", "ids[4]"},
        {"huge_count", "{\"ids\":[-1,-2,7,8,9,10],\"counts\":[0,0,1e30,2,3,4]}", "counts[2]"},
        {"frac_count", "{\"ids\":[-1,-2,7,8,9,10],\"counts\":[0,0,1,2.5,3,4]}", "counts[3]"},
        {"neg_count", "{\"ids\":[-1,-2,7,8,9,10],\"counts\":[0,0,1,2,-3,4]}", "counts[4]"},
        {"dup_id", "{\"ids\":[-1,-2,7,8,7,10],\"counts\":[0,0,1,2,3,4]}", "duplicate"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "mlm_vocab_%s", cases[k].name);
        char *dir = dinoc_path_join(dinoc_test_tmpdir(), name);
        char *file = dir ? dinoc_path_join(dir, DINOC_TEXT_VOCAB_FILE) : NULL;
        CHECK_OK(dinoc_mkdir(dir));
        CHECK_OK(dinoc_write_file_atomic(file, cases[k].json, strlen(cases[k].json)));
        dinoc_text_vocab v;
        if (!cases[k].needle) {
            CHECK_OK(dinoc_text_vocab_load(&v, dir, 100));
            CHECK(v.n == 6 && v.to_tok[3] == 8 && v.counts[5] == 4 && v.to_model[9] == 4);
            dinoc_text_vocab_free(&v);
        } else {
            CHECK_ERR(dinoc_text_vocab_load(&v, dir, 100), DINOC_ERR_FORMAT, cases[k].needle);
            CHECK_MSG(strstr(dinoc_last_error(), file) != NULL, "%s: '%s' does not name the file",
                      cases[k].name, dinoc_last_error());
        }
        free(file), free(dir);
    }
}

DINOC_TEST(mlm_loader_order_and_resume) {
    dinoc_text_packed p = {4, 10, NULL, NULL, 0};
    p.ids = calloc(40, sizeof(int32_t)), p.len = malloc(10 * sizeof(int32_t));
    for (int s = 0; s < 10; s++) p.ids[s * 4] = s, p.len[s] = 2 + s % 3;
    dinoc_text_loader a, b;
    CHECK_OK(dinoc_text_loader_init(&a, &p, 3, 7, 0, 0));
    CHECK(dinoc_text_loader_batches_per_epoch(&a) == 3);
    int32_t ids[12], len[3], seen[10] = {0}, first[5][3];
    int     end = 0;
    for (int k = 0; k < 3; k++) {
        dinoc_text_loader_next(&a, ids, len, &end);
        CHECK(end == (k == 2)); /* 10 = 3 x 3 + 1: the tenth sequence waits for another epoch */
        for (int i = 0; i < 3; i++) {
            seen[ids[i * 4]]++, first[k][i] = ids[i * 4];
            CHECK(len[i] == 2 + ids[i * 4] % 3);
        }
    }
    int once = 0;
    for (int s = 0; s < 10; s++) once += seen[s] == 1;
    CHECK(once == 9 && a.epoch == 1 && a.index == 0);
    for (int k = 3; k < 5; k++) {
        dinoc_text_loader_next(&a, ids, len, NULL);
        for (int i = 0; i < 3; i++) first[k][i] = ids[i * 4];
    }
    CHECK(memcmp(first[0], first[3], sizeof first[0]) || memcmp(first[1], first[4], sizeof first[1]));
    /* a loader started at epoch 1, index 3 gives batch 4 again (the resume position) */
    CHECK_OK(dinoc_text_loader_init(&b, &p, 3, 7, 1, 3));
    dinoc_text_loader_next(&b, ids, len, NULL);
    for (int i = 0; i < 3; i++) CHECK(ids[i * 4] == first[4][i]);
    dinoc_text_loader_free(&b);
    CHECK_ERR(dinoc_text_loader_init(&b, &p, 11, 7, 0, 0), DINOC_ERR_ARG, "10 sequences");
    dinoc_text_loader_free(&a), dinoc_text_loader_free(&b);
    dinoc_text_packed_free(&p);
}

/* A small repetitive corpus in the fortune format, written once under the tmp dir. */
static char *write_corpus(void) {
    char *path = dinoc_path_join(dinoc_test_tmpdir(), "mlm_corpus.txt");
    FILE *f    = path ? fopen(path, "w") : NULL;
    if (!f) return path;
    /* three topics: an entry's 14 words come from one group, so the words around a masked one
     * name its group (ln 3 left of the unigram's ln 9 + punctuation) */
    static const char *w[3][3] = {{"red", "green", "blue"}, {"cat", "dog", "bird"}, {"one", "two", "three"}};
    for (int i = 0; i < 120; i++) {
        for (int k = 0; k < 14; k++) fprintf(f, "%s%s", k ? " " : "", w[i % 3][(i * 7 + k * k) % 3]);
        fprintf(f, "\n%%\n");
    }
    fclose(f);
    return path;
}

static dinoc_mlm_train_config tiny_config(const char *const *text, const char *out) {
    dinoc_mlm_train_config c = dinoc_mlm_train_default();
    c.text = text, c.n_text = 1, c.out = out;
    c.dim = 32, c.layers = 1, c.heads = 2, c.ffn = 64, c.ctx = 16, c.batch = 8;
    c.lr = 3e-3f, c.warmup = 3, c.steps = 80, c.ckpt_every = 0, c.eval = 0, c.seed = 3;
    return c;
}

/* Mean of the "loss" fields of log lines [from, to). */
static double log_loss(const char *run, int from, int to) {
    char  *path = dinoc_path_join(run, "log.jsonl"), line[512];
    FILE  *f    = path ? fopen(path, "r") : NULL;
    double sum  = 0;
    int    k = 0, i = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *l = strstr(line, "\"loss\":");
        if (l && i >= from && i < to) sum += atof(l + 7), k++;
        i++;
    }
    if (f) fclose(f);
    free(path);
    return k ? sum / k : NAN;
}

DINOC_TEST(mlm_train_loss_decreases) {
    char *corpus = write_corpus(), *out = dinoc_path_join(dinoc_test_tmpdir(), "mlm_loss");
    const char *text[] = {corpus};
    dinoc_mlm_train_config c = tiny_config(text, out);
    c.eval = 1;
    dinoc_mlm_train_result r;
    CHECK_OK(dinoc_mlm_train(&c, &r));
    const double a = log_loss(out, 0, 5), b = log_loss(out, 70, 80);
    /* ln(V) ~ 3.2 at the start; the sentences are predictable from their neighbours, so 40 steps
     * must at least halve the loss (measured: see docs/mlm.md) */
    CHECK_MSG(b < 0.5 * a, "loss %.3f -> %.3f", a, b);
    printf("    loss over steps 1-5 %.3f, steps 71-80 %.3f (bound: half)\n", a, b);
    CHECK(r.steps == 80 && r.eval.n_masked > 0);
    /* the model folder loads back as a BertForMaskedLM */
    dinoc_text_model *m = NULL;
    CHECK_OK(dinoc_text_model_load(&m, out));
    CHECK(m && m->cfg.mlm_head && m->cfg.vocab == r.vocab);
    dinoc_text_free(m);
    free(corpus), free(out);
}

static int same_file(const char *a, const char *b) {
    char  *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int    ok = !dinoc_read_file(a, 1 << 28, &x, &nx) && !dinoc_read_file(b, 1 << 28, &y, &ny) && nx == ny &&
             !memcmp(x, y, nx);
    free(x), free(y);
    return ok;
}

DINOC_TEST(mlm_train_resume_is_exact) {
    char *corpus = write_corpus(), *a = dinoc_path_join(dinoc_test_tmpdir(), "mlm_a"),
         *b = dinoc_path_join(dinoc_test_tmpdir(), "mlm_b");
    const char *text[] = {corpus};
    dinoc_mlm_train_config c = tiny_config(text, a);
    c.steps = 12, c.ckpt_every = 5;
    dinoc_mlm_train_result r;
    CHECK_OK(dinoc_mlm_train(&c, &r)); /* uninterrupted */
    c.out = b, c.max_steps = 7;          /* stops at 7 (checkpoint at 5, then the final one at 7) */
    CHECK_OK(dinoc_mlm_train(&c, &r));
    CHECK(r.steps == 7);
    dinoc_mlm_train_config rc = dinoc_mlm_train_default();
    rc.resume = b, rc.out = NULL;
    CHECK_OK(dinoc_mlm_train(&rc, &r));
    CHECK(r.steps == 12);
    char *ma = dinoc_path_join(a, "model.safetensors"), *mb = dinoc_path_join(b, "model.safetensors");
    char *la = dinoc_path_join(a, "log.jsonl"), *lb = dinoc_path_join(b, "log.jsonl");
    CHECK_MSG(same_file(ma, mb), "resumed weights differ from the uninterrupted run's");
    /* the logs match except the tok_s field: compare the losses */
    for (int i = 0; i < 12; i++) CHECK(log_loss(a, i, i + 1) == log_loss(b, i, i + 1));
    CHECK(log_loss(b, 12, 13) != log_loss(b, 12, 13)); /* exactly 12 lines: no duplicates */
    free(ma), free(mb), free(la), free(lb), free(corpus), free(a), free(b);
}

DINOC_TEST(mlm_eval_matches_direct) {
    dinoc_tokenizer *tok = load_tok();
    if (!tok) return;
    char *corpus = write_corpus();
    const char *text[] = {corpus};
    dinoc_text_corpus *all = NULL;
    CHECK_OK(dinoc_text_corpus_read(&all, tok, text, 1));
    dinoc_text_vocab  v;
    dinoc_text_packed p;
    CHECK_OK(dinoc_text_vocab_build(&v, all, tok));
    CHECK_OK(dinoc_text_pack(&p, all, &v, 16));
    dinoc_mlm_train_config c = tiny_config(text, NULL);
    dinoc_text_config      tc = dinoc_mlm_model_config(&c, v.n);
    dinoc_text_model      *m = NULL;
    CHECK_OK(dinoc_text_init_random(&m, &tc, 11));
    dinoc_mlm_eval_result r1, r3;
    CHECK_OK(dinoc_mlm_evaluate(m, &p, v.counts, 1, 5, &r1));
    CHECK_OK(dinoc_mlm_evaluate(m, &p, v.counts, 3, 5, &r3)); /* filler rows in the last batch */
    /* direct: each sequence alone, its masked rows' full logits, log-softmax in double */
    dinoc_text_state     *ts = NULL;
    dinoc_mlm_state      *ms = NULL;
    CHECK_OK(dinoc_text_state_init(&ts, m, 1, 16, 0));
    CHECK_OK(dinoc_mlm_state_init(&ms, m, 16));
    const dinoc_mlm_mask_params mp = dinoc_mlm_eval_mask_params(v.n);
    int64_t n = 0, hit = 0, hit_u = 0, N = 0, nm = 0, hit_m = 0;
    double  ce = 0, ce_u = 0;
    int     top = DINOC_TV_N_SPECIAL;
    for (int k = DINOC_TV_N_SPECIAL; k < v.n; k++) N += v.counts[k], top = v.counts[k] > v.counts[top] ? k : top;
    for (int64_t s = 0; s < p.n_seq && ts && ms; s++) {
        int32_t ids[16], pos[16], tgt[16], len = p.len[s];
        memcpy(ids, p.ids + s * 16, sizeof ids);
        dinoc_rng rng;
        dinoc_rng_seed(&rng, 5 ^ (0xd1b54a32d192ed03ull * (uint64_t)(s + 1)));
        int k = dinoc_mlm_mask(ids, pos, tgt, 16, &len, 1, 16, &mp, &rng);
        CHECK_OK(dinoc_text_forward(m, ts, ids, &len));
        CHECK_OK(dinoc_mlm_forward(m, ms, dinoc_text_state_hidden(ts), 16, pos, tgt, k, NULL, NULL));
        const float *lg = dinoc_mlm_state_logits(ms);
        for (int i = 0; i < k; i++) {
            const float *row = lg + (size_t)i * v.n;
            double       mx = row[0], z = 0;
            int          am = 0;
            for (int j = 1; j < v.n; j++) am = row[j] > row[am] ? j : am, mx = fmax(mx, row[j]);
            for (int j = 0; j < v.n; j++) z += exp(row[j] - mx);
            ce += mx + log(z) - row[tgt[i]], hit += am == tgt[i];
            if (ids[pos[i]] == DINOC_TV_MASK) nm++, hit_m += am == tgt[i];
            ce_u -= log((v.counts[tgt[i]] + 1.0) / (N + v.n - DINOC_TV_N_SPECIAL)), hit_u += tgt[i] == top;
        }
        n += k;
    }
    CHECK(n > 20 && r1.n_masked == n && r3.n_masked == n);
    /* the same sums in another order (per chunk of 256 vs per row): 1e-6 relative of float32
     * cross-entropies accumulated in double */
    CHECK(fabs(r1.loss - ce / n) < 1e-5 * (ce / n) && fabs(r3.loss - ce / n) < 1e-5 * (ce / n));
    CHECK(r1.accuracy == (double)hit / n && r3.accuracy == r1.accuracy);
    CHECK(fabs(r1.perplexity - exp(ce / n)) < 1e-4 * exp(ce / n)); /* exp of the above */
    CHECK(fabs(r1.unigram_perplexity - exp(ce_u / n)) < 1e-9 * exp(ce_u / n)); /* same double sums */
    CHECK(r1.unigram_accuracy == (double)hit_u / n && r1.unigram_top == top);
    CHECK(nm > 0 && r1.n_mask_input == nm && r3.n_mask_input == nm && r1.mask_accuracy == (double)hit_m / nm);
    dinoc_text_state_free(ts);
    dinoc_mlm_state_free(ms);
    dinoc_text_free(m);
    dinoc_text_packed_free(&p);
    dinoc_text_vocab_free(&v);
    dinoc_text_corpus_free(all);
    dinoc_tokenizer_free(tok);
    free(corpus);
}
