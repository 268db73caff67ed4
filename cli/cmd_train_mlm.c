/* cmd_train_mlm.c: `dinoc train mlm` (placeholder until it lands). */
#include "cli.h"

int cmd_train_mlm(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc train mlm: not built yet\n");
    return 2;
}
