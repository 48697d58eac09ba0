/* A C program of tests/deploy/test_build.py: a training loop of the digits CNN through a
 * `dlc build --train` library. It reads the batches in the order the test wrote them (each
 * an int64 batch size b, b x 64 floats of x, b int32 of y), sets the schedule's units, runs
 * train_step on each, saves a checkpoint, and writes every parameter as get_parameter gives
 * it (the model's order, raw f32) to PARAMS_OUT.
 * usage: train_main CHECKPOINT BATCHES STEPS_PER_EPOCH TOTAL_STEPS SAVE_TO PARAMS_OUT */
#include <stdio.h>
#include <stdlib.h>
#include "digits_cnn.h"

static const char *NAMES[] = {"c1.W", "c1.b", "c3.W", "c3.b", "f5.W", "f5.b", "logits.W", "logits.b"};

static int failed(digits_cnn *model, const char *what) {
    fprintf(stderr, "%s: %s\n", what, digits_cnn_error(model));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 7) return 2;
    digits_cnn *model;
    if (digits_cnn_create(&model, argv[1])) return failed(model, "create");
    if (digits_cnn_set_schedule(model, atoll(argv[3]), atoll(argv[4]))) return failed(model, "set_schedule");
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 3;
    int64_t b;
    static float x[4096 * 64];
    static int32_t y[4096];
    double values[DIGITS_CNN_TRAIN_VALUES];
    int steps = 0;
    while (fread(&b, sizeof b, 1, f) == 1) {
        if (b < 1 || b > 4096 || fread(x, sizeof(float), (size_t)(b * 64), f) != (size_t)(b * 64) ||
            fread(y, sizeof(int32_t), (size_t)b, f) != (size_t)b)
            return 4;
        int64_t x_shape[4] = {b, 1, 8, 8}, y_shape[1] = {b};
        if (digits_cnn_train_step(model, x, x_shape, y, y_shape, values, DIGITS_CNN_TRAIN_VALUES))
            return failed(model, "train_step");
        steps++;
    }
    fclose(f);
    printf("%d steps, last loss %.9g accuracy %.9g\n", steps, values[DIGITS_CNN_VALUE_LOSS],
           values[DIGITS_CNN_VALUE_ACCURACY]);
    if (digits_cnn_save(model, argv[5])) return failed(model, "save");
    FILE *out = fopen(argv[6], "wb");
    static float w[128 * 64];
    for (int i = 0; i < 8; i++) {
        int64_t shape[DIGITS_CNN_PARAMETER_MAX_RANK], count = 1;
        int rank;
        if (digits_cnn_get_parameter(model, NAMES[i], w, 128 * 64, shape, &rank)) return failed(model, "get_parameter");
        for (int a = 0; a < rank; a++) count *= shape[a];
        fwrite(w, sizeof(float), (size_t)count, out);
    }
    fclose(out);
    digits_cnn_destroy(model);
    return 0;
}
