/* dist.c: the only file that knows whether MPI is there (see dist.h). */
#include "dist.h"

#include <limits.h>
#include <string.h>

#ifdef DINOC_MPI
#include <mpi.h>

static int g_rank, g_size = 1, g_on;

dinoc_status dinoc_dist_init(int *argc, char ***argv) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return dinoc_fail(DINOC_ERR_IO, "MPI_Init_thread failed");
    /* errors end the job with a message rather than returning into a half-done collective */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_on = 1;
    return DINOC_OK;
}

void dinoc_dist_finalize(void) {
    if (g_on) MPI_Finalize();
    g_on = 0;
}

void dinoc_dist_abort(int code) {
    if (g_on && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

int dinoc_dist_rank(void) { return g_rank; }
int dinoc_dist_size(void) { return g_size; }
int dinoc_dist_available(void) { return 1; }

/* MPI counts are ints: large buffers go in pieces */
#define CHUNK ((size_t)1 << 28)

static dinoc_status reduce(void *buf, size_t n, size_t elem, MPI_Datatype t, MPI_Op op, const char *what) {
    if (g_size <= 1) return DINOC_OK;
    for (size_t i = 0; i < n; i += CHUNK) {
        const int c = (int)(n - i < CHUNK ? n - i : CHUNK);
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + i * elem, c, t, op, MPI_COMM_WORLD) != MPI_SUCCESS)
            return dinoc_fail(DINOC_ERR_IO, "MPI_Allreduce of %zu %s failed", n, what);
    }
    return DINOC_OK;
}

dinoc_status dinoc_dist_sum_f32(float *buf, size_t n) { return reduce(buf, n, sizeof(float), MPI_FLOAT, MPI_SUM, "floats"); }
dinoc_status dinoc_dist_sum_f64(double *buf, size_t n) {
    return reduce(buf, n, sizeof(double), MPI_DOUBLE, MPI_SUM, "doubles");
}
dinoc_status dinoc_dist_max_f32(float *buf, size_t n) { return reduce(buf, n, sizeof(float), MPI_FLOAT, MPI_MAX, "floats (max)"); }

dinoc_status dinoc_dist_allgather_f32(const float *send, float *out, size_t n) {
    if (g_size <= 1) {
        if (out != send) memmove(out, send, n * sizeof(float));
        return DINOC_OK;
    }
    if (n > (size_t)INT_MAX) return dinoc_fail(DINOC_ERR_ARG, "allgather of %zu floats per rank: too many", n);
    if (MPI_Allgather(send, (int)n, MPI_FLOAT, out, (int)n, MPI_FLOAT, MPI_COMM_WORLD) != MPI_SUCCESS)
        return dinoc_fail(DINOC_ERR_IO, "MPI_Allgather of %zu floats per rank failed", n);
    return DINOC_OK;
}

dinoc_status dinoc_dist_bcast_i64(int64_t *buf, int n, int root) {
    if (g_size <= 1) return DINOC_OK;
    if (MPI_Bcast(buf, n, MPI_INT64_T, root, MPI_COMM_WORLD) != MPI_SUCCESS)
        return dinoc_fail(DINOC_ERR_IO, "MPI_Bcast of %d int64 failed", n);
    return DINOC_OK;
}

dinoc_status dinoc_dist_barrier(void) {
    if (g_size > 1 && MPI_Barrier(MPI_COMM_WORLD) != MPI_SUCCESS) return dinoc_fail(DINOC_ERR_IO, "MPI_Barrier failed");
    return DINOC_OK;
}

#else /* one process: rank 0 of 1 */

dinoc_status dinoc_dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return DINOC_OK;
}
void         dinoc_dist_finalize(void) {}
void         dinoc_dist_abort(int code) { (void)code; }
int          dinoc_dist_rank(void) { return 0; }
int          dinoc_dist_size(void) { return 1; }
int          dinoc_dist_available(void) { return 0; }
dinoc_status dinoc_dist_sum_f32(float *buf, size_t n) { return (void)buf, (void)n, DINOC_OK; }
dinoc_status dinoc_dist_sum_f64(double *buf, size_t n) { return (void)buf, (void)n, DINOC_OK; }
dinoc_status dinoc_dist_max_f32(float *buf, size_t n) { return (void)buf, (void)n, DINOC_OK; }
dinoc_status dinoc_dist_allgather_f32(const float *send, float *out, size_t n) {
    if (out != send) memmove(out, send, n * sizeof(float));
    return DINOC_OK;
}
dinoc_status dinoc_dist_bcast_i64(int64_t *buf, int n, int root) { return (void)buf, (void)n, (void)root, DINOC_OK; }
dinoc_status dinoc_dist_barrier(void) { return DINOC_OK; }

#endif
