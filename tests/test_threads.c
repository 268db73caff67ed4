/* test_threads.c: one dinoc_model shared by several user threads (docs/hardening.md, "Thread
 * safety"). dinoc.h promises that a model is read-only and shareable and that a dinoc_state belongs
 * to one thread; these cases run NT pthreads at once on one small DINOv2-with-registers model (two
 * blocks, LayerScale, mask token), each with its own states and inputs, at the native patch grid
 * and at an interpolated one, and require every output (final tokens, last attention, every
 * block's hidden state) to be bitwise equal to the same input run alone on the main thread first.
 *
 * How the library behaves (the cases pin it down):
 * - dinoc_set_threads(n) is process-wide: every dinoc_forward, on whatever thread, splits its work
 *   over at most n OpenMP threads. k user threads calling dinoc_forward at once each get their own
 *   OpenMP team (k x n threads in all): set n = 1 to serve k requests on k threads.
 * - Results do not depend on which or how many user threads run (same n).
 * - dinoc_last_error() is per thread.
 * - The first call that needs the thread count may come from several threads at once
 *   (threads_first_use_concurrent runs first in its file so that it sees the lazy set-up when the
 *   runner is filtered to "threads_"; scripts/tsan.sh checks it for data races).
 * Under scripts/tsan.sh (ThreadSanitizer, OMP=0) the same cases check for data races. */
#include "check.h"

#include <pthread.h>
#include <sched.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NT   4 /* user threads */
#define NIN  3 /* inputs per thread and shape */
#define REPS 3 /* passes over them */

typedef struct {
    int B, H, W;
    int use_mask;
} shape;
/* 28 x 28 is the model's own 4 x 4 patch grid; 21 x 35 interpolates the position embeddings */
static const shape k_shapes[2] = {{2, 28, 28, 0}, {1, 21, 35, 1}};

static dinoc_model *tiny_model(void) {
    dinoc_vit_config c;
    if (dinoc_vit_preset(&c, "vits14-reg") != DINOC_OK) return NULL;
    c.dim = 48, c.depth = 2, c.heads = 3, c.ffn_hidden = 192, c.patch = 7, c.image_size = 28;
    c.layerscale = 1, c.mask_token = 1;
    dinoc_model *m = NULL;
    CHECK_OK(dinoc_model_init_random(&m, &c, 7));
    return m;
}

static size_t in_floats(const dinoc_model *m, const shape *sh) {
    return (size_t)sh->B * dinoc_model_config(m)->channels * sh->H * sh->W;
}

/* input k of thread t for shape si: a fixed pseudo-random image (and mask) */
static void make_input(float *x, size_t n, uint8_t *mask, size_t nmask, int t, int si, int k) {
    uint64_t z = 0x9E3779B97F4A7C15ull * (uint64_t)(1 + t * 100 + si * 10 + k);
    for (size_t i = 0; i < n; i++) {
        z ^= z >> 12, z ^= z << 25, z ^= z >> 27;
        x[i] = (float)((z * 0x2545F4914F6CDD1Dull) >> 40) / (float)(1 << 24) * 4.0f - 2.0f;
    }
    for (size_t i = 0; i < nmask; i++) mask[i] = (uint8_t)((i * 7 + (size_t)k + (size_t)t) % 5 == 0);
}

/* what one forward leaves in a state: tokens, attention, every block's hidden state */
typedef struct {
    float *out, *attn, *hidden;
    size_t n_out, n_attn, n_hidden;
} result;

static dinoc_status state_for(dinoc_state **s, const dinoc_model *m, const shape *sh) {
    return dinoc_state_init(s, m, sh->B, sh->H, sh->W, DINOC_STATE_ATTN | DINOC_STATE_HIDDEN);
}

/* runs one forward on s and copies its results into r (allocated on first use) */
static dinoc_status run_one(const dinoc_model *m, dinoc_state *s, const float *x, const uint8_t *mask,
                            result *r) {
    dinoc_status st = dinoc_forward(m, s, x, mask);
    if (st) return st;
    int B, T, D, gh, gw;
    dinoc_state_dims(s, &B, &T, &D, &gh, &gw);
    const dinoc_vit_config *c = dinoc_model_config(m);
    r->n_out    = (size_t)B * T * D;
    r->n_attn   = (size_t)B * c->heads * T * T;
    r->n_hidden = (size_t)c->depth * B * T * D;
    if (!r->out) {
        r->out    = malloc(sizeof(float) * r->n_out);
        r->attn   = malloc(sizeof(float) * r->n_attn);
        r->hidden = malloc(sizeof(float) * r->n_hidden);
        if (!r->out || !r->attn || !r->hidden) return DINOC_ERR_NOMEM;
    }
    memcpy(r->out, dinoc_state_output(s), sizeof(float) * r->n_out);
    memcpy(r->attn, dinoc_state_attn(s), sizeof(float) * r->n_attn);
    for (int l = 0; l < c->depth; l++)
        if ((st = dinoc_state_hidden(m, s, l, 0, r->hidden + (size_t)l * B * T * D))) return st;
    return DINOC_OK;
}

