/* cli.h: shared pieces of the dinoc command-line tool: a small option parser that prints every
 * flag with its default, path collection, progress lines, and the command table. */
#ifndef DINOC_CLI_H
#define DINOC_CLI_H

#include "dinoc.h"

#include <stdio.h>

typedef enum { OPT_FLAG, OPT_INT, OPT_FLOAT, OPT_STR } opt_kind;

typedef struct {
    const char *name;  /* long name without dashes: "threads" */
    char        short_name; /* 't' or 0 */
    opt_kind    kind;
    void       *ptr;   /* int* (FLAG, INT), float* (FLOAT), const char ** (STR) */
    const char *help;
} opt_spec;

/* Parses argv[1..] against opts (terminated by a {NULL} entry). Positional arguments are collected
 * into *pos (array owned by the caller, capacity argc) with their count in *npos. Returns 0 on
 * success, 1 if --help was given (help printed to stdout), 2 on a usage error (message on stderr). */
int cli_parse(int argc, char **argv, const opt_spec *opts, const char *usage, char **pos, int *npos);
void cli_print_help(FILE *f, const char *usage, const opt_spec *opts);

/* Expands files and directories (recursively, sorted by name) into image paths: files with an
 * image extension inside directories; explicit files are always kept. A folder reached twice
 * (a symbolic link, a cycle) is walked once. Returns -1 with a message on stderr naming the path
 * for a missing input, an unreadable folder, folders nested deeper than 32, or out of memory.
 * *out is malloc'ed. */
int cli_collect_images(char **inputs, int n, char ***out, int *nout);
void cli_free_list(char **list, int n);

/* Progress line on stderr: "label 120/1000 (12%) 35.2 img/s ETA 0:25". Throttled to ~4 per second
 * unless final. */
typedef struct {
    double t0, last;
    const char *label;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label);
void cli_progress_update(cli_progress *p, long done, long total, int final);
double cli_now(void);

/* qsort comparator for doubles, ascending (medians of timings). */
int cli_cmp_double(const void *a, const void *b);

/* Installs a log hook that prints library messages to stderr ("dinoc: warning: ..."). */
void cli_log_to_stderr(int verbose);

/* Reports a failed library call: "dinoc embed: <detail>" on stderr; returns 1. */
int cli_fail(const char *cmd, dinoc_status s);
/* Reports a negative --seed (cast to uint64 it would not survive a checkpoint's JSON round trip);
 * returns 2 (a usage error). */
int cli_bad_seed(int seed);

int cmd_info(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_dino(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_attn(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_pca(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_zeroshot(int argc, char **argv);
int cmd_retrieve(int argc, char **argv);
/* `dinoc train clip|mlm` and `dinoc eval zeroshot|retrieval|fewshot|mlm` (sub: the eval's name) */
int cmd_train_clip(int argc, char **argv);
int cmd_train_mlm(int argc, char **argv);
int cmd_eval_clip(const char *sub, int argc, char **argv);
int cmd_eval_mlm(int argc, char **argv);

#endif
