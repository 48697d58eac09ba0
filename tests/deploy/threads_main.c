/* A C program of tests/test_deploy.py: THREADS threads, each with an instance of its own,
 * predict the same batch ROUNDS times at once; every result must be the first one's bits.
 * usage: threads_main CHECKPOINT THREADS ROUNDS (the digits CNN: -DMODEL=digits_cnn) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CAT(a, b) a##b
#define FN(m, f) CAT(m, f)
#define BATCH 8

static const char *checkpoint;
static int rounds;
static float x[BATCH * 64], first[BATCH * 10];

static void *work(void *failed) {
    MODEL *model;
    float y[BATCH * 10];
    int64_t shape[4] = {BATCH, 1, 8, 8}, out_shape[2];
    if (FN(MODEL, _create)(&model, checkpoint)) { *(int *)failed = 1; return NULL; }
    for (int r = 0; r < rounds; r++)
        if (FN(MODEL, _predict)(model, x, shape, y, BATCH * 10, out_shape) || memcmp(y, first, sizeof y))
            *(int *)failed = 1;
    FN(MODEL, _destroy)(model);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    checkpoint = argv[1];
    int threads = atoi(argv[2]);
    rounds = atoi(argv[3]);
    for (int i = 0; i < BATCH * 64; i++) x[i] = (float)((i * 7919) % 101) / 50.0f - 1.0f;
    MODEL *model;
    int64_t shape[4] = {BATCH, 1, 8, 8}, out_shape[2];
    if (FN(MODEL, _create)(&model, checkpoint) || FN(MODEL, _predict)(model, x, shape, first, BATCH * 10, out_shape))
        return 1;
    FN(MODEL, _destroy)(model);
    pthread_t t[64];
    int failed[64] = {0};
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, &failed[i]);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < threads; i++)
        if (failed[i]) { fprintf(stderr, "thread %d: a result differs or a call failed\n", i); return 1; }
    return 0;
}
