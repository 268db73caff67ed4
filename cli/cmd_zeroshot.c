/* cmd_zeroshot.c: `dinoc zeroshot` (placeholder until it lands). */
#include "cli.h"

int cmd_zeroshot(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc zeroshot: not built yet\n");
    return 2;
}
