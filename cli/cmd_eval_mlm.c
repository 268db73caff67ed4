/* cmd_eval_mlm.c: `dinoc eval mlm` (placeholder until it lands). */
#include "cli.h"

int cmd_eval_mlm(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc eval mlm: not built yet\n");
    return 2;
}
