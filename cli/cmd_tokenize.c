/* cmd_tokenize.c: `dinoc tokenize` (stub until its issue lands). */
#include "cli.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "dinoc tokenize: not built yet\n");
    return 2;
}
