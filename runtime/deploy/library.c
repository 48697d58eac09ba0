/* The run-time part of a library `dlc build` writes (runtime/deploy/library.py): the
 * same for every model. library.py puts the model's tables before it (the DLC_* macros,
 * SYMBOLS, INPUTS, OUTPUTS, PARAMS, KNOWN, LIMITS, SCALES, BUFFERS, LIVE, CONSTRAINTS, FAULTS, ARGUMENTS, POLYS, the
 * step function, its fault flag and the embedded data) and the public functions after it.
 * Everything here is static: two models linked into one program share nothing.
 *
 * Memory safety: every offset and size read from a checkpoint is checked against the
 * bytes there are before it is used (and every read against the file's size: source_read); every size computed from the caller's shapes is
 * computed with overflow checks; the step runs only on buffers allocated here for the
 * sizes the caller's shapes give, or on the caller's inputs of exactly those shapes. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <sys/mman.h>                    /* madvise: the packed weights' huge pages */
#include <sys/syscall.h>                 /* arch_prctl: the AMX tile state */
#endif
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#endif

#define ALIGN 64
/* Packed weights this large or larger start on a huge page's boundary and ask Linux for huge
 * pages, as numpy asks for an array of 4 MB or more (the JIT's packs): every call streams
 * them again, and a batch of one reads tens of megabytes of filters a few multiply-adds a
 * float, 4 KB pages missing the TLB all along. */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_FROM ((size_t)4 << 20)
#define MOST_BYTES ((int64_t)1 << 46)        /* more memory than that is refused, not attempted */

enum { KIND_TEMP, KIND_INPUT, KIND_PARAM, KIND_OUTPUT, KIND_CONST, KIND_PACKED };

typedef struct { const char *name; int from; int64_t divisor; int step; } dlc_symbol;
typedef struct { int symbol; int64_t poly; } dlc_dim;
typedef struct { const char *name, *type; int itemsize, rank; const dlc_dim *dims; int buffer; } dlc_input;
typedef struct { const char *name; int itemsize, rank; const int64_t *dims; int buffer; } dlc_output;
typedef struct { const char *name, *descr, *st; int itemsize, rank; const int64_t *shape; int64_t count, embedded; int buffer; } dlc_param;
typedef struct { int kind, itemsize; int64_t size, data; } dlc_buffer;
typedef struct { int64_t dim, least; const char *where, *op, *text, *word; } dlc_constraint;
typedef struct { const char *where, *what; int64_t count; } dlc_fault_site;
typedef struct { int64_t bound; int ignored; const int64_t *values; } dlc_limit;
typedef struct { const char *name; const char *const *features; } dlc_target;   /* features: NULL-ended */

struct DLC_INSTANCE {
    char message[1024];
    int status, threads;                 /* status: that of a failed create, which every call returns */
    unsigned char *weights;              /* the parameters, loaded from a checkpoint (NULL: embedded) */
    void *params[DLC_N_PARAMS + 1];
    int laid;                            /* the arena is laid out for `values` */
    int64_t values[DLC_N_SYMBOLS + 1];
    int64_t sizes[DLC_N_STEP_SYMBOLS + 2];   /* the fault flag (driver.py: sizes[-1] of the step), then the sizes */
    int64_t counts[DLC_N_BUFFERS];       /* the element count of each buffer */
    unsigned char *arena;
    int64_t arena_bytes;                 /* its size: temporaries (shared) and outputs */
    unsigned char *packs;                /* the weights packed for the GEMMs and their flag (KIND_PACKED): their
                                          * sizes are the weights', so they are made once, zeroed (not packed) */
    void *table[DLC_N_BUFFERS + DLC_N_FAULTS + DLC_N_UPDATE_BUFFERS + 1];   /* driver.py's pointer table */
    void *args[DLC_N_ARGUMENTS + 1];
    void *trainer;                       /* a --train library's: the train step's instance (library_train.c) */
    void *scaled[DLC_N_INPUTS + 1];      /* with the transform inside (DLC_TRANSFORM): each input times its scale */
    int64_t scaled_count[DLC_N_INPUTS + 1];
#if DLC_N_UPDATE_BUFFERS
    DLC_TRAINING_STATE                   /* library_train.c: the flat arrays, the step count, the schedule */
#endif
};

static int fail(struct DLC_INSTANCE *m, int status, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    vsnprintf(m->message, sizeof m->message, format, ap);
    va_end(ap);
    return status;
}

/* ---- the model's tables (library.py) go here ---- */

/* ---- dims: polynomials over the symbols, as POLYS holds them: n terms, each
 * (coefficient, k, k symbol numbers) ---------------------------------------------------- */
static int poly_value(int64_t at, const int64_t *values, int64_t *out) {
    const int64_t *p = POLYS + at;
    int64_t n = *p++, total = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t term = *p++, k = *p++;
        for (int64_t j = 0; j < k; j++)
            if (__builtin_mul_overflow(term, values[*p++], &term)) return -1;
        if (__builtin_add_overflow(total, term, &total)) return -1;
    }
    *out = total;
    return 0;
}

/* text of a file's n bytes at s for a message: at most size - 1 characters, each byte
 * outside printable ASCII a '?', "..." when cut (a message is text, whatever the file) */
static void file_text(char *out, size_t size, const void *s, size_t n) {
    const unsigned char *c = s;
    size_t k = 0;
    for (; k < n && k < size - 4; k++) out[k] = c[k] >= ' ' && c[k] < 127 ? (char)c[k] : '?';
    strcpy(out + k, n > k ? "..." : "");
}

static void shape_text(char *out, size_t n, const int64_t *shape, int rank) {
    size_t at = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < rank && at < n; i++)
        at += (size_t)snprintf(out + at, n - at, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (at < n) snprintf(out + at, n - at, "]");
}

/* 1 when `shape` (rank dims) is p's own; else 0, with both written out for the message */
static int shape_is(const dlc_param *p, const int64_t *shape, int rank, char got[256], char want[256]) {
    int same = rank == p->rank;
    for (int i = 0; same && i < rank; i++) same = shape[i] == p->shape[i];
    if (!same) {
        shape_text(got, 256, shape, rank);
        shape_text(want, 256, p->shape, p->rank);
    }
    return same;
}

/* ---- the CPU: what the code was compiled for must be there (never SIGILL) --------------- */
#if defined(__x86_64__)
static unsigned long long xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));   /* xgetbv */
    return ((unsigned long long)hi << 32) | lo;
}

/* the CPU's features by LLVM's names: cpuid's leaves read once (in a virtual machine each
 * cpuid is a trap to the hypervisor, tens of microseconds) */
typedef struct { const char *name; int has; } cpu_feature;

