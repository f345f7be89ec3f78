/* A plain C program using the installed libtimm: runs a fixture's reference input and checks
 * the logits against timm's within 1e-4. Built both with pkg-config and with CMake's
 * find_package (see scripts/test-bindings).
 *
 *   consumer <fixtures-dir> <fixture-name>      exit 0 when the logits match
 */
#include <timm.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *read_f32(const char *path, size_t *count) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return NULL; }
  fseek(f, 0, SEEK_END);
  long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  float *data = malloc(bytes > 0 ? (size_t)bytes : 1);
  /* The files are little-endian float32, as is every platform libtimm targets. */
  if (!data || bytes % 4 || fread(data, 1, (size_t)bytes, f) != (size_t)bytes) {
    fprintf(stderr, "%s: cannot read float32 data\n", path);
    free(data);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *count = (size_t)bytes / 4;
  return data;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <fixtures-dir> <fixture-name>\n", argv[0]);
    return 2;
  }
  char spec[4096], input_path[4096], logits_path[4096];
  snprintf(spec, sizeof spec, "local:%s/models/%s", argv[1], argv[2]);
  snprintf(input_path, sizeof input_path, "%s/reference/%s/input.f32", argv[1], argv[2]);
  snprintf(logits_path, sizeof logits_path, "%s/reference/%s/logits.f32", argv[1], argv[2]);

  printf("libtimm %s\n", timm_version());
  TimmModel *model = NULL;
  if (timm_model_create(spec, true, NULL, &model) != TIMM_OK) {
    fprintf(stderr, "timm_model_create: %s\n", timm_last_error());
    return 1;
  }

  int rc = 1;
  size_t n_input = 0, n_logits = 0;
  float *input = read_f32(input_path, &n_input);
  float *expected = read_f32(logits_path, &n_logits);
  float *logits = NULL;
  int64_t chw[3];
  if (!input || !expected) goto done;
  if (timm_model_input_size(model, chw) != TIMM_OK) {
    fprintf(stderr, "timm_model_input_size: %s\n", timm_last_error());
    goto done;
  }
  /* The reference batch is N images at the model's input size. */
  const size_t per_image = (size_t)(chw[0] * chw[1] * chw[2]);
  const int64_t shape[4] = {(int64_t)(n_input / per_image), chw[0], chw[1], chw[2]};
  const size_t out_len = (size_t)shape[0] * timm_model_output_dim(model);
  if (n_input % per_image || out_len != n_logits) {
    fprintf(stderr, "reference sizes (%zu inputs, %zu logits) do not fit the model\n", n_input, n_logits);
    goto done;
  }
  logits = malloc(out_len * sizeof *logits);
  TimmStatus st = timm_infer(model, input, shape, 4, logits, out_len);
  if (st != TIMM_OK) {
    fprintf(stderr, "timm_infer: %s (%s)\n", timm_last_error(), timm_status_name(st));
    goto done;
  }
  float max_diff = 0;
  for (size_t i = 0; i < out_len; ++i) max_diff = fmaxf(max_diff, fabsf(logits[i] - expected[i]));
  printf("%s: %zu logits, max |diff| vs timm = %.3g\n", argv[2], out_len, max_diff);
  rc = max_diff <= 1e-4f ? 0 : 1;

done:
  free(logits);
  free(input);
  free(expected);
  timm_free(model);
  return rc;
}
