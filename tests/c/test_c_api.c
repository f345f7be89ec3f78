/*
 * The C ABI as a C program sees it: built with the system C compiler against include/timm.h,
 * linked to libtimm.so. Run by tests/c_program.rs with the fixture folders to check.
 *
 * usage: test_c_api check <folder> <reference_dir> [<folder> <reference_dir> ...]
 *        test_c_api errors <folder>
 *        test_c_api threads <folder> <reference_dir>
 *        test_c_api no-runtime <folder>
 *        test_c_api fmaps <folder> <input.f32> <N,C,H,W> <key=value;...|-> <map0.f32> [<map1.f32> ...]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timm.h"

static int failures = 0;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static float *read_f32(const char *dir, const char *name, size_t *count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *data = malloc((size_t)bytes);
    if (fread(data, 1, (size_t)bytes, f) != (size_t)bytes) { fprintf(stderr, "short read %s\n", path); exit(2); }
    fclose(f);
    *count = (size_t)bytes / sizeof(float);
    return data;
}

static TimmModel *open_model(const char *folder) {
    char spec[4200];
    snprintf(spec, sizeof spec, "local:%s", folder);
    TimmModel *m = NULL;
    if (timm_model_create(spec, true, NULL, &m) != TIMM_OK) { fprintf(stderr, "timm_model_create(%s): %s\n", spec, timm_last_error()); exit(1); }
    return m;
}

/* Runs the reference input (batch N) and returns the max |diff| against timm's logits. */
static float run_reference(TimmModel *m, const char *ref, float **out_logits, size_t *out_n) {
    size_t n_in, n_ref;
    float *input = read_f32(ref, "input.f32", &n_in);
    float *logits = read_f32(ref, "logits.f32", &n_ref);
    int64_t chw[3];
    CHECK(timm_model_input_size(m, chw) == TIMM_OK, "input_size: %s", timm_last_error());
    size_t per = (size_t)(chw[0] * chw[1] * chw[2]);
    int64_t shape[4] = {(int64_t)(n_in / per), chw[0], chw[1], chw[2]};
    size_t k = timm_model_output_dim(m);
    CHECK(k * (size_t)shape[0] == n_ref, "output_dim %zu x batch %lld != reference %zu", k, (long long)shape[0], n_ref);
    float *out = calloc(n_ref, sizeof(float));
    TimmStatus st = timm_infer(m, input, shape, 4, out, n_ref);
    CHECK(st == TIMM_OK, "infer: %s", timm_last_error());
    /* Relative to the largest logit (at least 1), the criterion timm parity is judged by. */
    float maxdiff = 0, scale = 1;
    for (size_t i = 0; i < n_ref; i++) scale = fabsf(logits[i]) > scale ? fabsf(logits[i]) : scale;
    for (size_t i = 0; i < n_ref; i++) {
        float d = fabsf(out[i] - logits[i]) / scale;
        if (!(d <= maxdiff)) maxdiff = d; /* NaN counts as a difference */
    }
    free(input);
    free(logits);
    if (out_logits) { *out_logits = out; *out_n = n_ref; } else free(out);
    return maxdiff;
}

static int cmd_check(int argc, char **argv) {
    for (int i = 0; i + 1 < argc; i += 2) {
        TimmModel *m = open_model(argv[i]);
        float d = run_reference(m, argv[i + 1], NULL, NULL);
        printf("%-70s rel max|diff| = %.3g\n", argv[i], d);
        CHECK(d <= 1e-4f, "%s differs from timm by %g", argv[i], d);
        timm_free(m);
    }
    return failures;
}

/* Creates `spec` with timm_model_create and checks the failure by its returned status alone;
 * the message only has to name `needle`. `*out` must be NULL after a failure. */
static int expect_fail(const char *spec, const TimmOptions *options, TimmStatus want, const char *needle, const char *what) {
    TimmModel *m = (TimmModel *)&failures; /* not NULL: the call must clear it */
    TimmStatus got = timm_model_create(spec, true, options, &m);
    const char *err = timm_last_error();
    CHECK(got == want, "%s: want %s, got %s ('%s')", what, timm_status_name(want), timm_status_name(got), err);
    CHECK(m == NULL, "%s: *out is not NULL after a failure", what);
    CHECK(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what, err, needle);
    if (got == TIMM_OK) timm_free(m);
    /* The NULL-returning wrapper fails the same way. */
    CHECK(options != NULL || timm_create_model(spec, true) == NULL, "%s: timm_create_model succeeded", what);
    return 0;
}