static int cpu_features(cpu_feature *table) {
    unsigned int a1 = 0, b1 = 0, c1 = 0, d1 = 0, a7 = 0, b7 = 0, c7 = 0, d7 = 0, a71 = 0, b71 = 0, c71 = 0, d71 = 0;
    unsigned int ae = 0, be = 0, ce = 0, de = 0;
    __get_cpuid(1, &a1, &b1, &c1, &d1);
    __get_cpuid_count(7, 0, &a7, &b7, &c7, &d7);
    __get_cpuid_count(7, 1, &a71, &b71, &c71, &d71);
    __get_cpuid(0x80000001, &ae, &be, &ce, &de);
    unsigned long long x = c1 >> 27 & 1 ? xcr0() : 0;        /* xgetbv only where the OS enabled it */
    int os_avx = (c1 >> 27 & 1) && (x & 6) == 6;
    int os_avx512 = os_avx && (x & 0xe0) == 0xe0;
    int os_amx = os_avx && (x & 0x60000) == 0x60000;
    cpu_feature all[] = {
        {"sse3", c1 & 1}, {"ssse3", c1 >> 9 & 1}, {"fma", (c1 >> 12 & 1) && os_avx}, {"cx16", c1 >> 13 & 1},
        {"sse4.1", c1 >> 19 & 1}, {"sse4.2", c1 >> 20 & 1}, {"movbe", c1 >> 22 & 1}, {"popcnt", c1 >> 23 & 1},
        {"xsave", c1 >> 26 & 1}, {"avx", (c1 >> 28 & 1) && os_avx}, {"f16c", (c1 >> 29 & 1) && os_avx},
        {"bmi", b7 >> 3 & 1}, {"avx2", (b7 >> 5 & 1) && os_avx}, {"bmi2", b7 >> 8 & 1},
        {"avx512f", (b7 >> 16 & 1) && os_avx512}, {"avx512dq", (b7 >> 17 & 1) && os_avx512},
        {"avx512cd", (b7 >> 28 & 1) && os_avx512}, {"avx512bw", (b7 >> 30 & 1) && os_avx512},
        {"avx512vl", (b7 >> 31 & 1) && os_avx512}, {"avx512vnni", (c7 >> 11 & 1) && os_avx512},
        {"avx512bf16", (a71 >> 5 & 1) && os_avx512}, {"amx-bf16", (d7 >> 22 & 1) && os_amx},
        {"amx-tile", (d7 >> 24 & 1) && os_amx}, {"amx-int8", (d7 >> 25 & 1) && os_amx}, {"lzcnt", ce >> 5 & 1},
        {"avxvnni", (a71 >> 4 & 1) && os_avx},
    };
    memcpy(table, all, sizeof all);
    return (int)(sizeof all / sizeof *all);
}
#elif defined(__aarch64__) && defined(__APPLE__)
typedef struct { const char *name; int has; } cpu_feature;

static int sysctl_flag(const char *name) {
    int value = 0;
    size_t size = sizeof value;
    return !sysctlbyname(name, &value, &size, NULL, 0) && value;
}

/* the CPU's features by LLVM's names, as macOS reports them (sysctl's hw.optional.*) */
static int cpu_features(cpu_feature *table) {
    cpu_feature all[] = {
        {"fp-armv8", sysctl_flag("hw.optional.floatingpoint")}, {"neon", sysctl_flag("hw.optional.neon")},
        {"crc", sysctl_flag("hw.optional.armv8_crc32")}, {"lse", sysctl_flag("hw.optional.arm.FEAT_LSE")},
        {"fullfp16", sysctl_flag("hw.optional.arm.FEAT_FP16")}, {"rdm", sysctl_flag("hw.optional.arm.FEAT_RDM")},
        {"dotprod", sysctl_flag("hw.optional.arm.FEAT_DotProd")}, {"i8mm", sysctl_flag("hw.optional.arm.FEAT_I8MM")},
        {"bf16", sysctl_flag("hw.optional.arm.FEAT_BF16")},
    };
    memcpy(table, all, sizeof all);
    return (int)(sizeof all / sizeof *all);
}
#elif defined(__aarch64__)
typedef struct { const char *name; int has; } cpu_feature;

/* the CPU's features by LLVM's names, as Linux reports them (getauxval's HWCAP words: the
 * kernel's Documentation/arch/arm64/elf_hwcaps.rst); AArch64 user code cannot read the ID
 * registers without the kernel trapping them */
static int cpu_features(cpu_feature *table) {
    unsigned long h = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
    cpu_feature all[] = {
        {"fp-armv8", h & 1}, {"neon", h >> 1 & 1}, {"crc", h >> 7 & 1}, {"lse", h >> 8 & 1},
        {"fullfp16", (h >> 9 & 1) && (h >> 10 & 1)}, {"rdm", h >> 12 & 1}, {"dotprod", h >> 20 & 1},
        {"i8mm", h2 >> 13 & 1}, {"bf16", h2 >> 14 & 1},
    };
    memcpy(table, all, sizeof all);
    return (int)(sizeof all / sizeof *all);
}
#endif

/* the first of `features` (NULL-ended) that the CPU's table lacks; NULL when it has them all */
static const char *lacking(const char *const *features, const cpu_feature *table, int n) {
    for (int i = 0; features[i]; i++) {
        int has = 0;
        for (int k = 0; k < n; k++) has |= !strcmp(table[k].name, features[i]) && table[k].has;
        if (!has) return features[i];
    }
    return NULL;
}

/* A library whose features the CPU lacks names the target for its machine that would run
 * (the first of MACHINE_TARGETS, the most capable first, whose every feature the CPU has), or
 * says that none would: the least of them needs a feature the CPU lacks too. */
static int check_cpu(struct DLC_INSTANCE *m) {
    cpu_feature table[32];
    int n = cpu_features(table);
    const char *missing = lacking(CPU_FEATURES, table, n);
    if (missing) {
        int i = 0;
        while (MACHINE_TARGETS[i].name && lacking(MACHINE_TARGETS[i].features, table, n)) i++;
        if (MACHINE_TARGETS[i].name)
            return fail(m, DLC_ERROR_CPU, "this library was built for %s (dlc build --target %s), and this CPU "
                        "lacks %s: build it for --target %s, which this CPU runs", DLC_TARGET, DLC_TARGET, missing,
                        MACHINE_TARGETS[i].name);
        if (i == 0)     /* no target of dlc build is for this machine to name */
            return fail(m, DLC_ERROR_CPU, "this library was built for %s (dlc build --target %s), and this CPU "
                        "lacks %s", DLC_TARGET, DLC_TARGET, missing);
        return fail(m, DLC_ERROR_CPU, "this library was built for %s (dlc build --target %s), and this CPU "
                    "lacks %s: none of dlc build's targets runs on it (the least, %s, needs %s); a build on this "
                    "machine (--target host) compiles for what it has", DLC_TARGET, DLC_TARGET, missing,
                    MACHINE_TARGETS[i - 1].name, lacking(MACHINE_TARGETS[i - 1].features, table, n));
    }
#if DLC_USES_AMX
    /* Linux grants the AMX tile state on request; without it the first tile instruction is SIGILL */
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */))
        return fail(m, DLC_ERROR_CPU, "Linux did not grant the AMX tile state: %s", strerror(errno));
#endif
    return DLC_OK;
}

/* ---- checkpoints: dlc's .npz (a zip of stored .npy files, param:NAME.npy) -------------- */
static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A checkpoint's bytes: the caller's (NAME_create_from_memory) or a file's, read piece by
 * piece: the parameters straight into their arrays, no copy of the whole file. A file is
 * never mapped: one cut short while it is read is an error here, not SIGBUS. */
typedef struct { const unsigned char *bytes; int fd; uint64_t n; } source;

