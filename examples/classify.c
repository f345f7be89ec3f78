/*
 * classify: prints an image's top classes with a timm model, through libtimm's C API.
 *
 *   classify <spec> <image> [<image> ...]      e.g. classify local:.models/tf_efficientnet_lite0.in1k cat.png
 *   classify <spec> --tensor <input.f32>       a preprocessed NCHW float32 tensor instead of images
 *
 * Build against an install (scripts/install <prefix>; -lm for exp):
 *   cc examples/classify.c $(PKG_CONFIG_PATH=<prefix>/lib/pkgconfig pkg-config --cflags --libs timm) -lm -o classify
 * or against the build folder, as scripts/demo does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timm.h"

#define TOP 5

static int fail(const char *what) {
    fprintf(stderr, "classify: %s: %s\n", what, timm_last_error());
    return 1;
}

#define NAME_WIDTH 28

/* One ranked line; a name longer than its column is cut with "..." so the columns stay aligned. */
static void print_class(int rank, size_t index, float prob, float logit, const char *label, const char *desc) {
    const char *name = desc ? desc : (label ? label : "-");
    char shown[NAME_WIDTH + 1];
    if (strlen(name) > NAME_WIDTH)
        snprintf(shown, sizeof shown, "%.*s...", NAME_WIDTH - 3, name);
    else
        snprintf(shown, sizeof shown, "%s", name);
    printf("  %d. %-*s %6.2f%%  (class %zu, logit %.3f)%s%s\n", rank, NAME_WIDTH, shown, 100.0 * prob, index, logit,
           label && desc ? "  " : "", label && desc ? label : "");
}

static int classify_tensor(TimmModel *model, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return 1; }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f) / sizeof(float);
    fseek(f, 0, SEEK_SET);
    float *input = malloc(n * sizeof(float));
    if (fread(input, sizeof(float), n, f) != n) { fprintf(stderr, "short read\n"); return 1; }
    fclose(f);
    int64_t chw[3];
    if (timm_model_input_size(model, chw) != TIMM_OK) return fail("input size");
    int64_t shape[4] = {(int64_t)(n / (size_t)(chw[0] * chw[1] * chw[2])), chw[0], chw[1], chw[2]};
    size_t k = timm_model_output_dim(model);
    float *logits = malloc((size_t)shape[0] * k * sizeof(float));
    if (timm_infer(model, input, shape, 4, logits, (size_t)shape[0] * k) != TIMM_OK) return fail("infer");
    for (int64_t b = 0; b < shape[0]; b++) {
        const float *row = logits + (size_t)b * k;
        /* Softmax, then the TOP largest, as timm_classify does for images. */
        float max = row[0];
        for (size_t i = 1; i < k; i++) if (row[i] > max) max = row[i];
        double sum = 0;
        for (size_t i = 0; i < k; i++) sum += exp((double)(row[i] - max));
        printf("%s [%lld]\n", path, (long long)b);
        size_t best[TOP];
        for (int r = 0; r < TOP && (size_t)r < k; r++) {
            size_t arg = k;
            for (size_t i = 0; i < k; i++) {
                int taken = 0;
                for (int q = 0; q < r; q++) taken |= best[q] == i;
                if (!taken && (arg == k || row[i] > row[arg])) arg = i;
            }
            best[r] = arg;
            print_class(r + 1, arg, (float)(exp((double)(row[arg] - max)) / sum), row[arg], timm_model_label(model, arg),
                        timm_model_label_description(model, arg));
        }
    }
    free(input);
    free(logits);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <spec> <image> [<image> ...]\n       %s <spec> --tensor <input.f32>\n", argv[0], argv[0]);
        return 2;
    }
    TimmModel *model = NULL;
    TimmStatus status = timm_model_create(argv[1], true, NULL, &model);
    if (status != TIMM_OK) return fail(argv[1]);
    int rc = 0;
    if (!strcmp(argv[2], "--tensor") && argc >= 4) {
        rc = classify_tensor(model, argv[3]);
    } else {
        size_t k = timm_model_num_classes(model) < TOP ? timm_model_num_classes(model) : TOP;
        TimmClass top[TOP];
        for (int i = 2; i < argc; i++) {
            if (timm_classify_file(model, argv[i], k, top) != TIMM_OK) { rc = fail(argv[i]); continue; }
            printf("%s\n", argv[i]);
            for (size_t r = 0; r < k; r++)
                print_class((int)r + 1, top[r].index, top[r].probability, top[r].logit, top[r].label, top[r].description);
        }
    }
    timm_free(model);
    return rc;
}
