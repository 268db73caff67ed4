/* main.c: the dinoc command-line tool. One binary, subcommands from a table that is also the usage
 * text. Exit codes: 0 ok, 1 runtime error, 2 usage error. Results go to stdout or files, progress
 * and messages to stderr. */
#include "cli.h"
#include "../src/core/dist.h"

#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} k_cmds[] = {
    {"info", cmd_info, "print a model's config and tensor table"},
    {"embed", cmd_embed, "embed images with a model; write a .npy"},
    {"init", cmd_init, "write a model folder with random weights (tests, benchmarks)"},
    {"bench", cmd_bench, "time the forward pass on random weights"},
    {"train", cmd_train, "train a model: dino, dinov2, clip, mlm, supervised"},
    {"eval", cmd_eval, "evaluate a model: knn, linear, classify, segment, zeroshot, retrieval, fewshot, mlm"},
    {"attn", cmd_attn, "draw the last block's CLS attention per head over an image"},
    {"report", cmd_report, "write a run folder's report (Markdown with SVG curves)"},
    {"pca", cmd_pca, "picture dense features: three PCA components of patch tokens as RGB"},
    {"tokenize", cmd_tokenize, "print CLIP BPE token ids of texts"},
    {"data", cmd_data, "generate built-in data sets (shapes: image-caption pairs with masks)"},
    {"zeroshot", cmd_zeroshot, "CLIP zero-shot classification of images"},
    {"retrieve", cmd_retrieve, "CLIP image-text retrieval over a saved embedding index"},
};

static void usage(FILE *f) {
    fprintf(f, "dinoc %s: DINO, DINOv2 and ViT encoders in C\n\nusage: dinoc <command> [options]\n\ncommands:\n",
            DINOC_VERSION);
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        fprintf(f, "  %-8s %s\n", k_cmds[i].name, k_cmds[i].help);
    fprintf(f, "\n'dinoc <command> --help' shows each command's options and defaults.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("dinoc %s\n", DINOC_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (strcmp(argv[1], k_cmds[i].name) == 0) {
            /* under mpirun (a build with MPI=1) every rank runs the command; a rank that fails
             * ends the job, so no rank waits forever in a collective (src/core/dist.h) */
            if (dinoc_dist_init(&argc, &argv)) {
                fprintf(stderr, "dinoc: %s\n", dinoc_last_error());
                return 1;
            }
            int rc = k_cmds[i].fn(argc - 1, argv + 1);
            if (rc != 0 && dinoc_dist_size() > 1) {
                fprintf(stderr, "dinoc: rank %d of %d failed (exit %d): ending the job\n", dinoc_dist_rank(),
                        dinoc_dist_size(), rc);
                dinoc_dist_abort(rc);
            }
            dinoc_dist_finalize();
            return rc;
        }
    fprintf(stderr, "dinoc: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