/* bytes [at, at + len) of the checkpoint into dest: refused past its end */
static int source_read(struct DLC_INSTANCE *m, const source *s, uint64_t at, uint64_t len, void *dest) {
    if (at > s->n || len > s->n - at) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: truncated (a read past its end)");
    if (s->bytes) {
        if (len) memcpy(dest, s->bytes + at, (size_t)len);
        return DLC_OK;
    }
    for (uint64_t done = 0; done < len;) {
        ssize_t r = pread(s->fd, (unsigned char *)dest + done, (size_t)(len - done), (off_t)(at + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: cannot read it: %s", r ? strerror(errno) : "cut short");
        done += (uint64_t)r;
    }
    return DLC_OK;
}

static int source_open(struct DLC_INSTANCE *m, const char *path, source *s) {
    struct stat st;
    s->bytes = NULL;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) return fail(m, DLC_ERROR_WEIGHTS, "cannot open the checkpoint %s: %s", path, strerror(errno));
    if (fstat(s->fd, &st) || !S_ISREG(st.st_mode) || st.st_size >= MOST_BYTES) {
        close(s->fd);
        s->fd = -1;
        return fail(m, DLC_ERROR_WEIGHTS, "cannot read the checkpoint %s: not a file of a size this library reads", path);
    }
    s->n = (uint64_t)st.st_size;
    return DLC_OK;
}

static void source_close(source *s) {
    if (!s->bytes && s->fd >= 0) close(s->fd);
}

/* the value after `key` in a .npy header (a Python dict literal), or NULL */
static const char *after_key(const char *header, const char *key) {
    const char *at = strstr(header, key);
    if (!at) return NULL;
    at += strlen(key);
    while (*at == ' ') at++;
    return at;
}

/* check one .npy file of n bytes, its first ones in d (NPY_HEAD of them, or all), against a
 * parameter (its dtype and shape); where its data starts in *data. `label` names it in
 * messages: "parameter c1.W", "optimizer state c1.W:m" */
#define NPY_HEAD (12 + 4096)
static int read_npy(struct DLC_INSTANCE *m, const dlc_param *p, const char *label, const unsigned char *d, uint64_t n,
                    uint64_t *data) {
    char header[4096];
    if (n < 10 || memcmp(d, "\x93NUMPY", 6))
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s is not a .npy array", label);
    uint64_t start = d[6] == 1 ? 10 : 12, length = d[6] == 1 ? le(d + 8, 2) : n >= 12 ? le(d + 8, 4) : n;
    if ((d[6] != 1 && d[6] != 2 && d[6] != 3) || length >= sizeof header || start + length > n)
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: the .npy header of %s is damaged", label);
    memcpy(header, d + start, length);
    header[length] = 0;
    const char *descr = after_key(header, "'descr':"), *order = after_key(header, "'fortran_order':");
    const char *shape = after_key(header, "'shape':");
    size_t dl = strlen(p->descr);
    if (!descr || !order || !shape || *descr != '\'' || strncmp(order, "False", 5) || *shape != '(')
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: cannot read the .npy header of %s", label);
    if (strncmp(descr + 1, p->descr, dl) || descr[1 + dl] != '\'') {
        const char *end = strchr(descr + 1, '\'');
        char got[32];
        file_text(got, sizeof got, descr + 1, end ? (size_t)(end - descr - 1) : strnlen(descr + 1, 8));
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s is %s, the model's is %s", label, got, p->descr);
    }
    int64_t dims[32];
    int rank = 0;
    const char *s = shape + 1;
    for (;;) {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        if (*s < '0' || *s > '9' || rank == 32)
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: cannot read the shape of %s", label);
        int64_t v = 0;
        while (*s >= '0' && *s <= '9')
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s++ - '0', &v))
                return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s has a dim too large", label);
        dims[rank++] = v;
    }
    char got[256], want[256];
    if (!shape_is(p, dims, rank, got, want))
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s has shape %s, the model's is %s", label, got, want);
    if (n - start - length != (uint64_t)p->count * (uint64_t)p->itemsize)
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s holds %llu bytes, its shape needs %llu", label,
                    (unsigned long long)(n - start - length), (unsigned long long)p->count * (uint64_t)p->itemsize);
    *data = start + length;
    return DLC_OK;
}

/* a member of a zip's central directory */
typedef struct { const unsigned char *name; uint64_t nlen, method, flags, crc, csize, usize, local; } zip_entry;

/* The central directory of a zip, read into *dir (the caller frees it; *end bytes), and
 * its entry count. The end record is in the last 64 KiB (a comment is at most that). */
static int zip_directory(struct DLC_INSTANCE *m, const source *src, unsigned char **dir, uint64_t *end,
                         uint64_t *entries) {
    uint64_t n = src->n, k = n < 65558 ? n : 65558, eocd = 0, cd_size, cd;
    unsigned char *tail = malloc((size_t)k + 1), record[56];
    *dir = NULL;
    if (!tail) return fail(m, DLC_ERROR_MEMORY, "out of memory reading the checkpoint");
    int status = source_read(m, src, n - k, k, tail), have = 0;
    for (uint64_t a = k >= 22 ? k - 22 : 0; !status && k >= 22; a--) {
        if (le(tail + a, 4) == 0x06054b50) { eocd = a; have = 1; break; }
        if (!a) break;
    }
    if (!status && !have) status = fail(m, DLC_ERROR_WEIGHTS, "checkpoint: not a dlc checkpoint (.npz): no zip directory");
    if (status) { free(tail); return status; }
    *entries = le(tail + eocd + 10, 2), cd_size = le(tail + eocd + 12, 4), cd = le(tail + eocd + 16, 4);
    eocd += n - k;                                       /* its place in the file */
    free(tail);
    if (*entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd == 0xFFFFFFFF) {       /* zip64: a locator, a record */
        if (eocd < 20 || source_read(m, src, eocd - 20, 20, record) || le(record, 4) != 0x07064b50)
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: damaged zip64 directory");
        uint64_t a = le(record + 8, 8);
        if (a > n || n - a < 56 || source_read(m, src, a, 56, record) || le(record, 4) != 0x06064b50)
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: damaged zip64 directory");
        *entries = le(record + 32, 8), cd_size = le(record + 40, 8), cd = le(record + 48, 8);
    }
    if (cd > n || cd_size > n - cd) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: truncated (its directory is cut)");
    if (!(*dir = malloc((size_t)cd_size + 1))) return fail(m, DLC_ERROR_MEMORY, "out of memory reading the checkpoint");
    *end = cd_size;
    return source_read(m, src, cd, cd_size, *dir);
}

