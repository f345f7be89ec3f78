/*
 * backbone: a timm model as a backbone, through libtimm's C API: prints the shape and timm's
 * feature_info of each feature map (timm's features_only=True) for an image.
 *
 *   backbone <spec> <image> [out_indices] [output_stride]
 *       e.g. backbone local:/models/resnet50.a1_in1k cat.jpg 1,2,3,4 16
 *
 * Build against an install (scripts/install <prefix>):
 *   cc -o backbone backbone.c $(pkg-config --cflags --libs timm)
 */
#include <stdio.h>
#include <stdlib.h>

#include "timm.h"

static int fail(const char *what) {
    fprintf(stderr, "backbone: %s: %s\n", what, timm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <spec> <image> [out_indices] [output_stride]\n", argv[0]);
        return 2;
    }
    TimmOptions *opts = timm_options_new();
    if (timm_options_set(opts, "output", "feature_maps") != TIMM_OK) return fail("output");
    if (argc > 3 && timm_options_set(opts, "out_indices", argv[3]) != TIMM_OK) return fail("out_indices");
    if (argc > 4 && timm_options_set(opts, "output_stride", argv[4]) != TIMM_OK) return fail("output_stride");
    TimmModel *model = NULL;
    model = timm_create_model_with_options(argv[1], true, opts);
    timm_options_free(opts);
    if (!model) return fail(argv[1]);

    /* The image through the model's own eval transform: a batch of one. */
    int64_t chw[3];
    if (timm_model_input_size(model, chw) != TIMM_OK) return fail("input size");
    int64_t shape[4] = {1, chw[0], chw[1], chw[2]};
    size_t in_len = (size_t)(chw[0] * chw[1] * chw[2]);
    float *input = malloc(in_len * sizeof(float));
    if (!input) return 1;
    if (timm_preprocess_file(model, argv[2], input, in_len) != TIMM_OK) return fail(argv[2]);

    /* One buffer per map, sized by the shape the model reports for this input. */
    size_t n = timm_model_output_count(model);
    float **maps = calloc(n, sizeof(float *));
    size_t *lens = calloc(n, sizeof(size_t));
    int64_t (*dims)[8] = calloc(n, sizeof *dims);
    if (!maps || !lens || !dims) return 1;
    for (size_t i = 0; i < n; i++) {
        size_t ndim = 0;
        if (timm_model_output_shape(model, i, shape, 4, dims[i], 8, &ndim) != TIMM_OK) return fail("output shape");
        lens[i] = 1;
        for (size_t d = 0; d < ndim; d++) lens[i] *= (size_t)dims[i][d];
        maps[i] = malloc(lens[i] * sizeof(float));
        if (!maps[i]) return 1;
    }
    if (timm_infer_outputs(model, input, shape, 4, maps, lens, n) != TIMM_OK) return fail("infer");

    printf("%s: %zu feature maps\n", argv[1], n);
    for (size_t i = 0; i < n; i++) {
        size_t channels = 0, reduction = 0;
        const char *module = NULL;
        if (timm_model_feature_info(model, i, &channels, &reduction, &module) != TIMM_OK) return fail("feature info");
        float max = 0;
        for (size_t j = 0; j < lens[i]; j++) max = maps[i][j] > max ? maps[i][j] : max;
        printf("  %zu. %-12s [%lld, %lld, %lld, %lld]  channels %zu, stride %zu, max %.4f\n", i, module,
               (long long)dims[i][0], (long long)dims[i][1], (long long)dims[i][2], (long long)dims[i][3], channels,
               reduction, max);
        free(maps[i]);
    }
    free(maps);
    free(lens);
    free(dims);
    free(input);
    timm_free(model);
    return 0;
}
