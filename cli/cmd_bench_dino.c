/* cmd_bench_dino.c: `dinoc bench dino`: throughput of whole DINO steps (teacher forward, student
 * forward + backward on every crop, heads, loss, per-tensor clip, AdamW, EMA, center) on random
 * crops, in source images per second; bench/run_dino.sh runs the same step in PyTorch beside it
 * (bench/bench_dino_torch.py). Defaults: the ViT-tiny step (D 192, 12 blocks, 3 heads,
 * patch 4, 1 channel; 2 global crops of 32 and 6 local of 16; head 1024/256/4096; batch 64). */
#include "cli.h"
#include "../src/train/dino.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cmd_bench_dino(int argc, char **argv) {
    dinoc_dino_config c = dinoc_dino_default();
    c.dim = 192, c.depth = 12, c.heads = 3, c.patch = 4, c.image = 32, c.channels = 1;
    c.crops.n_global = 2, c.crops.n_local = 6, c.crops.global_size = 32, c.crops.local_size = 16;
    c.crops.channels = 1;
    c.head_hidden = 1024, c.head_bottleneck = 256, c.out_dim = 4096, c.batch = 64, c.drop_path = 0.1;
    int   threads = 0, iters = 0, json = 0;
    float min_time = 5.0f, dp = 0.1f;
    const opt_spec opts[] = {
        {"dim", 0, OPT_INT, &c.dim, "ViT width"},
        {"depth", 0, OPT_INT, &c.depth, "blocks"},
        {"heads", 0, OPT_INT, &c.heads, "attention heads"},
        {"patch", 0, OPT_INT, &c.patch, "patch size"},
        {"channels", 0, OPT_INT, &c.channels, "input channels"},
        {"global-size", 0, OPT_INT, &c.crops.global_size, "global crop side (also the model's image size)"},
        {"local-size", 0, OPT_INT, &c.crops.local_size, "local crop side"},
        {"global-crops", 0, OPT_INT, &c.crops.n_global, "global crops per image"},
        {"local-crops", 0, OPT_INT, &c.crops.n_local, "local crops per image"},
        {"head-hidden", 0, OPT_INT, &c.head_hidden, "head hidden width"},
        {"head-bottleneck", 0, OPT_INT, &c.head_bottleneck, "head bottleneck"},
        {"out-dim", 0, OPT_INT, &c.out_dim, "head output dimension K"},
        {"batch", 'b', OPT_INT, &c.batch, "source images per step"},
        {"drop-path", 0, OPT_FLOAT, &dp, "stochastic depth of the last block (DINO's 0.1; linear over blocks)"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"iters", 'n', OPT_INT, &iters, "timed steps (0: until --min-time)"},
        {"min-time", 0, OPT_FLOAT, &min_time, "seconds to keep timing when --iters is 0"},
        {"precision", 0, OPT_STR, &c.precision, "fp32, bf16 (products on bf16 operands, fp32 master weights), or auto (bf16 where the CPU has bf16 instructions)"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc bench dino [options]\n\nTimes whole DINO training steps on random crops.";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (npos || iters < 0) {
        fprintf(stderr, "error: bad arguments (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    c.image = c.crops.global_size, c.crops.channels = c.channels, c.drop_path = dp;
    dinoc_dino   d;
    dinoc_status s = dinoc_dino_init(&d, &c);
    if (s) return cli_fail("bench dino", s);
    const size_t item = dinoc_multicrop_floats(&c.crops), n = item * c.batch;
    float       *x    = malloc(n * sizeof(float));
    if (!x) return fprintf(stderr, "error: out of memory\n"), 1;
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dinoc_dino_sched sc = {5e-4 * c.batch / 256, 0.04, 0.996, 0.04, 0};
    dinoc_dino_stats st, sum;
    memset(&sum, 0, sizeof sum);
    for (int w = 0; w < 2 && !s; w++) s = dinoc_dino_step(&d, x, &sc, &st); /* warm-up */
    double *times = malloc(sizeof(double) * 100000), total = 0;
    int     done  = 0;
    while (!s && done < 100000 && (iters ? done < iters : (total < min_time || done < 3))) {
        double t0 = cli_now();
        if ((s = dinoc_dino_step(&d, x, &sc, &st))) break;
        times[done] = cli_now() - t0;
        total += times[done++];
        sum.t_teacher += st.t_teacher, sum.t_student += st.t_student, sum.t_loss += st.t_loss;
        sum.t_backward += st.t_backward, sum.t_update += st.t_update;
    }
    free(x);
    if (s || !done) {
        free(times);
        dinoc_dino_free(&d);
        return cli_fail("bench dino", s ? s : DINOC_ERR_ARG);
    }
    qsort(times, (size_t)done, sizeof(double), cli_cmp_double);
    const double med = done % 2 ? times[done / 2] : 0.5 * (times[done / 2 - 1] + times[done / 2]);
    const double k = 1e3 / done;
    if (json)
        printf("{\"impl\":\"dinoc\",\"mode\":\"dino\",\"dim\":%d,\"depth\":%d,\"heads\":%d,\"patch\":%d,\"batch\":%d,"
               "\"global\":[%d,%d],\"local\":[%d,%d],\"out_dim\":%d,\"threads\":%d,\"precision\":\"%s\",\"backend\":\"%s\",\"img_s\":%.3f,\"ms_per_step\":%.2f,"
               "\"runs\":%d,\"ms_teacher\":%.2f,\"ms_student_fwd\":%.2f,\"ms_heads_loss\":%.2f,\"ms_backward\":%.2f,"
               "\"ms_update\":%.2f,\"loss\":%.5f}\n",
               c.dim, c.depth, c.heads, c.patch, c.batch, c.crops.n_global, c.crops.global_size, c.crops.n_local,
               c.crops.local_size, c.out_dim, dinoc_get_threads(), dinoc_precision_name(d.prec),
               d.prec == DINOC_PRECISION_BF16 ? dinoc_bf16_backend() : dinoc_fp32_backend(), c.batch / med, med * 1e3, done, sum.t_teacher * k,
               sum.t_student * k, sum.t_loss * k, sum.t_backward * k, sum.t_update * k, st.loss);
    else
        printf("dinoc dino step D%d L%d P%d %s batch=%d threads=%d img_s=%.2f ms_per_step=%.1f (%d steps; teacher %.1f, "
               "student fwd %.1f, heads+loss %.1f, backward %.1f, update %.1f ms)\n",
               c.dim, c.depth, c.patch, dinoc_precision_name(d.prec), c.batch, dinoc_get_threads(), c.batch / med, med * 1e3, done, sum.t_teacher * k,
               sum.t_student * k, sum.t_loss * k, sum.t_backward * k, sum.t_update * k);
    free(times);
    dinoc_dino_free(&d);
    return 0;
}
