/* A C program of tests/deploy/test_aarch64.py: a script of calls through a built library's C
 * API, read from stdin, one call a line, each answered by one line on stdout ("STATUS
 * MESSAGE", predict's with the output's shape), so that one script's answers from two
 * machines (x86-64, AArch64 under qemu) can be compared word for word:
 *   create PATH|-              NAME_create (- : NULL, the embedded weights)
 *   memory PATH BYTES          NAME_create_from_memory of the file's first BYTES bytes (-1: all; a
 *                              path "-": a null pointer)
 *   threads N                  NAME_set_threads
 *   predict IN OUT CAP NULLS RANK DIM...   NAME_predict_arrays of IN's bytes (read whole), its output
 *                              (CAP floats of room) written to OUT; NULLS: the pointers passed
 *                              null, letters of "xsyi" (input, shape, output, the inputs' array) or -
 *   destroy                    NAME_destroy (of the instance the last create made)
 * (the model's name is MODEL, given with -DMODEL=name -include name.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CAT(a, b) a##b
#define FN(m, f) CAT(m, f)

static char *read_file(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc(*size ? (size_t)*size : 1);
    *size = (long)fread(data, 1, (size_t)*size, f);
    fclose(f);
    return data;
}

static void answer(MODEL **model, int status) {     /* after the call: it may make *model */
    printf("%d %s\n", status, FN(MODEL, _error)(*model));
}

int main(void) {
    MODEL *model = NULL;
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        char *words[32];
        int n = 0;
        for (char *w = strtok(line, " \n"); w && n < 32; w = strtok(NULL, " \n")) words[n++] = w;
        if (!n) continue;
        if (!strcmp(words[0], "create")) {
            answer(&model, FN(MODEL, _create)(&model, strcmp(words[1], "-") ? words[1] : NULL));
        } else if (!strcmp(words[0], "memory")) {
            long size = 0, bytes = atol(words[2]);
            char *data = strcmp(words[1], "-") ? read_file(words[1], &size) : NULL;
            answer(&model, FN(MODEL, _create_from_memory)(&model, data, (size_t)(bytes < 0 ? size : bytes)));
            free(data);
        } else if (!strcmp(words[0], "threads")) {
            answer(&model, FN(MODEL, _set_threads)(model, atoi(words[1])));
        } else if (!strcmp(words[0], "destroy")) {
            FN(MODEL, _destroy)(model);
            model = NULL;
        } else if (!strcmp(words[0], "predict")) {
            long size = 0, cap = atol(words[3]);
            char *input = read_file(words[1], &size);
            const char *nulls = words[4];
            int rank = atoi(words[5]);
            int64_t shape[8] = {0}, out_shape[8] = {0};
            for (int i = 0; i < rank && i < 8; i++) shape[i] = atoll(words[6 + i]);
            float *output = calloc(cap > 0 ? (size_t)cap : 1, sizeof(float));
            const void *inputs[] = {strchr(nulls, 'x') ? NULL : input};
            const int64_t *shapes[] = {strchr(nulls, 's') ? NULL : shape};
            void *outputs[] = {strchr(nulls, 'y') ? NULL : output};
            const int64_t capacities[] = {cap};
            int64_t *output_shapes[] = {out_shape};
            int status = FN(MODEL, _predict_arrays)(model, strchr(nulls, 'i') ? NULL : inputs, shapes, outputs,
                                                    capacities, output_shapes);
            printf("%d %s [%lld %lld %lld]\n", status, FN(MODEL, _error)(model), (long long)out_shape[0],
                   (long long)out_shape[1], (long long)out_shape[2]);
            FILE *f = fopen(words[2], "wb");
            if (f) {
                fwrite(output, sizeof(float), cap > 0 ? (size_t)cap : 0, f);
                fclose(f);
            }
            free(input);
            free(output);
        } else {
            printf("unknown call %s\n", words[0]);
        }
        fflush(stdout);
    }
    return 0;
}
