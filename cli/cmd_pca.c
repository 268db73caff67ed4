/* cmd_pca.c: `dinoc pca` (stub until its issue lands). */
#include "cli.h"

int cmd_pca(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "dinoc pca: not built yet\n");
    return 2;
}