/* the directory entry at *at (moved past it) */
static int zip_next(struct DLC_INSTANCE *m, const unsigned char *z, uint64_t *at, uint64_t end, zip_entry *e) {
    if (end - *at < 46 || le(z + *at, 4) != 0x02014b50)
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: damaged zip directory");
    const unsigned char *d = z + *at;
    e->method = le(d + 10, 2), e->crc = le(d + 16, 4), e->csize = le(d + 20, 4), e->usize = le(d + 24, 4);
    e->nlen = le(d + 28, 2), e->local = le(d + 42, 4), e->flags = le(d + 8, 2);
    uint64_t elen = le(d + 30, 2), clen = le(d + 32, 2);
    if (end - *at - 46 < e->nlen + elen + clen) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: damaged zip directory");
    e->name = d + 46;
    const unsigned char *extra = e->name + e->nlen;
    for (uint64_t x = 0; x + 4 <= elen;) {           /* zip64 sizes and offset */
        uint64_t id = le(extra + x, 2), size = le(extra + x + 2, 2), y = x + 4;
        if (size > elen - x - 4) break;
        if (id == 1) {
            if (e->usize == 0xFFFFFFFF && y + 8 <= x + 4 + size) e->usize = le(extra + y, 8), y += 8;
            if (e->csize == 0xFFFFFFFF && y + 8 <= x + 4 + size) e->csize = le(extra + y, 8), y += 8;
            if (e->local == 0xFFFFFFFF && y + 8 <= x + 4 + size) e->local = le(extra + y, 8);
        }
        x += 4 + size;
    }
    *at += 46 + e->nlen + elen + clen;
    return DLC_OK;
}

/* where the bytes of a stored member start in the file, checked to lie in it; `label` names it */
static int zip_member(struct DLC_INSTANCE *m, const source *src, const zip_entry *e, const char *label, uint64_t *at) {
    unsigned char local[30];
    if (e->method != 0 || e->flags & 1 || e->csize != e->usize)
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s is compressed or encrypted; dlc writes it stored (np.savez)",
                    label);
    if (e->local > src->n || src->n - e->local < 30 || source_read(m, src, e->local, 30, local) ||
        le(local, 4) != 0x04034b50)
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: truncated or damaged at %s", label);
    *at = e->local + 30 + le(local + 26, 2) + le(local + 28, 2);
    if (*at > src->n || e->csize > src->n - *at) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: truncated at %s", label);
    return DLC_OK;
}

/* a member's CRC, of its first k bytes `head` and the rest `tail`, against its directory's */
static int zip_crc(struct DLC_INSTANCE *m, const zip_entry *e, const char *label, const void *head, uint64_t k,
                   const void *tail) {
    if (crc32_of(crc32_of(0, head, k), tail, e->csize - k) != e->crc)
        return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s is damaged (CRC mismatch)", label);
    return DLC_OK;
}

/* a stored .npy member holding parameter p: checked, its data read into dest */
static int npy_member(struct DLC_INSTANCE *m, const source *src, const zip_entry *e, const dlc_param *p,
                      const char *label, void *dest) {
    unsigned char head[NPY_HEAD];
    uint64_t at, data;
    int status = zip_member(m, src, e, label, &at);
    if (!status) status = source_read(m, src, at, e->csize < NPY_HEAD ? e->csize : NPY_HEAD, head);
    if (!status) status = read_npy(m, p, label, head, e->csize, &data);
    if (!status) status = source_read(m, src, at + data, e->csize - data, dest);
    return status ? status : zip_crc(m, e, label, head, data, dest);
}

/* whether a member's name is PREFIX NAME [":" SLOT] ".npy" */
static int member_is(const zip_entry *e, const char *prefix, const char *name, const char *slot) {
    size_t a = strlen(prefix), b = strlen(name), c = slot ? strlen(slot) + 1 : 0;
    const unsigned char *s = e->name;
    return e->nlen == a + b + c + 4 && !memcmp(s, prefix, a) && !memcmp(s + a, name, b) &&
           (!slot || (s[a + b] == ':' && !memcmp(s + a + b + 1, slot, c - 1))) && !memcmp(s + a + b + c, ".npy", 4);
}

/* whether a checkpoint's array `name` (n bytes) is one the model has but this unit does
 * not read (KNOWN: a parameter no kernel of this step takes) */
static int known_elsewhere(const unsigned char *name, size_t n) {
    for (int i = 0; KNOWN[i]; i++)
        if (n == strlen(KNOWN[i]) && !memcmp(name, KNOWN[i], n)) return 1;
    return 0;
}

/* The first array of a checkpoint that is no parameter of the model, kept to be refused
 * once every parameter was found (a missing one is said first, as dlc predict says it) */
#define EXTRA_SHOWN 128
static void note_extra(char *extra, const unsigned char *name, size_t n) {
    if (!*extra) file_text(extra, EXTRA_SHOWN, name, n);
}

static int refuse_extra(struct DLC_INSTANCE *m, const char *extra) {
    return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: does not match the model: unexpected extra %s", extra);
}

/* whether a zip member is one dlc's checkpoint may hold besides the parameters this unit
 * reads: "meta.npy", an optimizer state "opt:...", an integer product's array "int8:..." (a
 * quantized checkpoint: a float32 library reads its float32 parameters, as dlc predict does), a
 * parameter of the model this unit does not read ("param:NAME.npy", NAME in KNOWN) */
static int member_allowed(const zip_entry *e) {
    const unsigned char *s = e->name;
    if (e->nlen == 8 && !memcmp(s, "meta.npy", 8)) return 1;
    if (e->nlen >= 4 && !memcmp(s, "opt:", 4)) return 1;
    if (e->nlen >= 5 && !memcmp(s, "int8:", 5)) return 1;   /* a quantized checkpoint's: its float32 ones read */
    return e->nlen > 10 && !memcmp(s, "param:", 6) && !memcmp(s + e->nlen - 4, ".npy", 4) &&
           known_elsewhere(s + 6, (size_t)(e->nlen - 10));
}

/* The arrays of the first `count` parameters, "param:NAME.npy", each required, and no
 * other array (member_allowed); or, with a `slot`, their optimizer state
 * "opt:NAME:SLOT.npy", those there: read into dests[i], found[i] set for each read. */
static int npz_arrays(struct DLC_INSTANCE *m, const source *src, void *const *dests, int *found, const char *slot,
                      int count) {
    uint64_t at = 0, end, entries;
    unsigned char *dir;
    char extra[EXTRA_SHOWN] = "";
    int status = zip_directory(m, src, &dir, &end, &entries);
    for (uint64_t k = 0; !status && k < entries; k++) {
        zip_entry e;
        if ((status = zip_next(m, dir, &at, end, &e))) break;
        int matched = 0;
        for (int i = 0; !status && i < count; i++) {
            const dlc_param *p = &PARAMS[i];
            if (!member_is(&e, slot ? "opt:" : "param:", p->name, slot)) continue;
            matched = 1;
            char label[512];
            snprintf(label, sizeof label, slot ? "optimizer state %s:%s" : "parameter %s", p->name, slot);
            if (found[i]) status = fail(m, DLC_ERROR_WEIGHTS, "checkpoint: %s is there twice", label);
            else if (!(status = npy_member(m, src, &e, p, label, dests[i]))) found[i] = 1;
        }
        if (!status && !slot && !matched && !member_allowed(&e))
            note_extra(extra, e.name, (size_t)(e.nlen >= 4 && !memcmp(e.name + e.nlen - 4, ".npy", 4) ? e.nlen - 4 : e.nlen));
    }
    free(dir);
    for (int i = 0; !status && !slot && i < count; i++)
        if (!found[i]) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: no parameter %s (param:%s in the .npz)",
                                   PARAMS[i].name, PARAMS[i].name);
    return status || !*extra ? status : refuse_extra(m, extra);
}

/* ---- safetensors: 8 bytes of header length, a JSON header, the tensors' bytes ---------- */
typedef struct { const char *at, *end; } json;