/* timm's features_only maps through timm_infer_outputs: the model is created with
 * output=feature_maps plus the given options, each output sized by timm_model_output_shape and
 * compared with timm's map relative to the map's largest |value|. */
static int cmd_fmaps(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "fmaps: missing arguments\n"); return 1; }
    const char *folder = argv[0], *input_path = argv[1], *shape_arg = argv[2], *opts_arg = argv[3];
    size_t n_maps = (size_t)(argc - 4);
    TimmOptions *o = timm_options_new();
    CHECK(timm_options_set(o, "output", "feature_maps") == TIMM_OK, "output: %s", timm_last_error());
    if (strcmp(opts_arg, "-")) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", opts_arg);
        for (char *kv = strtok(buf, ";"); kv; kv = strtok(NULL, ";")) {
            char *eq = strchr(kv, '=');
            if (!eq) continue;
            *eq = 0;
            CHECK(timm_options_set(o, kv, eq + 1) == TIMM_OK, "option %s: %s", kv, timm_last_error());
        }
    }
    char spec[4200];
    snprintf(spec, sizeof spec, "local:%s", folder);
    TimmModel *m = NULL;
    TimmStatus st = timm_model_create(spec, true, o, &m);
    timm_options_free(o);
    if (st != TIMM_OK) { fprintf(stderr, "FAIL create %s: %s\n", folder, timm_last_error()); return 1; }
    CHECK(timm_model_output_count(m) == n_maps, "%s: %zu outputs, timm has %zu maps", folder, timm_model_output_count(m), n_maps);
    int64_t shape[4];
    CHECK(sscanf(shape_arg, "%ld,%ld,%ld,%ld", (long *)&shape[0], (long *)&shape[1], (long *)&shape[2], (long *)&shape[3]) == 4, "shape %s", shape_arg);
    size_t n_in = 0;
    float *input = read_f32("", input_path, &n_in);
    float **outs = calloc(n_maps, sizeof(float *));
    size_t *lens = calloc(n_maps, sizeof(size_t));
    for (size_t i = 0; i < n_maps && failures == 0; i++) {
        int64_t dims[8];
        size_t ndim = 0;
        CHECK(timm_model_output_shape(m, i, shape, 4, dims, 8, &ndim) == TIMM_OK, "output_shape %zu: %s", i, timm_last_error());
        CHECK(ndim == 4, "map %zu has %zu dims", i, ndim);
        lens[i] = 1;
        for (size_t d = 0; d < ndim; d++) lens[i] *= (size_t)dims[d];
        outs[i] = calloc(lens[i], sizeof(float));
        size_t channels = 0, reduction = 0;
        const char *module = NULL;
        CHECK(timm_model_feature_info(m, i, &channels, &reduction, &module) == TIMM_OK && module && channels == (size_t)dims[1],
              "feature_info %zu", i);
    }
    if (failures == 0) {
        st = timm_infer_outputs(m, input, shape, 4, outs, lens, n_maps);
        CHECK(st == TIMM_OK, "infer_outputs: %s", timm_last_error());
    }
    for (size_t i = 0; i < n_maps && failures == 0; i++) {
        size_t n_ref = 0;
        float *ref = read_f32("", argv[4 + i], &n_ref);
        CHECK(n_ref == lens[i], "map %zu: %zu values, timm's has %zu", i, lens[i], n_ref);
        float scale = 1e-12f, d = 0;
        for (size_t j = 0; j < n_ref; j++) scale = fabsf(ref[j]) > scale ? fabsf(ref[j]) : scale;
        for (size_t j = 0; j < n_ref && j < lens[i]; j++) {
            float e = fabsf(outs[i][j] - ref[j]) / scale;
            if (!(e <= d)) d = e;
        }
        printf("%-60s map %zu rel max|diff| = %.3g\n", folder, i, d);
        CHECK(d <= 1e-4f, "%s map %zu differs from timm by %g", folder, i, d);
        free(ref);
    }
    for (size_t i = 0; i < n_maps; i++) free(outs[i]);
    free(outs);
    free(lens);
    free(input);
    timm_free(m);
    return failures;
}

