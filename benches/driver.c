/*
 * Benchmark driver for libtimm through its C ABI (include/timm.h), as a C or C++ user calls it.
 * scripts/bench builds it against the release libtimm.so and runs one measurement per process,
 * so every load starts cold in a fresh address space and RSS figures belong to one model.
 *
 *   driver load  SPEC [key=value ...]
 *       timm_create_model_with_options once; prints load time, VmHWM/VmRSS (kB) before and after,
 *       and the phases a first load reports through the log callback (empty for other loads).
 *   driver run   SPEC REF_DIR PHASE... [key=value ...]
 *       Loads once, then for each PHASE = BATCH:WARMUP:RUNS:CONCURRENCY: CONCURRENCY threads share
 *       the model, each calls timm_infer WARMUP + RUNS times on a BATCH built from
 *       REF_DIR/input.f32 (image-like data from timm's reference), and the logits are checked
 *       against REF_DIR/logits.f32. Prints every timed call's latency and each phase's wall time.
 *
 *   driver ab    SPEC_A SPEC_B REF_DIR PHASE... [key=value ...] [b:key=value ...]
 *       Loads both models in this process, then for each PHASE = BATCH:WARMUP:PAIRS[:GAP_MS] calls A
 *       and B alternately on one thread (A B, B A, A B, ...), so the machine's drift and its
 *       neighbours' bursts fall on both members of each pair. Each call is followed by GAP_MS
 *       (default 60) of sleep: a session's intra-op threads stay busy for 30-50 ms after its
 *       call, and without the gap they would take cores from the other model's next call. Prints
 *       both latency lists and both outputs' distance from REF_DIR/logits.f32.
 *       scripts/bench_families.py takes the median of the per-pair ratios.
 *
 * key=value pairs go to timm_options_set (intra_op_threads, weights_memory, ...); in `ab` they
 * go to both models, and b:key=value to B only (b:graph=onnx runs a folder's model.onnx).
 * Output: one JSON object on stdout. Errors: a message on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "timm.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* VmHWM (peak resident set) and VmRSS in kB, from the kernel's own accounting. */
static void rss_kb(long *hwm, long *rss) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    *hwm = *rss = -1;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmHWM:", 6)) *hwm = atol(line + 6);
        if (!strncmp(line, "VmRSS:", 6)) *rss = atol(line + 6);
    }
    fclose(f);
}

static void die(const char *what) {
    fprintf(stderr, "driver: %s: %s\n", what, timm_last_error());
    exit(1);
}

static TimmModel *create(const char *spec, int nopts, char **opts) {
    TimmOptions *o = timm_options_new();
    for (int i = 0; i < nopts; i++) {
        if (!strncmp(opts[i], "b:", 2)) continue; /* `ab`'s options for B only: see create_b */
        char *eq = strchr(opts[i], '=');
        if (!eq) { fprintf(stderr, "driver: option '%s' is not key=value\n", opts[i]); exit(2); }
        *eq = 0;
        if (timm_options_set(o, opts[i], eq + 1) != TIMM_OK) die("timm_options_set");
        *eq = '=';
    }
    TimmModel *m = timm_create_model_with_options(spec, true, o);
    timm_options_free(o);
    if (!m) die("timm_create_model_with_options");
    return m;
}

static float *read_f32(const char *dir, const char *name, size_t *n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "driver: cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *buf = malloc(bytes);
    if (!buf || fread(buf, 1, bytes, f) != (size_t)bytes) { fprintf(stderr, "driver: cannot read %s\n", path); exit(1); }
    fclose(f);
    *n = bytes / sizeof(float);
    return buf;
}

typedef struct {
    TimmModel *model;
    const float *input;
    int64_t shape[4];
    size_t out_len;
    int warmup, runs;
    double *lat_ms;          /* runs entries */
    pthread_barrier_t *start;
    float *out;              /* this thread's output; checked after the run */
} Worker;

static void *work(void *arg) {
    Worker *w = arg;
    for (int i = 0; i < w->warmup; i++)
        if (timm_infer(w->model, w->input, w->shape, 4, w->out, w->out_len) != TIMM_OK) die("timm_infer");
    /* Every thread finishes its warm-up before any timed call, so the timed calls overlap. */
    pthread_barrier_wait(w->start);
    for (int i = 0; i < w->runs; i++) {
        double t0 = now_s();
        if (timm_infer(w->model, w->input, w->shape, 4, w->out, w->out_len) != TIMM_OK) die("timm_infer");
        w->lat_ms[i] = (now_s() - t0) * 1e3;
    }
    return NULL;
}

