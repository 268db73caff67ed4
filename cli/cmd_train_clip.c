/* cmd_train_clip.c: `dinoc train clip` (placeholder until it lands). */
#include "cli.h"

int cmd_train_clip(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc train clip: not built yet\n");
    return 2;
}
