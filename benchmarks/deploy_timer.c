/* benchmarks/deploy.py's timer: a dlc-built library loaded with dlopen, called through its
 * array API. usage: deploy_timer LIB.so NAME CKPT|- INPUT.bin SECONDS THREADS OUT.bin DIM...
 * prints "load_ms create_ms first_ms predict_ms calls": dlopen, NAME_create, the first predict
 * (which also packs the weights, docs/deploy.md) and the median predict after it. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "timer.h"

typedef int (*create_fn)(void **, const char *);
typedef int (*threads_fn)(void *, int);
typedef const char *(*error_fn)(const void *);
typedef int (*predict_fn)(void *, const void *const *, const int64_t *const *, void *const *, const int64_t *,
                          int64_t *const *);

static void *symbol(void *lib, const char *name, const char *fn) {
    char full[256];
    snprintf(full, sizeof full, "%s_%s", name, fn);
    void *p = dlsym(lib, full);
    if (!p) { fprintf(stderr, "no %s in the library\n", full); exit(1); }
    return p;
}

int main(int argc, char **argv) {
    if (argc < 9) return 2;
    double t0 = now_ms();
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    double t1 = now_ms();
    void *model;
    error_fn error = (error_fn)symbol(lib, argv[2], "error");
    if (((create_fn)symbol(lib, argv[2], "create"))(&model, argv[3][0] == '-' ? NULL : argv[3])) {
        fprintf(stderr, "%s\n", error(model));
        return 1;
    }
    double t2 = now_ms();
    ((threads_fn)symbol(lib, argv[2], "set_threads"))(model, atoi(argv[6]));
    predict_fn predict = (predict_fn)symbol(lib, argv[2], "predict_arrays");
    int rank = argc - 8;
    int64_t shape[8], n = 1, out_shape[8], capacity = 1 << 24;
    for (int i = 0; i < rank; i++) n *= shape[i] = atoll(argv[8 + i]);
    FILE *f = fopen(argv[4], "rb");
    char *input = malloc((size_t)n * 8);
    size_t got = fread(input, 1, (size_t)n * 8, f);
    fclose(f);
    (void)got;
    float *output = malloc((size_t)capacity * 4);
    const void *inputs[] = {input};
    const int64_t *shapes[] = {shape};
    void *outputs[] = {output};
    const int64_t capacities[] = {capacity};
    int64_t *output_shapes[] = {out_shape};
    static double times[1 << 20];
    int calls = 0;
    double seconds = atof(argv[5]), first = 0, start = now_ms();
    for (int warm = 0; warm < 3; warm++) {
        double a = now_ms();
        if (predict(model, inputs, shapes, outputs, capacities, output_shapes)) { fprintf(stderr, "%s\n", error(model)); return 1; }
        if (warm == 0) first = now_ms() - a;
    }
    while (calls < 5 || (now_ms() - start < seconds * 1e3 && calls < (1 << 20))) {
        double a = now_ms();
        predict(model, inputs, shapes, outputs, capacities, output_shapes);
        times[calls++] = now_ms() - a;
    }
    qsort(times, (size_t)calls, sizeof *times, by_value);
    f = fopen(argv[7], "wb");
    fwrite(output, sizeof(float), (size_t)(out_shape[0] * (out_shape[1] ? out_shape[1] : 1)), f);
    fclose(f);
    printf("%.3f %.3f %.4f %.4f %d\n", t1 - t0, t2 - t1, first, times[calls / 2], calls);
    return 0;
}