static void blank(json *j) {
    while (j->at < j->end && (*j->at == ' ' || *j->at == '\n' || *j->at == '\r' || *j->at == '\t')) j->at++;
}

static int take(json *j, char c) {
    blank(j);
    if (j->at < j->end && *j->at == c) { j->at++; return 1; }
    return 0;
}

/* a string without escapes (dlc's names and dtypes have none) */
static int text(json *j, const char **s, size_t *n) {
    if (!take(j, '"')) return 0;
    *s = j->at;
    while (j->at < j->end && *j->at != '"') if (*j->at++ == '\\') return 0;
    if (j->at >= j->end) return 0;
    *n = (size_t)(j->at++ - *s);
    return 1;
}

static int number(json *j, int64_t *v) {
    blank(j);
    *v = 0;
    const char *start = j->at;
    while (j->at < j->end && *j->at >= '0' && *j->at <= '9')
        if (__builtin_mul_overflow(*v, 10, v) || __builtin_add_overflow(*v, *j->at++ - '0', v)) return 0;
    return j->at > start;
}

static int same(const char *s, size_t n, const char *word) { return n == strlen(word) && !memcmp(s, word, n); }

/* the header of a .safetensors file, `length` bytes at `at`: each parameter's dtype, shape
 * and place checked, its bytes read into dests */
static int safetensors_header(struct DLC_INSTANCE *m, const source *src, const char *at, uint64_t length,
                              void *const *dests) {
    uint64_t size = src->n - 8 - length;
    int found[DLC_N_PARAMS + 1] = {0};
    char extra[EXTRA_SHOWN] = "";
    json j = {at, at + length};
    const char *key, *s;
    size_t kn, sn;
    if (!take(&j, '{')) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
    if (!take(&j, '}')) do {          /* each tensor (or __metadata__): a name and an object */
        if (!text(&j, &key, &kn) || !take(&j, ':') || !take(&j, '{'))
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
        int meta = same(key, kn, "__metadata__"), p = -1;
        for (int i = 0; i < DLC_N_PARAMS && !meta; i++) if (same(key, kn, PARAMS[i].name)) p = i;
        const char *dtype = NULL;
        size_t dn = 0;
        int64_t shape[32], rank = 0, begin = -1, end = -1;
        if (!take(&j, '}')) do {        /* its fields, up to its closing brace */
            if (!text(&j, &s, &sn) || !take(&j, ':'))
                return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
            if (meta || same(s, sn, "dtype")) {
                const char *v;
                size_t vn;
                if (!text(&j, &v, &vn)) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
                if (!meta) dtype = v, dn = vn;
            } else if (same(s, sn, "shape") || same(s, sn, "data_offsets")) {
                int64_t v[32];
                int k = 0;
                if (!take(&j, '[')) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
                if (!take(&j, ']')) {
                    do {
                        if (k == 32 || !number(&j, &v[k++]))
                            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
                    } while (take(&j, ','));
                    if (!take(&j, ']')) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
                }
                if (same(s, sn, "shape")) memcpy(shape, v, sizeof(int64_t) * (size_t)(rank = k));
                else if (k == 2) begin = v[0], end = v[1];
            } else return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: a damaged safetensors header");
        } while (take(&j, ',') || (!take(&j, '}') && (j.at = j.end)));      /* the end: the next name fails */
        if (p < 0 && !meta && !known_elsewhere((const unsigned char *)key, kn))
            note_extra(extra, (const unsigned char *)key, kn);
        if (p < 0) continue;
        const dlc_param *q = &PARAMS[p];
        if (found[p]) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: parameter %s is there twice", q->name);
        if (!dtype || !same(dtype, dn, q->st)) {
            char got[32];
            file_text(got, sizeof got, dtype ? dtype : "?", dtype ? dn : 1);
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: parameter %s is %s, the model's is %s", q->name, got, q->st);
        }
        char got[256], want[256];
        if (!shape_is(q, shape, (int)rank, got, want))
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: parameter %s has shape %s, the model's is %s", q->name, got, want);
        if (begin < 0 || end < begin || (uint64_t)end > size || end - begin != q->count * q->itemsize)
            return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: the bytes of parameter %s are not in the file", q->name);
        int status = source_read(m, src, 8 + length + (uint64_t)begin, (uint64_t)(end - begin), dests[p]);
        if (status) return status;
        found[p] = 1;
    } while (take(&j, ',') || (!take(&j, '}') && (j.at = j.end)));
    for (int i = 0; i < DLC_N_PARAMS; i++)
        if (!found[i]) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: no parameter %s", PARAMS[i].name);
    return *extra ? refuse_extra(m, extra) : DLC_OK;
}

/* the parameters of a .safetensors file (`first`: its first 8 bytes) into dests */
static int safetensors_arrays(struct DLC_INSTANCE *m, const source *src, const unsigned char *first, void *const *dests) {
    uint64_t length = le(first, 8);
    if (length > src->n - 8) return fail(m, DLC_ERROR_WEIGHTS, "checkpoint: truncated (its safetensors header is cut)");
    char *header = malloc((size_t)length + 1);
    if (!header) return fail(m, DLC_ERROR_MEMORY, "out of memory reading the checkpoint");
    int status = source_read(m, src, 8, length, header);
    if (!status) status = safetensors_header(m, src, header, length, dests);
    free(header);
    return status;
}

/* The parameters from a checkpoint, .npz or .safetensors (told by their first bytes), read
 * into one new block; the instance's are replaced only when all were read. */
static int load_checkpoint(struct DLC_INSTANCE *m, const source *src) {
    unsigned char first[9];
    int64_t total = 0;
    for (int i = 0; i < DLC_N_PARAMS; i++) total += (PARAMS[i].count * PARAMS[i].itemsize + ALIGN - 1) / ALIGN * ALIGN;
    unsigned char *block = NULL;
    if (total && posix_memalign((void **)&block, ALIGN, (size_t)total))
        return fail(m, DLC_ERROR_MEMORY, "out of memory for the parameters (%lld bytes)", (long long)total);
    void *dests[DLC_N_PARAMS + 1];
    for (int i = 0, off = 0; i < DLC_N_PARAMS; i++) {
        dests[i] = block + off;
        off += (int)((PARAMS[i].count * PARAMS[i].itemsize + ALIGN - 1) / ALIGN * ALIGN);
    }
    int found[DLC_N_PARAMS + 1] = {0}, status = source_read(m, src, 0, src->n < 9 ? src->n : 9, first);
    if (!status)
        status = src->n >= 4 && !memcmp(first, "PK", 2) ? npz_arrays(m, src, dests, found, NULL, DLC_N_PARAMS)
            : src->n >= 9 && first[8] == '{' ? safetensors_arrays(m, src, first, dests)
            : fail(m, DLC_ERROR_WEIGHTS, "checkpoint: neither a dlc checkpoint (.npz) nor a .safetensors file");
    if (status) { free(block); return status; }
    free(m->weights);
    m->weights = block;
    for (int i = 0; i < DLC_N_PARAMS; i++) m->params[i] = dests[i];
    return DLC_OK;
}

/* the parameters from the caller's bytes or from a file */
static int load_source(struct DLC_INSTANCE *m, const char *path, const void *bytes, size_t n,
                       int (*load)(struct DLC_INSTANCE *, const source *)) {
    source src = {bytes, -1, n};
    int status = bytes ? DLC_OK : source_open(m, path, &src);
    if (!status) status = load(m, &src);
    source_close(&src);
    return status;
}