static int same_result(const result *a, const result *b) {
    return a->out && b->out && a->n_out == b->n_out && a->n_attn == b->n_attn &&
           a->n_hidden == b->n_hidden && !memcmp(a->out, b->out, sizeof(float) * a->n_out) &&
           !memcmp(a->attn, b->attn, sizeof(float) * a->n_attn) &&
           !memcmp(a->hidden, b->hidden, sizeof(float) * a->n_hidden);
}

static void result_free(result *r) {
    free(r->out), free(r->attn), free(r->hidden);
    memset(r, 0, sizeof *r);
}

typedef struct {
    const dinoc_model *m;
    int                t, threads;
    pthread_barrier_t *go;
    float             *x[2][NIN];
    uint8_t           *mask[2][NIN];
    result             ref[2][NIN]; /* filled by the main thread beforehand */
    /* filled by the thread */
    int                runs, mismatches, errors, team; /* team: OpenMP's default team size after a forward */
    char               first_error[256];
} worker;

static void *worker_main(void *arg) {
    worker     *w     = arg;
    dinoc_state *s[2] = {NULL, NULL};
    result      r     = {0};
    for (int si = 0; si < 2; si++)
        if (state_for(&s[si], w->m, &k_shapes[si]) != DINOC_OK && !w->errors++)
            snprintf(w->first_error, sizeof w->first_error, "state: %s", dinoc_last_error());
    pthread_barrier_wait(w->go);
    for (int rep = 0; rep < REPS && !w->errors; rep++)
        for (int k = 0; k < NIN; k++)
            for (int si = 0; si < 2; si++) {
                /* a different order per thread and pass, so that threads overlap on every kind */
                int kk = (k + w->t + rep) % NIN, ss = (si + w->t + rep) % 2;
                dinoc_status st = run_one(w->m, s[ss], w->x[ss][kk], w->mask[ss][kk], &r);
                w->runs++;
                if (st) {
                    if (!w->errors++)
                        snprintf(w->first_error, sizeof w->first_error, "forward: %s", dinoc_last_error());
                } else if (!same_result(&r, &w->ref[ss][kk])) {
                    w->mismatches++;
                }
#ifdef _OPENMP
                /* this thread never called dinoc_set_threads: its loops still use the process's count */
                if (omp_get_max_threads() != w->threads) w->team = omp_get_max_threads();
#endif
                result_free(&r);
            }
    dinoc_state_free(s[0]);
    dinoc_state_free(s[1]);
    return NULL;
}

/* NT threads on one model, each compared with a serial run of its inputs */
static void shared_model_case(int threads) {
    const int saved = dinoc_get_threads();
    dinoc_set_threads(threads);
    dinoc_model *m = tiny_model();
    if (!m) {
        dinoc_set_threads(saved);
        return;
    }
    worker w[NT];
    memset(w, 0, sizeof w);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, NT);
    /* references: every input alone, on this thread, with fresh states */
    for (int t = 0; t < NT; t++) {
        w[t].m = m, w[t].t = t, w[t].threads = threads, w[t].go = &go;
        for (int si = 0; si < 2; si++) {
            const shape *sh = &k_shapes[si];
            dinoc_state *s  = NULL;
            CHECK_OK(state_for(&s, m, sh));
            int B = 0, T = 0, D = 0, gh = 0, gw = 0;
            if (s) dinoc_state_dims(s, &B, &T, &D, &gh, &gw);
            size_t nm = s && sh->use_mask ? (size_t)B * gh * gw : 0;
            for (int k = 0; k < NIN; k++) {
                size_t n       = in_floats(m, sh);
                w[t].x[si][k]    = malloc(sizeof(float) * n);
                w[t].mask[si][k] = nm ? malloc(nm) : NULL;
                make_input(w[t].x[si][k], n, w[t].mask[si][k], nm, t, si, k);
                if (s) CHECK_OK(run_one(m, s, w[t].x[si][k], w[t].mask[si][k], &w[t].ref[si][k]));
            }
            dinoc_state_free(s);
        }
    }
    /* the inputs differ between threads: a mix-up of states would show */
    CHECK(!same_result(&w[0].ref[0][0], &w[1].ref[0][0]));
    pthread_t th[NT];
    int       started = 0;
    for (int t = 0; t < NT; t++) {
        int rc = pthread_create(&th[t], NULL, worker_main, &w[t]);
        CHECK_MSG(rc == 0, "pthread_create: %d", rc);
        if (rc) break;
        started++;
    }
    if (started < NT) abort(); /* the others wait at the barrier for ever */
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    int runs = 0, bad = 0;
    for (int t = 0; t < NT; t++) {
        runs += w[t].runs;
        bad += w[t].errors + w[t].mismatches;
        CHECK_MSG(!w[t].errors, "thread %d: %d errors, first: %s", t, w[t].errors, w[t].first_error);
        CHECK_MSG(!w[t].mismatches, "thread %d (dinoc_set_threads(%d)): %d of %d forwards differ from the serial run",
                  t, threads, w[t].mismatches, w[t].runs);
        CHECK_MSG(!w[t].team, "thread %d: dinoc_forward ran with OpenMP teams of %d threads after dinoc_set_threads(%d)",
                  t, w[t].team, threads);
        for (int si = 0; si < 2; si++)
            for (int k = 0; k < NIN; k++) {
                free(w[t].x[si][k]), free(w[t].mask[si][k]);
                result_free(&w[t].ref[si][k]);
            }
    }
    CHECK(runs == NT * REPS * NIN * 2);
    if (!bad) fprintf(stderr, "    %d threads x %d forwards, dinoc_set_threads(%d): all bitwise equal to the serial runs\n",
            NT, REPS * NIN * 2, threads);
    pthread_barrier_destroy(&go);
    dinoc_model_free(m);
    dinoc_set_threads(saved);
}