static int cmd_errors(const char *folder) {
    /* Spec and folder errors. */
    expect_fail(NULL, NULL, TIMM_ERR_INVALID_ARGUMENT, "NULL", "NULL spec");
    expect_fail("", NULL, TIMM_ERR_INVALID_ARGUMENT, "empty", "empty spec");
    expect_fail("\xff\xfe", NULL, TIMM_ERR_INVALID_ARGUMENT, "UTF-8", "non-UTF-8 spec");
    expect_fail("s3://bucket/x", NULL, TIMM_ERR_INVALID_ARGUMENT, "hf-hub:", "unknown prefix");
    expect_fail("C:\\models\\x", NULL, TIMM_ERR_INVALID_ARGUMENT, "local:", "drive letter");
    expect_fail("local:", NULL, TIMM_ERR_INVALID_ARGUMENT, "empty path", "empty path");
    expect_fail("local:/nonexistent/timm/model", NULL, TIMM_ERR_NOT_FOUND, "/nonexistent/timm/model", "missing folder");

    /* Options. */
    TimmOptions *o = timm_options_new();
    CHECK(timm_options_set(o, "no_such_key", "1") == TIMM_ERR_INVALID_ARGUMENT, "unknown key accepted");
    CHECK(strstr(timm_last_error(), "intra_op_threads") != NULL, "unknown key message lacks the known keys: %s", timm_last_error());
    CHECK(timm_options_set(o, "intra_op_threads", "many") == TIMM_ERR_INVALID_ARGUMENT, "bad value accepted");
    CHECK(timm_options_set(NULL, "seed", "1") == TIMM_ERR_INVALID_ARGUMENT, "NULL options accepted");
    CHECK(timm_options_set(o, NULL, "1") == TIMM_ERR_INVALID_ARGUMENT, "NULL key accepted");
    CHECK(timm_options_set(o, "intra_op_threads", "1") == TIMM_OK, "%s", timm_last_error());
    char spec[4200];
    snprintf(spec, sizeof spec, "local:%s", folder);
    CHECK(timm_model_create(spec, true, o, NULL) == TIMM_ERR_INVALID_ARGUMENT, "NULL out accepted");
    TimmModel *m = NULL;
    CHECK(timm_model_create(spec, true, o, &m) == TIMM_OK && m != NULL, "with options: %s", timm_last_error());
    timm_options_free(o);
    timm_options_free(o); /* double free: detected, ignored */
    CHECK(strstr(timm_last_error(), "double free") != NULL, "options double free not reported: %s", timm_last_error());
    timm_options_free(NULL);

    /* Inference misuse. */
    int64_t chw[3];
    CHECK(timm_model_input_size(m, chw) == TIMM_OK, "input_size");
    CHECK(timm_model_input_size(m, NULL) == TIMM_ERR_INVALID_ARGUMENT, "NULL chw accepted");
    CHECK(timm_model_input_size(NULL, chw) == TIMM_ERR_INVALID_ARGUMENT, "NULL model accepted");
    size_t per = (size_t)(chw[0] * chw[1] * chw[2]);
    size_t k = timm_model_output_dim(m);
    CHECK(k > 0 && k == timm_model_num_classes(m), "output_dim %zu", k);
    float *input = calloc(per * 2, sizeof(float));
    float *out = calloc(k * 2, sizeof(float));
    int64_t shape[4] = {2, chw[0], chw[1], chw[2]};
    CHECK(timm_infer(NULL, input, shape, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(timm_infer(m, NULL, shape, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "NULL input");
    CHECK(timm_infer(m, input, NULL, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "NULL shape");
    CHECK(timm_infer(m, input, shape, 4, NULL, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "NULL output");
    CHECK(timm_infer(m, input, shape, 3, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "ndim 3");
    CHECK(timm_infer(m, input, shape, 1000000, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "huge ndim");
    int64_t zero[4] = {0, chw[0], chw[1], chw[2]};
    CHECK(timm_infer(m, input, zero, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "zero batch");
    int64_t neg[4] = {2, -chw[0], chw[1], chw[2]};
    CHECK(timm_infer(m, input, neg, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "negative dim");
    int64_t wrong[4] = {2, chw[0], chw[1] + 1, chw[2]};
    CHECK(timm_infer(m, input, wrong, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "wrong H");
    CHECK(strstr(timm_last_error(), "expected") != NULL || strstr(timm_last_error(), "match") != NULL, "shape message: %s", timm_last_error());
    int64_t overflow[4] = {INT64_MAX / 2, 1 << 20, 1 << 20, 1 << 20};
    CHECK(timm_infer(m, input, overflow, 4, out, 2 * k) == TIMM_ERR_INVALID_ARGUMENT, "overflowing shape");
    CHECK(timm_infer(m, input, shape, 4, out, 2 * k - 1) == TIMM_ERR_BUFFER_TOO_SMALL, "small buffer");
    char needed[64];
    snprintf(needed, sizeof needed, "%zu", 2 * k);
    CHECK(strstr(timm_last_error(), needed) != NULL, "buffer message lacks needed length %s: %s", needed, timm_last_error());
    for (size_t i = 0; i < per; i++) input[i] = NAN;
    for (size_t i = per; i < 2 * per; i++) input[i] = INFINITY;
    CHECK(timm_infer(m, input, shape, 4, out, 2 * k) == TIMM_OK, "NaN/Inf input must compute: %s", timm_last_error());

    /* Accessors. */
    const char *json = timm_model_config_json(m);
    CHECK(json && strstr(json, "\"architecture\"") != NULL, "config json");
    CHECK(timm_model_label(m, 1u << 30) == NULL, "label out of range");
    CHECK(timm_model_config_json(NULL) == NULL, "NULL model config");
    CHECK(timm_version() && strlen(timm_version()) > 0, "version");
    CHECK(strcmp(timm_status_name(TIMM_ERR_NOT_FOUND), "TIMM_ERR_NOT_FOUND") == 0, "status name");
    CHECK(strcmp(timm_status_name(12345), "TIMM_ERR_UNKNOWN") == 0, "unknown status name");

    timm_free(m);
    timm_free(m); /* double free: detected, ignored */
    CHECK(strstr(timm_last_error(), "double free") != NULL, "model double free not reported: %s", timm_last_error());
    CHECK(timm_model_output_dim(m) == 0, "freed model still answers");
    timm_free(NULL);
    free(input);
    free(out);
    printf("errors: %d failure(s)\n", failures);
    return failures;
}

struct job {
    TimmModel *m;
    const float *input;
    const int64_t *shape;
    size_t k2;
    const float *expected;
    int mismatches;
};

static void *worker(void *arg) {
    struct job *j = arg;
    float *out = malloc(j->k2 * sizeof(float));
    for (int it = 0; it < 50; it++) {
        if (timm_infer(j->m, j->input, j->shape, 4, out, j->k2) != TIMM_OK || memcmp(out, j->expected, j->k2 * sizeof(float)) != 0)
            j->mismatches++;
    }
    free(out);
    return NULL;
}

static int cmd_threads(const char *folder, const char *ref) {
    TimmModel *m = open_model(folder);
    size_t n_in;
    float *input = read_f32(ref, "input.f32", &n_in);
    int64_t chw[3];
    timm_model_input_size(m, chw);
    int64_t shape[4] = {(int64_t)(n_in / (size_t)(chw[0] * chw[1] * chw[2])), chw[0], chw[1], chw[2]};
    size_t k2 = timm_model_output_dim(m) * (size_t)shape[0];
    float *single = malloc(k2 * sizeof(float));
    CHECK(timm_infer(m, input, shape, 4, single, k2) == TIMM_OK, "single: %s", timm_last_error());
    pthread_t t[8];
    struct job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (struct job){m, input, shape, k2, single, 0};
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        bad += jobs[i].mismatches;
    }
    printf("threads: 8 x 50 infers, %d differ from single-threaded\n", bad);
    CHECK(bad == 0, "%d threaded results differ", bad);
    timm_free(m);
    free(input);
    free(single);
    return failures;
}

static int cmd_no_runtime(const char *folder) {
    char spec[4200];
    snprintf(spec, sizeof spec, "local:%s", folder);
    expect_fail(spec, NULL, TIMM_ERR_RUNTIME, "Tried", "missing runtime");
    CHECK(strstr(timm_last_error(), "TIMM_ORT_LIBRARY") != NULL, "message should name TIMM_ORT_LIBRARY: %s", timm_last_error());
    printf("no-runtime message: %s\n", timm_last_error());
    return failures;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: see the comment at the top of test_c_api.c\n"); return 2; }
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 2, argv + 2) ? 1 : 0;
    if (!strcmp(argv[1], "errors")) return cmd_errors(argv[2]) ? 1 : 0;
    if (!strcmp(argv[1], "threads") && argc >= 4) return cmd_threads(argv[2], argv[3]) ? 1 : 0;
    if (!strcmp(argv[1], "no-runtime")) return cmd_no_runtime(argv[2]) ? 1 : 0;
    if (!strcmp(argv[1], "fmaps")) return cmd_fmaps(argc - 2, argv + 2) ? 1 : 0;
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
