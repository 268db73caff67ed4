/* cmd_attn.c: `dinoc attn` (being written). */
#include "cli.h"

int cmd_attn(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc attn: not built yet\n");
    return 2;
}
