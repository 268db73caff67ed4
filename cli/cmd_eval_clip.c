/* cmd_eval_clip.c: `dinoc eval zeroshot|retrieval|fewshot` (placeholder until it lands). */
#include "cli.h"

int cmd_eval_clip(const char *sub, int argc, char **argv) {
    (void)sub, (void)argc, (void)argv;
    fprintf(stderr, "dinoc eval (CLIP): not built yet\n");
    return 2;
}
