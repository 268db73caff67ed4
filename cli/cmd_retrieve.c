/* cmd_retrieve.c: `dinoc retrieve` (placeholder until it lands). */
#include "cli.h"

int cmd_retrieve(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc retrieve: not built yet\n");
    return 2;
}