/* The phases a first load reports through the log ("... load phases (s): key=0.12 build=..."). */
static char load_phases[512];

static void on_log(int level, const char *message, void *user) {
    (void)user;
    const char *tag = "load phases (s): ";
    const char *at = strstr(message, tag);
    if (at) {
        /* Only k=v pairs of letters, digits, '_', '.', '=' and spaces: safe inside a JSON string. */
        size_t n = 0;
        for (const char *c = at + strlen(tag); *c && n + 1 < sizeof load_phases; c++)
            if (strchr("abcdefghijklmnopqrstuvwxyz0123456789_.= ", *c)) load_phases[n++] = *c;
        load_phases[n] = 0;
    }
    /* As without a callback: warnings and errors go to stderr. */
    if (level >= TIMM_LOG_WARNING) fprintf(stderr, "libtimm: %s\n", message);
}

static int cmd_load(int argc, char **argv) {
    long hwm0, rss0, hwm1, rss1;
    if (timm_set_log_callback(on_log, NULL) != TIMM_OK) die("timm_set_log_callback");
    rss_kb(&hwm0, &rss0);
    double t0 = now_s();
    TimmModel *m = create(argv[0], argc - 1, argv + 1);
    double dt = now_s() - t0;
    rss_kb(&hwm1, &rss1);
    printf("{\"load_s\": %.6f, \"hwm_before_kb\": %ld, \"rss_before_kb\": %ld, \"hwm_kb\": %ld, \"rss_kb\": %ld, "
           "\"phases\": \"%s\"}\n",
           dt, hwm0, rss0, hwm1, rss1, load_phases);
    timm_free(m);
    return 0;
}

/* One measured phase on a loaded model: `conc` threads x (warmup + runs) calls at batch `batch`. */
/* Largest |out - reference| over a batch (reference images repeat), and the largest |reference|. */
static void check(const float *out, const float *ref_out, int batch, size_t ref_batch, size_t dim,
                  double *maxdiff, double *maxref) {
    for (int b = 0; b < batch; b++)
        for (size_t k = 0; k < dim; k++) {
            double want = ref_out[(b % ref_batch) * dim + k];
            double d = fabs(out[b * dim + k] - want);
            if (d > *maxdiff || isnan(d)) *maxdiff = isnan(d) ? INFINITY : d;
            if (fabs(want) > *maxref) *maxref = fabs(want);
        }
}

static void phase(TimmModel *m, const float *ref_in, size_t ref_batch, const float *ref_out,
                  int batch, int warmup, int runs, int conc, int first) {
    int64_t chw[3];
    if (timm_model_input_size(m, chw) != TIMM_OK) die("timm_model_input_size");
    size_t per = (size_t)(chw[0] * chw[1] * chw[2]), dim = timm_model_output_dim(m);
    /* The batch repeats the reference images, so every row has a known answer. */
    float *input = malloc(batch * per * sizeof(float));
    for (int b = 0; b < batch; b++) memcpy(input + b * per, ref_in + (b % ref_batch) * per, per * sizeof(float));

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, conc + 1);
    Worker *ws = calloc(conc, sizeof(Worker));
    pthread_t *th = calloc(conc, sizeof(pthread_t));
    for (int t = 0; t < conc; t++) {
        Worker *w = &ws[t];
        w->model = m; w->input = input; w->warmup = warmup; w->runs = runs; w->start = &start;
        w->shape[0] = batch; w->shape[1] = chw[0]; w->shape[2] = chw[1]; w->shape[3] = chw[2];
        w->out_len = batch * dim;
        w->out = malloc(w->out_len * sizeof(float));
        w->lat_ms = calloc(runs, sizeof(double));
    }
    /* Timed from the moment every thread has warmed up (the main thread joins the barrier) to
     * the last thread's end, so throughput counts stragglers. */
    for (int t = 0; t < conc; t++) pthread_create(&th[t], NULL, work, &ws[t]);
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (int t = 0; t < conc; t++) pthread_join(th[t], NULL);
    double wall = now_s() - t0;

    double maxdiff = 0, maxref = 0;
    for (int t = 0; t < conc; t++) check(ws[t].out, ref_out, batch, ref_batch, dim, &maxdiff, &maxref);
    long hwm, rss;
    rss_kb(&hwm, &rss);
    printf("%s{\"batch\": %d, \"concurrency\": %d, \"wall_s\": %.6f, \"images\": %ld, \"max_abs_diff\": %.3g, "
           "\"max_abs_ref\": %.3g, \"hwm_kb\": %ld, \"rss_kb\": %ld, \"lat_ms\": [",
           first ? "" : ", ", batch, conc, wall, (long)batch * runs * conc, maxdiff, maxref, hwm, rss);
    for (int t = 0; t < conc; t++)
        for (int i = 0; i < runs; i++) printf("%s%.4f", (t || i) ? ", " : "", ws[t].lat_ms[i]);
    printf("]}");
    for (int t = 0; t < conc; t++) { free(ws[t].out); free(ws[t].lat_ms); }
    free(ws); free(th); free(input);
    pthread_barrier_destroy(&start);
}

