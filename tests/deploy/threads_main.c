/* A C program of tests/deploy/test_build.py: THREADS threads, each with an instance of its own
 * and a batch of its own, predict ROUNDS times at once; every result must be the bits of
 * that batch's prediction made before, one thread alone. Different batches, so that two
 * threads sharing anything they write (a fault flag, GEMM pack buffers) would differ.
 * usage: threads_main CHECKPOINT THREADS ROUNDS (the digits CNN: -DMODEL=digits_cnn) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CAT(a, b) a##b
#define FN(m, f) CAT(m, f)
#define BATCH 64
#define MOST 64

static const char *checkpoint;
static int rounds;
static float x[MOST][BATCH * 64], first[MOST][BATCH * 10];
static int failed[MOST];

static void *work(void *arg) {
    int k = (int)(intptr_t)arg;
    MODEL *model;
    float y[BATCH * 10];
    int64_t shape[4] = {BATCH, 1, 8, 8}, out_shape[2];
    if (FN(MODEL, _create)(&model, checkpoint)) { failed[k] = 1; return NULL; }
    for (int r = 0; r < rounds; r++)
        if (FN(MODEL, _predict)(model, x[k], shape, y, BATCH * 10, out_shape) || memcmp(y, first[k], sizeof y))
            failed[k] = 1;
    FN(MODEL, _destroy)(model);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    checkpoint = argv[1];
    int threads = atoi(argv[2]);
    rounds = atoi(argv[3]);
    if (threads < 1 || threads > MOST) return 2;
    MODEL *model;
    int64_t shape[4] = {BATCH, 1, 8, 8}, out_shape[2];
    if (FN(MODEL, _create)(&model, checkpoint)) return 1;
    for (int k = 0; k < threads; k++) {         /* one after the other: the reference */
        for (int i = 0; i < BATCH * 64; i++) x[k][i] = (float)(((i + 131 * k) * 7919) % 101) / 50.0f - 1.0f;
        if (FN(MODEL, _predict)(model, x[k], shape, first[k], BATCH * 10, out_shape)) return 1;
    }
    FN(MODEL, _destroy)(model);
    pthread_t t[MOST];
    for (int k = 0; k < threads; k++) pthread_create(&t[k], NULL, work, (void *)(intptr_t)k);
    for (int k = 0; k < threads; k++) pthread_join(t[k], NULL);
    for (int k = 0; k < threads; k++)
        if (failed[k]) { fprintf(stderr, "thread %d: a result differs or a call failed\n", k); return 1; }
    return 0;
}
