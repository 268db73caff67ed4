/* schedule.c: DINO's per-iteration cosine schedule with linear warmup (utils.cosine_scheduler; the
 * same values as DINOv2's CosineScheduler without freeze_iters), evaluated one iteration at a time
 * instead of materialising the numpy array. Tested by tests/test_optim.c against numpy values
 * written by tests/py/gen_optim.py (relative error <= 1e-12). */
#include "optim.h"

#include <math.h>

double dinoc_cosine_schedule(double base, double final, int64_t total_iters, int64_t warmup_iters,
                             double start_warmup, int64_t it) {
    if (it < 0) it = 0;
    if (warmup_iters < 0) warmup_iters = 0;
    if (it >= total_iters) return final;
    if (it < warmup_iters) {
        /* np.linspace(start, base, W)[it]: step = (stop - start) / (W - 1); y = i * step + start,
         * or (i / div) * delta when the step underflows to 0; the last element is exactly stop;
         * W == 1 gives [start]. */
        if (warmup_iters == 1) return start_warmup;
        if (it == warmup_iters - 1) return base;
        const double div = (double)(warmup_iters - 1), delta = base - start_warmup;
        const double step = delta / div;
        if (step == 0) return ((double)it / div) * delta + start_warmup;
        return (double)it * step + start_warmup;
    }
    /* final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters))), numpy's order. */
    const int64_t n = total_iters - warmup_iters; /* > 0 here since warmup <= it < total */
    const double  i = (double)(it - warmup_iters);
    return final + 0.5 * (base - final) * (1.0 + cos(M_PI * i / (double)n));
}

/* 1 without a budget or when the fit covers the recipe, else sched_steps / recipe_steps < 1. */
static int compressed(int64_t sched_steps, int64_t recipe_steps) {
    return sched_steps > 0 && recipe_steps > 0 && sched_steps < recipe_steps;
}

int64_t dinoc_recipe_steps(double epochs, int64_t ipe, int64_t sched_steps, int64_t recipe_steps) {
    const double n = epochs * (double)ipe;
    if (!compressed(sched_steps, recipe_steps)) return (int64_t)llround(n);
    return (int64_t)llround(n * (double)sched_steps / (double)recipe_steps);
}

int64_t dinoc_recipe_epoch(int64_t it, int64_t ipe, int64_t sched_steps, int64_t recipe_steps) {
    if (ipe <= 0) return 0;
    if (!compressed(sched_steps, recipe_steps)) return it / ipe;
    /* it / (ipe x sched / recipe), in integers: it x recipe < 2^63 for any real run */
    return it * recipe_steps / (sched_steps * ipe);
}
