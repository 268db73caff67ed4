/* cmd_init.c: `dinoc init --arch NAME -o DIR`: a Hugging Face folder with random weights. */
#include "cli.h"

#include <stdlib.h>

int cmd_init(int argc, char **argv) {
    const char    *arch = "vits14", *out = NULL;
    int            seed = 0, depth = 0, image = 0;
    const opt_spec opts[] = {
        {"arch", 'a', OPT_STR, &arch, "preset: vits14 vitb14 vitl14 vitg14 (-reg), dino-vits16 ..., vit-tiny-dino"},
        {"out", 'o', OPT_STR, &out, "output folder"},
        {"seed", 0, OPT_INT, &seed, "random seed"},
        {"depth", 0, OPT_INT, &depth, "override the number of blocks (0: the preset's)"},
        {"image-size", 0, OPT_INT, &image, "override the position-embedding image size (0: the preset's)"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc init --arch NAME --out DIR [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (npos || !out) {
        fprintf(stderr, "error: init needs --out DIR and no positional arguments\n");
        return 2;
    }
    if (seed < 0) return cli_bad_seed(seed);
    cli_log_to_stderr(0);
    dinoc_vit_config cfg;
    dinoc_status     s = dinoc_vit_preset(&cfg, arch);
    if (s) return cli_fail("init", s), 2;
    if (depth > 0) cfg.depth = depth;
    if (image > 0) cfg.image_size = image;
    dinoc_model *m = NULL;
    if ((s = dinoc_model_init_random(&m, &cfg, (uint64_t)seed))) return cli_fail("init", s);
    s = dinoc_model_save_hf(m, out);
    dinoc_model_free(m);
    if (s) return cli_fail("init", s);
    fprintf(stderr, "wrote %s (%s, random weights, seed %d)\n", out, arch, seed);
    return 0;
}
