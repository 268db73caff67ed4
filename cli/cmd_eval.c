/* cmd_eval.c: `dinoc eval classify --model RUN`: accuracy of a trained classifier. */
#include "cli.h"
#include "../src/train/supervised.h"

#include <stdlib.h>
#include <string.h>

static int eval_classify(int argc, char **argv) {
    const char    *model = NULL, *data = NULL, *data_dir = NULL;
    int            json = 0, threads = 0, batch = 256, train = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "run folder written by dinoc train supervised"},
        {"data", 'd', OPT_STR, &data, "fashion-mnist or an image folder (default: the run's)"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder"},
        {"train-split", 0, OPT_FLAG, &train, "evaluate on the training split instead of the test split"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval classify --model RUN [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || npos || batch <= 0) {
        fprintf(stderr, "error: eval classify needs --model RUN (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double       top1;
    int64_t      n;
    double       t0 = cli_now();
    dinoc_status s  = dinoc_sup_eval(model, data, data_dir, train, batch, &top1, &n);
    if (s) return cli_fail("eval classify", s);
    if (json)
        printf("{\"top1\":%.5f,\"n\":%lld,\"split\":\"%s\",\"seconds\":%.2f}\n", top1, (long long)n,
               train ? "train" : "test", cli_now() - t0);
    else
        printf("top-1 %.2f%% on %lld %s images\n", 100 * top1, (long long)n, train ? "train" : "test");
    return 0;
}

int cmd_eval(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "classify") == 0) return eval_classify(argc - 1, argv + 1);
    fprintf(stderr, "usage: dinoc eval classify --model RUN [options]\n");
    return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? 0 : 2;
}
