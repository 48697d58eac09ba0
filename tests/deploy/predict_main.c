/* A C program of tests/deploy/test_build.py: one prediction through a built library's array API.
 * usage: predict_main CHECKPOINT|- INPUT.bin OUTPUT.bin OUTPUT_RANK THREADS DIM...
 * (the model's name is MODEL, given with -DMODEL=name -include name.h) */
#include <stdio.h>
#include <stdlib.h>
#define CAT(a, b) a##b
#define FN(m, f) CAT(m, f)

int main(int argc, char **argv) {
    if (argc < 7) return 2;
    MODEL *model;
    int status = FN(MODEL, _create)(&model, argv[1][0] == '-' ? NULL : argv[1]);
    if (status) { fprintf(stderr, "create: %d: %s\n", status, FN(MODEL, _error)(model)); return 1; }
    FN(MODEL, _set_threads)(model, atoi(argv[5]));
    int rank = argc - 6, out_rank = atoi(argv[4]);
    int64_t shape[8], out_shape[8], n = 1, capacity = 1 << 24;
    for (int i = 0; i < rank; i++) n *= shape[i] = atoll(argv[6 + i]);
    FILE *f = fopen(argv[2], "rb");
    char *input = malloc((size_t)n * 8);
    size_t got = fread(input, 1, (size_t)n * 8, f);
    fclose(f);
    float *output = malloc((size_t)capacity * 8);
    const void *inputs[] = {input};
    const int64_t *shapes[] = {shape};
    void *outputs[] = {output};
    const int64_t capacities[] = {capacity};
    int64_t *output_shapes[] = {out_shape};
    status = FN(MODEL, _predict_arrays)(model, inputs, shapes, outputs, capacities, output_shapes);
    if (status) { fprintf(stderr, "predict: %d: %s (%zu input bytes)\n", status, FN(MODEL, _error)(model), got); return 1; }
    int64_t count = 1;
    for (int i = 0; i < out_rank; i++) count *= out_shape[i];
    f = fopen(argv[3], "wb");
    fwrite(output, sizeof(float), (size_t)count, f);
    fclose(f);
    FN(MODEL, _destroy)(model);
    free(input);
    free(output);
    return 0;
}
