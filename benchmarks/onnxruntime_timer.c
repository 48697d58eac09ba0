/* benchmarks/deploy.py's timer of onnxruntime from C, the counterpart of deploy_timer.c:
 * a session of MODEL.onnx on onnxruntime's C API (its header from an onnxruntime release,
 * `--onnxruntime-include`; the library from pip's wheel), SessionOptions as predict.py's
 * Python session (THREADS intra-op threads, one inter-op), timed on one input.
 * usage: onnxruntime_timer MODEL.onnx INPUT.bin SECONDS THREADS OUT.bin INPUT OUTPUT f32|i32|i64 DIM...
 * prints "create_ms predict_ms calls": the session's creation and the median Run. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "timer.h"
#include "onnxruntime_c_api.h"

static const OrtApi *ort;

static void check(OrtStatus *status, const char *what) {
    if (!status) return;
    fprintf(stderr, "%s: %s\n", what, ort->GetErrorMessage(status));
    ort->ReleaseStatus(status);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 10) return 2;
    /* the header's API version, else an older one the library gives (the table only grows) */
    for (uint32_t v = ORT_API_VERSION; !ort && v > 0; v--) ort = OrtGetApiBase()->GetApi(v);
    if (!ort) { fprintf(stderr, "onnxruntime gives no C API this header knows\n"); return 1; }
    int rank = argc - 9, itemsize = strcmp(argv[8], "f32") && strcmp(argv[8], "i32") ? 8 : 4;
    ONNXTensorElementDataType type = !strcmp(argv[8], "f32") ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
        : !strcmp(argv[8], "i32") ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    int64_t shape[8], n = 1;
    for (int i = 0; i < rank && i < 8; i++) n *= shape[i] = atoll(argv[9 + i]);
    char *input = malloc((size_t)(n * itemsize));
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(input, (size_t)itemsize, (size_t)n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    fclose(f);
    OrtEnv *env;
    OrtSessionOptions *options;
    OrtSession *session;
    OrtMemoryInfo *memory;
    OrtValue *x;
    check(ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "dlc-benchmark", &env), "CreateEnv");
    check(ort->CreateSessionOptions(&options), "CreateSessionOptions");
    check(ort->SetIntraOpNumThreads(options, atoi(argv[4])), "SetIntraOpNumThreads");
    check(ort->SetInterOpNumThreads(options, 1), "SetInterOpNumThreads");
    double t0 = now_ms();
    check(ort->CreateSession(env, argv[1], options, &session), "CreateSession");
    double t1 = now_ms();
    check(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory), "CreateCpuMemoryInfo");
    check(ort->CreateTensorWithDataAsOrtValue(memory, input, (size_t)(n * itemsize), shape, (size_t)rank, type, &x),
          "CreateTensorWithDataAsOrtValue");
    const char *inputs[] = {argv[6]}, *outputs[] = {argv[7]};
    const OrtValue *feeds[] = {x};
    static double times[1 << 20];
    int calls = 0;
    double seconds = atof(argv[3]), start;
    OrtValue *y = NULL;
    for (int warm = 0; warm < 3; warm++, ort->ReleaseValue(y), y = NULL)
        check(ort->Run(session, NULL, inputs, feeds, 1, outputs, 1, &y), "Run");
    start = now_ms();
    while (calls < 5 || (now_ms() - start < seconds * 1e3 && calls < (1 << 20))) {
        double a = now_ms();
        check(ort->Run(session, NULL, inputs, feeds, 1, outputs, 1, &y), "Run");      /* it allocates y, as Python's */
        times[calls++] = now_ms() - a;
        ort->ReleaseValue(y);
        y = NULL;
    }
    qsort(times, (size_t)calls, sizeof *times, by_value);
    check(ort->Run(session, NULL, inputs, feeds, 1, outputs, 1, &y), "Run");
    float *out;
    OrtTensorTypeAndShapeInfo *info;
    size_t count;
    check(ort->GetTensorMutableData(y, (void **)&out), "GetTensorMutableData");
    check(ort->GetTensorTypeAndShape(y, &info), "GetTensorTypeAndShape");
    check(ort->GetTensorShapeElementCount(info, &count), "GetTensorShapeElementCount");
    f = fopen(argv[5], "wb");
    fwrite(out, sizeof(float), count, f);
    fclose(f);
    printf("%.3f %.4f %d\n", t1 - t0, times[calls / 2], calls);
    ort->ReleaseTensorTypeAndShapeInfo(info);
    ort->ReleaseValue(y);
    ort->ReleaseValue(x);
    ort->ReleaseMemoryInfo(memory);
    ort->ReleaseSession(session);
    ort->ReleaseSessionOptions(options);
    ort->ReleaseEnv(env);
    free(input);
    return 0;
}