static int cmd_run(int argc, char **argv) {
    const char *spec = argv[0], *ref = argv[1];
    /* Arguments after SPEC REF_DIR: B:W:R:C phases, and key=value options. */
    char *opts[64];
    int nopts = 0;
    for (int i = 2; i < argc; i++)
        if (strchr(argv[i], '=') && nopts < 64) opts[nopts++] = argv[i];
    long hwm0, rss0;
    rss_kb(&hwm0, &rss0);
    double t0 = now_s();
    TimmModel *m = create(spec, nopts, opts);
    double load = now_s() - t0;
    int64_t chw[3];
    if (timm_model_input_size(m, chw) != TIMM_OK) die("timm_model_input_size");
    size_t per = (size_t)(chw[0] * chw[1] * chw[2]), dim = timm_model_output_dim(m);
    size_t nin, nref;
    float *ref_in = read_f32(ref, "input.f32", &nin);
    float *ref_out = read_f32(ref, "logits.f32", &nref);
    size_t ref_batch = nin / per;
    if (ref_batch == 0 || nin % per || nref != ref_batch * dim) { fprintf(stderr, "driver: %s does not match the model\n", ref); return 1; }
    printf("{\"load_s\": %.6f, \"phases\": [", load);
    int first = 1;
    for (int i = 2; i < argc; i++) {
        int b, w, r, c;
        if (strchr(argv[i], '=')) continue;
        if (sscanf(argv[i], "%d:%d:%d:%d", &b, &w, &r, &c) != 4 || b < 1 || w < 0 || r < 1 || c < 1) {
            fprintf(stderr, "driver: phase '%s' is not BATCH:WARMUP:RUNS:CONCURRENCY\n", argv[i]);
            return 2;
        }
        phase(m, ref_in, ref_batch, ref_out, b, w, r, c, first);
        first = 0;
        fflush(stdout);
    }
    printf("]}\n");
    timm_free(m);
    return 0;
}

/* Model B of `ab`: the shared options, then the b:key=value ones. */
static TimmModel *create_b(const char *spec, int nopts, char **opts) {
    char *all[128];
    int n = 0;
    for (int i = 0; i < nopts && n < 128; i++) all[n++] = opts[i];
    for (int i = 0; i < nopts && n < 128; i++)
        if (!strncmp(opts[i], "b:", 2)) all[n++] = opts[i] + 2;
    return create(spec, n, all);
}

static double timed_infer(TimmModel *m, const float *in, const int64_t *shape, float *out, size_t len, int gap_ms) {
    double t0 = now_s();
    if (timm_infer(m, in, shape, 4, out, len) != TIMM_OK) die("timm_infer");
    double ms = (now_s() - t0) * 1e3;
    struct timespec gap = {gap_ms / 1000, (long)(gap_ms % 1000) * 1000000L};
    nanosleep(&gap, NULL);
    return ms;
}

