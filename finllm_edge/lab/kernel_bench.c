/* fe-kernel-bench: the calibration micro-benchmark of the latency estimate (finllm_edge/lab/calibrate.py).
 *
 * Times ggml's CPU matrix-vector / matrix-matrix kernels the way llama.cpp runs them for model
 * weights: weights of one type are placed in the CPU backend's repack buffer type when it
 * accepts them (Q4_0 and Q4_K are repacked at load, as in a model), else in the plain CPU buffer.
 *
 *   fe-kernel-bench mul_mat TYPE THREADS N_COLS MIB [REPS [K [M]]]
 *       a graph of independent mul_mats (K x M weights of TYPE, N_COLS activation columns)
 *       whose weights total about MIB MiB; N_COLS=1 is decode, N_COLS=64 a prompt micro-batch.
 *   fe-kernel-bench nodes THREADS N_NODES [REPS]
 *       a chain of N_NODES tiny ops: the per-node cost (thread hand-off) of the graph executor.
 *
 * Prints one JSON object: seconds of every repetition (after one warm-up), bytes, ops, nodes.
 * Built from the pinned llama.cpp's static ggml libraries; never used by the runtime.
 */
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static enum ggml_type parse_type(const char *s) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char *name = ggml_type_name((enum ggml_type) t);
        if (name && strcasecmp(name, s) == 0) return (enum ggml_type) t;
    }
    fprintf(stderr, "unknown type %s\n", s);
    exit(2);
}

static float frand(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return ((*state >> 8) / 16777216.0f - 0.5f) * 0.2f;
}

static void print_times(const double *t, int reps) {
    printf("\"seconds\": [");
    for (int i = 0; i < reps; i++) printf("%s%.9f", i ? ", " : "", t[i]);
    printf("]}\n");
}

static ggml_backend_buffer_type_t repack_buft(ggml_backend_dev_t dev) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_dev_get_extra_bufts_t get =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (!get) return NULL;
    for (ggml_backend_buffer_type_t *b = get(dev); b && *b; b++) {
        if (strstr(ggml_backend_buft_name(*b), "REPACK")) return *b;
    }
    return NULL;
}

/* Would a K x M weight of this type be used from the repack buffer (as llama.cpp's loader decides)? */
static int repack_supported(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, enum ggml_type type,
                            int K, int M, int ncol) {
    if (!buft) return 0;
    struct ggml_init_params p = {ggml_tensor_overhead() * 4, NULL, true};
    struct ggml_context *ctx = ggml_init(p);
    struct ggml_tensor *w = ggml_new_tensor_2d(ctx, type, K, M);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
    struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, ncol);
    struct ggml_tensor *y = ggml_mul_mat(ctx, w, x);
    int ok = buf && ggml_backend_dev_supports_op(dev, y);
    if (buf) ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return ok;
}

