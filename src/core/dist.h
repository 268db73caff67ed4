/* dist.h: data-parallel communication between processes (src/core/dist.c).
 *
 * Built with `make MPI=1` these are MPI calls (Open MPI from Debian); otherwise the process is rank
 * 0 of 1 and every call is a no-op, so training code calls them unconditionally (no #ifdef outside
 * dist.c). Collectives must be called by every rank in the same order. */
#ifndef DINOC_DIST_H
#define DINOC_DIST_H

#include "../internal.h"

#include <stdint.h>

/* Starts MPI when built with it and launched by mpirun (a plain start is rank 0 of 1 either way).
 * Call once from main() before any other dinoc call; threads are asked for MPI_THREAD_FUNNELED
 * (only the main thread communicates). */
dinoc_status dinoc_dist_init(int *argc, char ***argv);
void         dinoc_dist_finalize(void);
/* Ends every rank's process at once (MPI_Abort): a rank that fails must not leave the others
 * waiting in a collective. Returns only without MPI. */
void         dinoc_dist_abort(int code);
int          dinoc_dist_rank(void);
int          dinoc_dist_size(void);
/* 1 when this build can run several ranks (MPI=1). */
int          dinoc_dist_available(void);

/* In-place sums over all ranks. (MPI advises, without requiring, that every rank gets the same
 * bits; Open MPI's sum does. Training keeps every decision on values all ranks reduced alike.) */
dinoc_status dinoc_dist_sum_f32(float *buf, size_t n);
dinoc_status dinoc_dist_sum_f64(double *buf, size_t n);
/* In-place elementwise maximum over all ranks. */
dinoc_status dinoc_dist_max_f32(float *buf, size_t n);
/* Gathers every rank's n floats (the same n on every rank) into out[size * n], rank r's block at
 * out + r * n, on every rank (MPI_Allgather). One process: copies send into out. */
dinoc_status dinoc_dist_allgather_f32(const float *send, float *out, size_t n);
/* Rank root's n values to every rank. */
dinoc_status dinoc_dist_bcast_i64(int64_t *buf, int n, int root);
dinoc_status dinoc_dist_barrier(void);

#endif
