/* cmd_data.c: `dinoc data` (stub until its issue lands). */
#include "cli.h"

int cmd_data(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "dinoc data: not built yet\n");
    return 2;
}