/* ---- the thread pool (compiler/native/codegen/threadpool.py): one per library -------- */
#if !DLC_N_UPDATE_BUFFERS
/* its workers are ended and joined when the library is unloaded (dlclose) or the program
 * exits, so that none is left running code that is being unmapped */
__attribute__((destructor)) static void stop_pool(void) { DLC_POOL_STOP(); }
#endif

/* ---- instances ---------------------------------------------------------------------- */
static struct DLC_INSTANCE no_memory = {"out of memory for a model instance", DLC_ERROR_MEMORY, 1};

/* a new instance in *out; NULL when memory ran out (*out is then the static one that says so) */
static struct DLC_INSTANCE *new_instance(struct DLC_INSTANCE **out) {
    struct DLC_INSTANCE *m = *out = calloc(1, sizeof *m);
    if (!m) { *out = &no_memory; return NULL; }
    /* one thread unless told: the pool's workers fall asleep between calls far apart
     * (DLC_SPIN), and a prediction of one example does not pay for waking them */
    m->threads = 1;
    return m;
}

/* a create refused before anything is read: still an instance, which holds why */
static int refused(struct DLC_INSTANCE **out, const char *why) {
    if (!out) return DLC_ERROR_ARGUMENT;
    struct DLC_INSTANCE *m = new_instance(out);
    return m ? (m->status = fail(m, DLC_ERROR_ARGUMENT, "%s", why)) : DLC_ERROR_MEMORY;
}

static int instance(struct DLC_INSTANCE **out, const char *path, const void *bytes, size_t n) {
    if (!out) return DLC_ERROR_ARGUMENT;
    struct DLC_INSTANCE *m = new_instance(out);
    if (!m) return DLC_ERROR_MEMORY;
    m->status = check_cpu(m);
    if (!m->status) {
        if ((bytes || path) && DLC_INT8)
            m->status = fail(m, DLC_ERROR_ARGUMENT, "this library's products are int8, their weights and scales "
                             "compiled in with every other weight (dlc build --int8): it takes no checkpoint "
                             "(create it with NULL)");
        else if (bytes || path) m->status = load_source(m, path, bytes, n, load_checkpoint);
        else if (DLC_EMBEDDED)
            for (int i = 0; i < DLC_N_PARAMS; i++) m->params[i] = (void *)(DLC_WEIGHTS + PARAMS[i].embedded);
        else m->status = fail(m, DLC_ERROR_ARGUMENT, "this library has no weights inside (it was built without "
                              "--embed-weights): give the path of a checkpoint");
    }
    return m->status;
}

#if DLC_N_UPDATE_BUFFERS
static void release_training(struct DLC_INSTANCE *m);
#endif

static void release(struct DLC_INSTANCE *m) {
    if (!m || m == &no_memory) return;
#if DLC_N_UPDATE_BUFFERS
    release_training(m);
#endif
#ifdef DLC_TRAINER_DESTROY
    DLC_TRAINER_DESTROY(m->trainer);
#endif
    free(m->weights);
    free(m->arena);
    free(m->packs);
    for (int i = 0; i < DLC_N_INPUTS; i++) free(m->scaled[i]);
    free(m);
}

/* A weight changed: the step's first kernel packs the weights again (kernels/gemm WeightPacksKernel),
 * each as a product needs it: their flags cleared. */
static void weights_changed(struct DLC_INSTANCE *m) {
#if DLC_WEIGHTS_READY >= 0
    if (m && m->packs) memset(m->table[DLC_WEIGHTS_READY], 0, (size_t)m->counts[DLC_WEIGHTS_READY] * sizeof(int32_t));
#else
    (void)m;
#endif
}

/* the lowest offset where `size` bytes overlap none of the n ranges [lo, hi), sorted by lo */
static int64_t lowest_gap(const int64_t (*ranges)[2], int n, int64_t size) {
    int64_t at = 0;
    for (int i = 0; i < n && ranges[i][0] < at + size; i++)
        if (ranges[i][1] > at) at = ranges[i][1];
    return at;
}

/* The element count of every buffer and the arena for the symbols' values. Temporaries
 * share memory as the engine's arena does (compiler/native/memory.py): two whose kernels'
 * intervals (LIVE) are disjoint may overlap; each is placed, largest first, at the lowest
 * offset clear of every placed one live at the same time. Outputs follow. The packed
 * weights have a block of their own, made at the first call and kept. */
static int lay_out(struct DLC_INSTANCE *m, const int64_t *values) {
    if (m->laid && !memcmp(m->values, values, sizeof(int64_t) * DLC_N_SYMBOLS)) return DLC_OK;
    int64_t bytes[DLC_N_BUFFERS + 1], offsets[DLC_N_BUFFERS + 1], total = 0, outputs = 0, packed = 0;
    int order[DLC_N_BUFFERS + 1], placed = 0, temps = 0;
    for (int b = 0; b < DLC_N_BUFFERS; b++) {
        int64_t count;
        if (poly_value(BUFFERS[b].size, values, &count) || count < 0 ||
            __builtin_mul_overflow(count > 0 ? count : 1, (int64_t)BUFFERS[b].itemsize, &bytes[b]) ||
            bytes[b] > MOST_BYTES)
            return fail(m, DLC_ERROR_MEMORY, "these input sizes need more memory than this library allocates");
        m->counts[b] = count;
        bytes[b] = (bytes[b] + ALIGN - 1) / ALIGN * ALIGN;
        offsets[b] = 0;
        if (BUFFERS[b].kind == KIND_PACKED) {
            offsets[b] = packed;
            if (__builtin_add_overflow(packed, bytes[b], &packed) || packed > MOST_BYTES)
                return fail(m, DLC_ERROR_MEMORY, "the packed weights need more memory than this library allocates");
        }
        if (BUFFERS[b].kind == KIND_TEMP && LIVE[b][0] >= 0) {     /* by size, largest first */
            int k = temps++;
            for (; k > 0 && bytes[order[k - 1]] < bytes[b]; k--) order[k] = order[k - 1];
            order[k] = b;
        }
    }
    int64_t (*ranges)[2] = malloc(sizeof *ranges * (size_t)(temps + 1));
    if (!ranges) return fail(m, DLC_ERROR_MEMORY, "out of memory laying out the buffers");
    for (int i = 0; i < temps; i++, placed++) {
        int b = order[i], n = 0;
        for (int j = 0; j < placed; j++) {                /* the placed ones live at the same time, by offset */
            int c = order[j];
            if (LIVE[c][0] > LIVE[b][1] || LIVE[c][1] < LIVE[b][0]) continue;
            int k = n++;
            for (; k > 0 && ranges[k - 1][0] > offsets[c]; k--) ranges[k][0] = ranges[k - 1][0], ranges[k][1] = ranges[k - 1][1];
            ranges[k][0] = offsets[c], ranges[k][1] = offsets[c] + bytes[c];
        }
        offsets[b] = lowest_gap((const int64_t (*)[2])ranges, n, bytes[b]);
        if (offsets[b] + bytes[b] > total) total = offsets[b] + bytes[b];
    }
    free(ranges);
    if (total > MOST_BYTES)
        return fail(m, DLC_ERROR_MEMORY, "these input sizes need more memory than this library allocates");
    for (int b = 0; b < DLC_N_BUFFERS; b++)
        if (BUFFERS[b].kind == KIND_OUTPUT) {
            offsets[b] = total + outputs;
            if (__builtin_add_overflow(outputs, bytes[b], &outputs) || total + outputs > MOST_BYTES)
                return fail(m, DLC_ERROR_MEMORY, "these input sizes need more memory than this library allocates");
        }
    total += outputs;
    if (packed && !m->packs) {          /* zeroed: the flag says the weights are not packed yet */
        void *packs = NULL;
        int huge = (size_t)packed >= HUGE_FROM;
        if (posix_memalign(&packs, huge ? HUGE_PAGE : ALIGN, (size_t)packed))
            return fail(m, DLC_ERROR_MEMORY, "out of memory: the packed weights need %lld bytes", (long long)packed);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (huge) madvise(packs, (size_t)packed / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);  /* a hint: refused, 4 KB pages */
#endif
        memset(packs, 0, (size_t)packed);
        m->packs = packs;
        for (int b = 0; b < DLC_N_BUFFERS; b++)     /* their places, fixed from now on (weights_changed) */
            if (BUFFERS[b].kind == KIND_PACKED) m->table[b] = m->packs + offsets[b];
    }
    void *arena = NULL;
    if (posix_memalign(&arena, ALIGN, (size_t)(total ? total : ALIGN)))
        return fail(m, DLC_ERROR_MEMORY, "out of memory: these input sizes need %lld bytes", (long long)total);
    free(m->arena);
    m->arena = arena;
    for (int b = 0; b < DLC_N_BUFFERS; b++) {
        if (BUFFERS[b].kind == KIND_TEMP || BUFFERS[b].kind == KIND_OUTPUT) m->table[b] = m->arena + offsets[b];
        else if (BUFFERS[b].kind == KIND_CONST) m->table[b] = (void *)(DLC_CONSTS + BUFFERS[b].data);
        else if (BUFFERS[b].kind == KIND_PARAM) m->table[b] = m->params[BUFFERS[b].data];
    }
    for (int f = 0; f < DLC_N_FAULTS; f++) m->table[DLC_N_BUFFERS + f] = (void *)(intptr_t)(f + 1);
    for (int s = 0; s < DLC_N_STEP_SYMBOLS; s++) m->sizes[1 + s] = values[s];
    memcpy(m->values, values, sizeof(int64_t) * DLC_N_SYMBOLS);
    m->arena_bytes = total;
    m->laid = 1;
    return DLC_OK;
}

