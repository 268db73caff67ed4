/* cmd_report.c: `dinoc report` (being written). */
#include "cli.h"

int cmd_report(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "dinoc report: not built yet\n");
    return 2;
}