static int cmd_ab(int argc, char **argv) {
    const char *spec_a = argv[0], *spec_b = argv[1], *ref = argv[2];
    char *opts[64];
    int nopts = 0;
    for (int i = 3; i < argc; i++)
        if (strchr(argv[i], '=') && nopts < 64) opts[nopts++] = argv[i];
    TimmModel *m[2] = {create(spec_a, nopts, opts), create_b(spec_b, nopts, opts)};
    int64_t chw[3], chw_b[3];
    if (timm_model_input_size(m[0], chw) != TIMM_OK || timm_model_input_size(m[1], chw_b) != TIMM_OK)
        die("timm_model_input_size");
    size_t per = (size_t)(chw[0] * chw[1] * chw[2]), dim = timm_model_output_dim(m[0]);
    if (memcmp(chw, chw_b, sizeof chw) || timm_model_output_dim(m[1]) != dim) {
        fprintf(stderr, "driver: the two models take different inputs or give different outputs\n");
        return 1;
    }
    size_t nin, nref;
    float *ref_in = read_f32(ref, "input.f32", &nin);
    float *ref_out = read_f32(ref, "logits.f32", &nref);
    size_t ref_batch = nin / per;
    if (ref_batch == 0 || nin % per || nref != ref_batch * dim) { fprintf(stderr, "driver: %s does not match the model\n", ref); return 1; }
    printf("{\"phases\": [");
    int first = 1;
    for (int i = 3; i < argc; i++) {
        int batch, warmup, pairs, gap_ms = 60;
        if (strchr(argv[i], '=')) continue;
        int got = sscanf(argv[i], "%d:%d:%d:%d", &batch, &warmup, &pairs, &gap_ms);
        if (got < 3 || batch < 1 || warmup < 0 || pairs < 1 || gap_ms < 0) {
            fprintf(stderr, "driver: phase '%s' is not BATCH:WARMUP:PAIRS[:GAP_MS]\n", argv[i]);
            return 2;
        }
        float *input = malloc(batch * per * sizeof(float));
        for (int b = 0; b < batch; b++) memcpy(input + b * per, ref_in + (b % ref_batch) * per, per * sizeof(float));
        int64_t shape[4] = {batch, chw[0], chw[1], chw[2]};
        size_t len = batch * dim;
        float *out[2] = {malloc(len * sizeof(float)), malloc(len * sizeof(float))};
        double *lat[2] = {calloc(pairs, sizeof(double)), calloc(pairs, sizeof(double))};
        for (int w = 0; w < warmup; w++)
            for (int k = 0; k < 2; k++) timed_infer(m[k], input, shape, out[k], len, gap_ms);
        for (int p = 0; p < pairs; p++)
            for (int j = 0; j < 2; j++) {
                int k = (p % 2) ? 1 - j : j; /* A B, then B A: neither always goes first */
                lat[k][p] = timed_infer(m[k], input, shape, out[k], len, gap_ms);
            }
        double diff[2] = {0, 0}, maxref = 0;
        for (int k = 0; k < 2; k++) check(out[k], ref_out, batch, ref_batch, dim, &diff[k], &maxref);
        printf("%s{\"batch\": %d, \"max_abs_ref\": %.3g, \"a_max_abs_diff\": %.3g, \"b_max_abs_diff\": %.3g",
               first ? "" : ", ", batch, maxref, diff[0], diff[1]);
        for (int k = 0; k < 2; k++) {
            printf(", \"%s_ms\": [", k ? "b" : "a");
            for (int p = 0; p < pairs; p++) printf("%s%.4f", p ? ", " : "", lat[k][p]);
            printf("]");
        }
        printf("}");
        fflush(stdout);
        first = 0;
        for (int k = 0; k < 2; k++) { free(out[k]); free(lat[k]); }
        free(input);
    }
    printf("]}\n");
    timm_free(m[0]);
    timm_free(m[1]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "load")) return cmd_load(argc - 2, argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
    if (argc >= 6 && !strcmp(argv[1], "ab")) return cmd_ab(argc - 2, argv + 2);
    fprintf(stderr, "usage: driver load SPEC [key=value ...]\n"
                    "       driver run SPEC REF_DIR BATCH:WARMUP:RUNS:CONCURRENCY... [key=value ...]\n"
                    "       driver ab SPEC_A SPEC_B REF_DIR BATCH:WARMUP:PAIRS[:GAP_MS]... [key=value ...] [b:key=value ...]\n");
    return 2;
}