static int bench_mul_mat(int argc, char **argv) {
    if (argc < 6) return 2;
    enum ggml_type type = parse_type(argv[2]);
    int nthr = atoi(argv[3]), ncol = atoi(argv[4]);
    double mib = atof(argv[5]);
    int reps = argc > 6 ? atoi(argv[6]) : 5;
    int K = argc > 7 ? atoi(argv[7]) : 1024, M = argc > 8 ? atoi(argv[8]) : 1024;
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, nthr);
    ggml_backend_dev_t dev = ggml_backend_get_device(be);
    ggml_backend_buffer_type_t rp = repack_buft(dev);
    int use_repack = repack_supported(dev, rp, type, K, M, ncol);
    ggml_backend_buffer_type_t wbuft = use_repack ? rp : ggml_backend_cpu_buffer_type();

    size_t one = ggml_row_size(type, K) * (size_t) M;
    int L = (int) (mib * 1048576.0 / one);
    if (L < 1) L = 1;
    struct ggml_init_params wp = {ggml_tensor_overhead() * (L + 4), NULL, true};
    struct ggml_context *wctx = ggml_init(wp);
    struct ggml_tensor **W = calloc(L, sizeof(*W));
    for (int i = 0; i < L; i++) W[i] = ggml_new_tensor_2d(wctx, type, K, M);
    ggml_backend_buffer_t wbuf = ggml_backend_alloc_ctx_tensors_from_buft(wctx, wbuft);
    if (!wbuf) { fprintf(stderr, "weight allocation failed\n"); return 1; }
    ggml_backend_buffer_set_usage(wbuf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

    unsigned st = 12345u;
    float *src = malloc(sizeof(float) * (size_t) K * M);
    void *q = malloc(one);
    for (size_t i = 0; i < (size_t) K * M; i++) src[i] = frand(&st);
    ggml_quantize_chunk(type, src, q, 0, M, K, NULL);
    for (int i = 0; i < L; i++) ggml_backend_tensor_set(W[i], q, 0, one);

    size_t gsize = 2 * (size_t) L + 16;
    struct ggml_init_params gp = {ggml_tensor_overhead() * gsize + ggml_graph_overhead_custom(gsize, false), NULL, true};
    struct ggml_context *gctx = ggml_init(gp);
    struct ggml_tensor *x = ggml_new_tensor_2d(gctx, GGML_TYPE_F32, K, ncol);
    ggml_set_input(x);
    struct ggml_cgraph *gf = ggml_new_graph_custom(gctx, gsize, false);
    for (int i = 0; i < L; i++) {
        struct ggml_tensor *y = ggml_mul_mat(gctx, W[i], x);
        ggml_set_output(y);
        ggml_build_forward_expand(gf, y);
    }
    ggml_gallocr_t ga = ggml_gallocr_new(ggml_backend_get_default_buffer_type(be));
    if (!ggml_gallocr_alloc_graph(ga, gf)) { fprintf(stderr, "graph allocation failed\n"); return 1; }
    float *xs = malloc(sizeof(float) * (size_t) K * ncol);
    for (size_t i = 0; i < (size_t) K * ncol; i++) xs[i] = frand(&st);
    ggml_backend_tensor_set(x, xs, 0, sizeof(float) * (size_t) K * ncol);

    double *t = calloc(reps, sizeof(double));
    ggml_backend_graph_compute(be, gf); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        ggml_backend_graph_compute(be, gf);
        t[r] = now_s() - t0;
    }
    printf("{\"mode\": \"mul_mat\", \"type\": \"%s\", \"threads\": %d, \"n_cols\": %d, \"K\": %d, \"M\": %d, "
           "\"n_mats\": %d, \"weight_bytes\": %zu, \"ops\": %.0f, \"repacked\": %s, \"buffer\": \"%s\", ",
           ggml_type_name(type), nthr, ncol, K, M, L, one * (size_t) L, 2.0 * K * (double) M * ncol * L,
           use_repack ? "true" : "false", ggml_backend_buft_name(wbuft));
    print_times(t, reps);
    ggml_gallocr_free(ga);
    ggml_free(gctx);
    ggml_backend_buffer_free(wbuf);
    ggml_free(wctx);
    ggml_backend_free(be);
    return 0;
}

static int bench_nodes(int argc, char **argv) {
    if (argc < 4) return 2;
    int nthr = atoi(argv[2]), n = atoi(argv[3]);
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, nthr);
    size_t gsize = (size_t) n + 16;
    struct ggml_init_params gp = {ggml_tensor_overhead() * gsize + ggml_graph_overhead_custom(gsize, false), NULL, true};
    struct ggml_context *ctx = ggml_init(gp);
    struct ggml_tensor *a = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, 576);
    ggml_set_input(a);
    struct ggml_tensor *cur = a;
    for (int i = 0; i < n; i++) cur = ggml_scale(ctx, cur, 1.0001f);
    ggml_set_output(cur);
    struct ggml_cgraph *gf = ggml_new_graph_custom(ctx, gsize, false);
    ggml_build_forward_expand(gf, cur);
    ggml_gallocr_t ga = ggml_gallocr_new(ggml_backend_get_default_buffer_type(be));
    if (!ggml_gallocr_alloc_graph(ga, gf)) return 1;
    float xs[576];
    for (int i = 0; i < 576; i++) xs[i] = 1.0f;
    ggml_backend_tensor_set(a, xs, 0, sizeof(xs));
    double *t = calloc(reps, sizeof(double));
    ggml_backend_graph_compute(be, gf);
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        ggml_backend_graph_compute(be, gf);
        t[r] = now_s() - t0;
    }
    printf("{\"mode\": \"nodes\", \"threads\": %d, \"n_nodes\": %d, ", nthr, n);
    print_times(t, reps);
    ggml_gallocr_free(ga);
    ggml_free(ctx);
    ggml_backend_free(be);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc > 1 && strcmp(argv[1], "mul_mat") == 0) rc = bench_mul_mat(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "nodes") == 0) rc = bench_nodes(argc, argv);
    if (rc == 2) fprintf(stderr, "usage: fe-kernel-bench mul_mat TYPE THREADS N_COLS MIB [REPS [K [M]]] | nodes THREADS N [REPS]\n");
    return rc;
}