/* Bind the symbols' values from the inputs' shapes, checking every shape (never reading
 * more than an input's rank of dims) and the size constraints. */
static int bind_shapes(struct DLC_INSTANCE *m, const int64_t *const *shapes, int64_t *values) {
    int bound[DLC_N_SYMBOLS + 1] = {0};
    char got[512];
    for (int i = 0; i < DLC_N_INPUTS; i++) {
        const dlc_input *in = &INPUTS[i];
        if (!shapes[i]) return fail(m, DLC_ERROR_ARGUMENT, "input '%s' (%s): a null pointer", in->name, in->type);
        for (int a = 0; a < in->rank; a++) {
            int64_t d = shapes[i][a];
            int s = in->dims[a].symbol;
            if (d < 1 || (s >= 0 && bound[s] && values[s] != d)) {      /* the message's text only for a message */
                shape_text(got, sizeof got, shapes[i], in->rank);
                if (d < 1) return fail(m, DLC_ERROR_SHAPE, "input '%s' expects %s, got shape %s: every dim must be at "
                                       "least 1", in->name, in->type, got);
                return fail(m, DLC_ERROR_SHAPE, "input '%s' expects %s with %s = %lld, got shape %s", in->name, in->type,
                            SYMBOLS[s].name, (long long)values[s], got);
            }
            if (s < 0) continue;
            values[s] = d, bound[s] = 1;
        }
    }
    for (int s = 0; s < DLC_N_SYMBOLS; s++)
        if (SYMBOLS[s].from >= 0) values[s] = (values[SYMBOLS[s].from] + SYMBOLS[s].divisor - 1) / SYMBOLS[s].divisor;
    for (int i = 0; i < DLC_N_INPUTS; i++) {
        const dlc_input *in = &INPUTS[i];
        int64_t count = 1, want;
        for (int a = 0; a < in->rank; a++) {
            if (in->dims[a].symbol < 0 && (poly_value(in->dims[a].poly, values, &want) || want != shapes[i][a])) {
                shape_text(got, sizeof got, shapes[i], in->rank);
                return fail(m, DLC_ERROR_SHAPE, "input '%s' expects %s, got shape %s", in->name, in->type, got);
            }
            if (__builtin_mul_overflow(count, shapes[i][a], &count) || count > MOST_BYTES)
                return fail(m, DLC_ERROR_SHAPE, "input '%s' has too many elements", in->name);
        }
    }
    for (int c = 0; c < DLC_N_CONSTRAINTS; c++) {
        int64_t v;
        if (poly_value(CONSTRAINTS[c].dim, values, &v))
            return fail(m, DLC_ERROR_SHAPE, "%s: error: the inputs are too large for this %s", CONSTRAINTS[c].where,
                        CONSTRAINTS[c].op);
        if (v < CONSTRAINTS[c].least)
            return fail(m, DLC_ERROR_SHAPE, "%s: error: the inputs are too %s for this %s: it needs %s", CONSTRAINTS[c].where,
                        CONSTRAINTS[c].word, CONSTRAINTS[c].op, CONSTRAINTS[c].text);
    }
    return DLC_OK;
}

static int64_t input_count(int i, const int64_t *const *shapes) {
    int64_t count = 1;
    for (int a = 0; a < INPUTS[i].rank; a++) count *= shapes[i][a];       /* bound by bind_shapes */
    return count;
}

/* Every integer input within what the model takes (LIMITS), as dlc predict and dlc train
 * check their data: an id beyond a one_hot's classes or a loss's would be no class,
 * silently, not an error (a gather checks its own index). The shapes are bind_shapes's. */
static int check_limits(struct DLC_INSTANCE *m, const void *const *inputs, const int64_t *const *shapes) {
    for (int i = 0; i < DLC_N_INPUTS; i++) {
        const dlc_limit *l = &LIMITS[i];
        int64_t count = l->bound >= 0 ? input_count(i, shapes) : 0;
        for (int64_t k = 0; k < count; k++) {
            int64_t v = INPUTS[i].itemsize == 8 ? ((const int64_t *)inputs[i])[k] : ((const int32_t *)inputs[i])[k];
            int ignored = 0;
            for (int j = 0; j < l->ignored; j++) ignored |= v == l->values[j];
            if ((v < 0 || v >= l->bound) && !ignored)
                return fail(m, DLC_ERROR_INDEX, "input '%s' holds %lld (element %lld), but the model takes 0 to %lld "
                            "there", INPUTS[i].name, (long long)v, (long long)k, (long long)(l->bound - 1));
        }
    }
    return DLC_OK;
}

/* An input as the step takes it: with the transform inside (dlc build --transform), the
 * caller's values times the training data's scale (SCALES: a float input's), in the
 * input's type as the data sources scale 8-bit images, into the instance's own copy; else
 * the caller's array itself. */
