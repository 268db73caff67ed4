/* cmd_bench.c: `dinoc bench`: forward-pass throughput on random weights. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int cmd_bench(int argc, char **argv) {
    const char    *model = "vits14";
    int            batch = 8, threads = 0, size = 224, iters = 0, json = 0;
    float          min_time = 2.0f;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "preset name (see dinoc init --help) or a model folder"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"size", 's', OPT_INT, &size, "input side in pixels (multiple of the patch)"},
        {"iters", 'n', OPT_INT, &iters, "timed forwards (0: until --min-time)"},
        {"min-time", 0, OPT_FLOAT, &min_time, "seconds to keep timing when --iters is 0"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc bench [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (npos || batch <= 0 || size <= 0) {
        fprintf(stderr, "error: bad arguments (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    dinoc_model     *m = NULL;
    dinoc_vit_config cfg;
    dinoc_status     s;
    if (dinoc_vit_preset(&cfg, model) == DINOC_OK)
        s = dinoc_model_init_random(&m, &cfg, 0);
    else
        s = dinoc_model_load(&m, model, NULL);
    if (s) return cli_fail("bench", s);
    const dinoc_vit_config *c = dinoc_model_config(m);
    dinoc_state            *st = NULL;
    if ((s = dinoc_state_init(&st, m, batch, size, size, 0))) {
        dinoc_model_free(m);
        return cli_fail("bench", s);
    }
    size_t n   = (size_t)batch * c->channels * size * size;
    float *img = malloc(n * sizeof(float));
    if (!img) return fprintf(stderr, "error: out of memory\n"), 1;
    for (size_t i = 0; i < n; i++) img[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dinoc_forward(m, st, img, NULL); /* warm-up */
    double best = 1e30, total = 0;
    int    done = 0;
    while (iters ? done < iters : (total < min_time || done < 3)) {
        double t0 = cli_now();
        if ((s = dinoc_forward(m, st, img, NULL))) break;
        double dt = cli_now() - t0;
        total += dt;
        if (dt < best) best = dt;
        done++;
    }
    free(img);
    dinoc_state_free(st);
    dinoc_model_free(m);
    if (s) return cli_fail("bench", s);
    double mean = total / done;
    if (json)
        printf("{\"impl\":\"dinoc\",\"model\":\"%s\",\"batch\":%d,\"threads\":%d,\"size\":%d,"
               "\"img_s\":%.3f,\"ms_per_batch\":%.3f,\"ms_per_batch_best\":%.3f,\"runs\":%d}\n",
               model, batch, dinoc_get_threads(), size, batch / mean, mean * 1e3, best * 1e3, done);
    else
        printf("dinoc %s batch=%d threads=%d size=%d img_s=%.2f ms_per_batch=%.2f (best %.2f, %d runs)\n",
               model, batch, dinoc_get_threads(), size, batch / mean, mean * 1e3, best * 1e3, done);
    return 0;
}