/* ---- the first call that needs the thread count, from NT threads at once ----------------------- */

typedef struct {
    const dinoc_model *m;
    pthread_barrier_t *go;
    int                threads, ok;
} first_use;

static void *first_use_main(void *arg) {
    first_use  *f = arg;
    dinoc_state *s = NULL;
    pthread_barrier_wait(f->go);
    f->threads = dinoc_get_threads();
    if (state_for(&s, f->m, &k_shapes[0]) == DINOC_OK) {
        float x[2 * 3 * 28 * 28];
        make_input(x, sizeof x / sizeof x[0], NULL, 0, 0, 0, 0);
        f->ok = dinoc_forward(f->m, s, x, NULL) == DINOC_OK;
    }
    dinoc_state_free(s);
    return NULL;
}

/* Must stay the first DINOC_TEST of this file (see the top comment). */
DINOC_TEST(threads_first_use_concurrent) {
    dinoc_model *m = tiny_model();
    if (!m) return;
    first_use         f[NT];
    pthread_t         th[NT];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, NT);
    for (int t = 0; t < NT; t++) {
        f[t] = (first_use){m, &go, 0, 0};
        if (pthread_create(&th[t], NULL, first_use_main, &f[t]) != 0) abort();
    }
    for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < NT; t++) {
        CHECK_MSG(f[t].ok, "thread %d: forward failed", t);
        CHECK_MSG(f[t].threads >= 1 && f[t].threads == f[0].threads, "thread %d saw %d threads, thread 0 %d", t,
                  f[t].threads, f[0].threads);
    }
    CHECK(dinoc_get_threads() == f[0].threads);
    pthread_barrier_destroy(&go);
    dinoc_model_free(m);
}

DINOC_TEST(threads_shared_model_serial_inner) {
    shared_model_case(1);
}

DINOC_TEST(threads_shared_model_nested_teams) {
    /* each user thread's forward runs its own OpenMP team of 2 (with OMP=0: serial) */
    shared_model_case(2);
}

/* ---- dinoc_last_error is per thread ------------------------------------------------------------ */

typedef struct {
    const dinoc_model *m;
    pthread_barrier_t *go;
    int                t, bad;
} err_worker;

static void *err_main(void *arg) {
    err_worker *e = arg;
    pthread_barrier_wait(e->go);
    for (int i = 0; i < 200; i++) {
        /* a side that is not a multiple of the patch (7): the message quotes it */
        int          H = 7 * (e->t + 1) + 1, W = 14;
        dinoc_state *s = NULL;
        char         want[64];
        snprintf(want, sizeof want, "%dx%d", H, W);
        if (dinoc_state_init(&s, e->m, 1, H, W, 0) != DINOC_ERR_SHAPE || s || !strstr(dinoc_last_error(), want))
            e->bad++;
        sched_yield();
        if (!strstr(dinoc_last_error(), want)) e->bad++;
    }
    return NULL;
}

DINOC_TEST(threads_last_error_per_thread) {
    dinoc_model *m = tiny_model();
    if (!m) return;
    err_worker        e[NT];
    pthread_t         th[NT];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, NT);
    for (int t = 0; t < NT; t++) {
        e[t] = (err_worker){m, &go, t, 0};
        if (pthread_create(&th[t], NULL, err_main, &e[t]) != 0) abort();
    }
    for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < NT; t++) CHECK_MSG(!e[t].bad, "thread %d saw another thread's error %d times", t, e[t].bad);
    pthread_barrier_destroy(&go);
    dinoc_model_free(m);
}