static int step_input(struct DLC_INSTANCE *m, int i, const void *input, const int64_t *const *shapes) {
#if DLC_TRANSFORM
    if (SCALES[i] != 1.0) {
        int64_t count = input_count(i, shapes);
        if (count > m->scaled_count[i]) {
            void *bigger = malloc((size_t)count * (size_t)INPUTS[i].itemsize);
            if (!bigger) return fail(m, DLC_ERROR_MEMORY, "out of memory for input '%s' scaled", INPUTS[i].name);
            free(m->scaled[i]);
            m->scaled[i] = bigger, m->scaled_count[i] = count;
        }
        if (INPUTS[i].itemsize == 8) {
            const double *raw = input;
            double *out = m->scaled[i];
            for (int64_t k = 0; k < count; k++) out[k] = raw[k] * SCALES[i];
        } else {
            const float *raw = input, scale = (float)SCALES[i];
            float *out = m->scaled[i];
            for (int64_t k = 0; k < count; k++) out[k] = raw[k] * scale;
        }
        input = m->scaled[i];
    }
#else
    (void)shapes;
#endif
    m->table[INPUTS[i].buffer] = (void *)input;
    return DLC_OK;
}

/* The inputs bound (bind_shapes), their ids checked (check_limits), the buffers laid out
 * for their sizes and the inputs in the pointer table. */
static int bind_inputs(struct DLC_INSTANCE *m, const void *const *inputs, const int64_t *const *shapes,
                       int64_t *values) {
    for (int i = 0; i < DLC_N_INPUTS; i++)
        if (!inputs[i]) return fail(m, DLC_ERROR_ARGUMENT, "input '%s' (%s): a null pointer", INPUTS[i].name, INPUTS[i].type);
    int status = bind_shapes(m, shapes, values);
    if (!status) status = check_limits(m, inputs, shapes);
    if (!status) status = lay_out(m, values);
    for (int i = 0; !status && i < DLC_N_INPUTS; i++) status = step_input(m, i, inputs[i], shapes);
    return status;
}

/* Output o's shape (its rank of dims) and element count for the bound symbols' values */
static int output_shape(struct DLC_INSTANCE *m, int o, const int64_t *values, int64_t *shape, int64_t *count) {
    const dlc_output *out = &OUTPUTS[o];
    *count = 1;
    for (int a = 0; a < out->rank; a++)
        if (poly_value(out->dims[a], values, &shape[a]) || __builtin_mul_overflow(*count, shape[a], count) ||
            *count > MOST_BYTES)
            return fail(m, DLC_ERROR_MEMORY, "output '%s' would have more elements than this library allocates",
                        out->name);
    return DLC_OK;
}

/* Run the step on the pointer table as it is; an index check that failed names its line. */
static int run_step(struct DLC_INSTANCE *m, const int64_t *values) {
    for (int k = 0; k < DLC_N_ARGUMENTS; k++) m->args[k] = m->table[ARGUMENTS[k]];
    m->sizes[0] = 0;            /* the instance's own fault flag: instances run their steps at once */
    DLC_STEP(m->args, m->sizes + 1, m->threads);
    int64_t fault = m->sizes[0];
    if (fault > 0 && fault <= DLC_N_FAULTS) {
        int64_t count = 0;
        poly_value(FAULTS[fault - 1].count, values, &count);
        return fail(m, DLC_ERROR_INDEX, "%s: error: %s: index out of range [0, %lld)", FAULTS[fault - 1].where,
                    FAULTS[fault - 1].what, (long long)count);
    }
    return DLC_OK;
}

#if !DLC_N_UPDATE_BUFFERS     /* the train step's unit of a --train library does not predict */
static int predict(struct DLC_INSTANCE *m, const void *const *inputs, const int64_t *const *shapes,
                   void *const *outputs, const int64_t *capacities, int64_t *const *output_shapes) {
    if (!m) return DLC_ERROR_ARGUMENT;
    if (m->status) return m->status;
    m->message[0] = 0;
    if ((DLC_N_INPUTS && (!inputs || !shapes)) || (DLC_N_OUTPUTS && (!outputs || !capacities || !output_shapes)))
        return fail(m, DLC_ERROR_ARGUMENT, "predict: an array of inputs, shapes or outputs is a null pointer");
    int64_t values[DLC_N_SYMBOLS + 1] = {0};
    char got[512];
    int status = bind_inputs(m, inputs, shapes, values);
    if (status) return status;
    int64_t oshape[DLC_N_OUTPUTS + 1][16], ocount[DLC_N_OUTPUTS + 1];
    for (int o = 0; o < DLC_N_OUTPUTS; o++) {
        const dlc_output *out = &OUTPUTS[o];
        if ((status = output_shape(m, o, values, oshape[o], &ocount[o]))) return status;
        if (!outputs[o] || !output_shapes[o])
            return fail(m, DLC_ERROR_ARGUMENT, "output '%s': a null pointer", out->name);
        if (capacities[o] < ocount[o]) {
            shape_text(got, sizeof got, oshape[o], out->rank);
            return fail(m, DLC_ERROR_SHAPE, "output '%s' has shape %s, %lld elements; its buffer holds %lld", out->name,
                        got, (long long)ocount[o], (long long)capacities[o]);
        }
    }
    status = run_step(m, values);
    if (status) return status;
    for (int o = 0; o < DLC_N_OUTPUTS; o++) {
        memcpy(outputs[o], m->table[OUTPUTS[o].buffer], (size_t)(ocount[o] * OUTPUTS[o].itemsize));
        memcpy(output_shapes[o], oshape[o], sizeof(int64_t) * (size_t)OUTPUTS[o].rank);
    }
    return DLC_OK;
}

/* The outputs' shapes and element counts for inputs of these shapes: nothing is run, no
 * memory is allocated; written only on success (counts: unless NULL). */
static int outputs_for(struct DLC_INSTANCE *m, const int64_t *const *shapes, int64_t *const *output_shapes,
                       int64_t *counts) {
    if (!m) return DLC_ERROR_ARGUMENT;
    if (m->status) return m->status;
    m->message[0] = 0;
    if ((DLC_N_INPUTS && !shapes) || (DLC_N_OUTPUTS && !output_shapes))
        return fail(m, DLC_ERROR_ARGUMENT, "output_shapes: an array of shapes is a null pointer");
    int64_t values[DLC_N_SYMBOLS + 1] = {0}, oshape[DLC_N_OUTPUTS + 1][16], ocount[DLC_N_OUTPUTS + 1];
    int status = bind_shapes(m, shapes, values);
    for (int o = 0; !status && o < DLC_N_OUTPUTS; o++) {
        if (!output_shapes[o]) return fail(m, DLC_ERROR_ARGUMENT, "output '%s': a null pointer", OUTPUTS[o].name);
        status = output_shape(m, o, values, oshape[o], &ocount[o]);
    }
    if (status) return status;
    for (int o = 0; o < DLC_N_OUTPUTS; o++) {
        memcpy(output_shapes[o], oshape[o], sizeof(int64_t) * (size_t)OUTPUTS[o].rank);
        if (counts) counts[o] = ocount[o];
    }
    return DLC_OK;
}
#endif
