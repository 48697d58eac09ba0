/* The training part of a `dlc build --train` library (runtime/deploy/library.py): the
 * run-time of the train step's translation unit, after library.c. Its tables come from
 * library.py (FLAT_AT, SLOTS, UPDATE, GROUPS, VALUES, STATS, GRADS and the DLC_* macros)
 * and runtime/deploy/training.py (schedule_lr, step_scalars: the learning-rate schedule and
 * the optimizer's per-step scalars, ported from runtime/training/optim.py to the bit).
 *
 * As the native engine lays them out (runtime/engines/native.py): every parameter lives in
 * one flat f32 array, the trained ones first; the gradient of the trained ones in another,
 * each optimizer state slot in another; the step's driver ends with the optimizer's update
 * over those arrays (compiler/native/update.py), skipped when an index check failed. */

static void *zeroed(int64_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, ALIGN, (size_t)(bytes > 0 ? bytes : ALIGN))) return NULL;
    memset(p, 0, (size_t)(bytes > 0 ? bytes : ALIGN));
    return p;
}

static void release_training(struct DLC_INSTANCE *m) {
    free(m->flat);
    free(m->grads);
    for (int s = 0; s < DLC_N_SLOTS; s++) free(m->state[s]);
    free(m->group);
    for (int j = 0; j < DLC_N_UPDATE_BUFFERS; j++)
        if (UPDATE[j].role == UPDATE_TEMP) free(m->update[j]);
}

/* The flat arrays, the parameters moved into them, and the update's slots of the pointer table. */
static int setup_training(struct DLC_INSTANCE *m) {
    m->flat = zeroed(DLC_N_FLAT * 4);
    m->grads = zeroed(DLC_N_TRAINED * 4);
    m->group = zeroed(DLC_N_TRAINED * 4);
    int ok = m->flat && m->grads && m->group;
    for (int s = 0; s < DLC_N_SLOTS; s++) ok &= (m->state[s] = zeroed(DLC_N_TRAINED * 4)) != NULL;
    if (!ok) return fail(m, DLC_ERROR_MEMORY, "out of memory for the parameters, gradients and optimizer state");
    for (int i = 0; i < DLC_N_PARAMS; i++) {
        memcpy(m->flat + FLAT_AT[i], m->params[i], (size_t)(PARAMS[i].count * 4));
        m->params[i] = m->flat + FLAT_AT[i];
    }
    free(m->weights);
    m->weights = NULL;
    for (int g = 0; g < DLC_N_GROUPS; g++)
        for (int64_t k = 0; k < GROUPS[g].count; k++) m->group[GROUPS[g].at + k] = GROUPS[g].group;
    for (int j = 0; j < DLC_N_UPDATE_BUFFERS; j++) {
        const dlc_update *u = &UPDATE[j];
        void *p = u->role == UPDATE_PARAM ? (void *)m->flat : u->role == UPDATE_GRAD ? (void *)m->grads
            : u->role == UPDATE_SLOT ? (void *)m->state[u->index] : u->role == UPDATE_GROUP ? (void *)m->group
            : u->role == UPDATE_SCALAR ? (void *)&m->scalars[u->index] : u->role == UPDATE_CONST ? (void *)u->data
            : u->role == UPDATE_TEMP ? zeroed(u->bytes) : NULL;
        if (u->role == UPDATE_TEMP && !p) return fail(m, DLC_ERROR_MEMORY, "out of memory for the optimizer's update");
        m->update[j] = p;
        m->table[DLC_N_BUFFERS + DLC_N_FAULTS + j] = p;
    }
    m->seed = DLC_SEED;
    m->per_epoch = DLC_PER_EPOCH, m->total = DLC_TOTAL;
    m->laid = 0;
    return DLC_OK;
}

/* where `text` is in [at, end), or NULL */
static const unsigned char *find(const unsigned char *at, const unsigned char *end, const char *text) {
    size_t k = strlen(text);
    for (; (uint64_t)(end - at) >= k; at++)
        if (!memcmp(at, text, k)) return at;
    return NULL;
}

/* the count after `key` in the JSON text [at, end), or -1 */
static int64_t json_count(const unsigned char *at, const unsigned char *end, const char *key) {
    const unsigned char *d = find(at, end, key);
    int64_t v = 0;
    if (!d || (d += strlen(key)) == end || *d < '0' || *d > '9') return -1;
    for (; d < end && *d >= '0' && *d <= '9'; d++)
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *d - '0', &v)) return -1;
    return v;
}

/* What a dlc checkpoint holds of a run besides the parameters, to continue it: the
 * optimizer state of every trained parameter (all or none: none, a fresh run's zeros) and
 * the step count of its metadata, unless the run's optimizer is another (whose state means
 * nothing here, as dlc train --resume says). */
static int load_training_state(struct DLC_INSTANCE *m, const source *src) {
    unsigned char first[2];
    if (src->n < 4 || source_read(m, src, 0, 2, first) || memcmp(first, "PK", 2))
        return DLC_OK;                                    /* a .safetensors file: parameters only */
    uint64_t at = 0, end, entries, data;
    unsigned char *dir, *meta = NULL;
    int status = zip_directory(m, src, &dir, &end, &entries);
    zip_entry e = {0};
    for (uint64_t k = 0; !status && k < entries && !meta; k++)
        if (!(status = zip_next(m, dir, &at, end, &e)) && member_is(&e, "", "meta", NULL) &&
            !(status = zip_member(m, src, &e, "the metadata", &data))) {
            if (!(meta = malloc((size_t)e.csize + 1))) status = fail(m, DLC_ERROR_MEMORY, "out of memory reading the checkpoint");
            else if (!(status = source_read(m, src, data, e.csize, meta)))
                status = zip_crc(m, &e, "the metadata", meta, e.csize, NULL);
        }
    free(dir);
    if (!status && meta && find(meta, meta + e.csize, "\"optimizer\": \"") &&
        !find(meta, meta + e.csize, "\"optimizer\": \"" DLC_OPTIMIZER "\"")) {
        free(meta);
        return DLC_OK;
    }
    int have = 0;
    for (int s = 0; !status && s < DLC_N_SLOTS; s++) {
        void *dests[DLC_N_PARAMS + 1];
        int found[DLC_N_PARAMS + 1] = {0};
        for (int i = 0; i < DLC_N_TRAINED_PARAMS; i++) dests[i] = m->state[s] + FLAT_AT[i];
        status = npz_arrays(m, src, dests, found, SLOTS[s], DLC_N_TRAINED_PARAMS);
        for (int i = 0; i < DLC_N_TRAINED_PARAMS; i++) have += found[i];
    }
    if (!status && have && have != DLC_N_SLOTS * DLC_N_TRAINED_PARAMS)
        status = fail(m, DLC_ERROR_WEIGHTS, "checkpoint: it holds the optimizer state of some trained parameters, not "
                      "of all (opt:NAME:SLOT arrays)");
    int64_t step = meta && !status ? json_count(meta, meta + e.csize, "\"step\": ") : -1;
    free(meta);
    if (!status) m->steps = step > 0 ? step : 0;
    return status;
}

/* setup_training, then the run a checkpoint continues (load_training_state) */
static int start_training(struct DLC_INSTANCE *m, const char *path, const void *bytes, size_t size) {
    int status = setup_training(m);
    if (status || (!path && !bytes)) return status;
    return load_source(m, path, bytes, size, load_training_state);
}

static int param_named(const char *name) {
    for (int i = 0; name && i < DLC_N_PARAMS; i++)
        if (!strcmp(PARAMS[i].name, name)) return i;
    return -1;
}

static int train_step(struct DLC_INSTANCE *m, const void *const *inputs, const int64_t *const *shapes,
                      double *values, int64_t capacity) {
    if (m->status) return m->status;
    m->message[0] = 0;
    if (DLC_N_INPUTS && (!inputs || !shapes))
        return fail(m, DLC_ERROR_ARGUMENT, "train_step: an array of inputs or shapes is a null pointer");
    if (DLC_N_VALUES && values && capacity < DLC_N_VALUES)
        return fail(m, DLC_ERROR_SHAPE, "train_step: the values are %d (the loss and metrics); their buffer holds %lld",
                    DLC_N_VALUES, (long long)capacity);
    int64_t sizes[DLC_N_SYMBOLS + 1] = {0};
    int status = bind_inputs(m, inputs, shapes, sizes);
    if (status) return status;
    for (int g = 0; g < DLC_N_GRADS; g++) m->table[GRADS[g].buffer] = m->grads + FLAT_AT[GRADS[g].param];
#if DLC_RNG_BUFFER >= 0
    m->key[0] = m->seed, m->key[1] = (int32_t)(m->steps + 1);      /* the trainer's key of step steps + 1 */
    m->table[DLC_RNG_BUFFER] = m->key;
#endif
    step_scalars(schedule_lr(m->steps, (double)m->per_epoch, (double)m->total), m->steps + 1, m->scalars);
    status = run_step(m, sizes);
    if (status) return status;          /* the update did not run: the parameters are as they were */
    for (int s = 0; s < DLC_N_STATS; s++)        /* the batch statistics the step updates */
        memcpy(m->params[STATS[s].param], m->table[STATS[s].buffer], (size_t)(PARAMS[STATS[s].param].count * 4));
    for (int v = 0; values && v < DLC_N_VALUES; v++) values[v] = *(const float *)m->table[VALUES[v].buffer];
    m->steps++;
    return DLC_OK;
}

static int set_schedule(struct DLC_INSTANCE *m, int64_t per_epoch, int64_t total) {
    if (m->status) return m->status;
    if (per_epoch < 1 || total < 1)
        return fail(m, DLC_ERROR_ARGUMENT, "set_schedule: %lld steps per epoch, %lld in all; give at least 1 of each",
                    (long long)per_epoch, (long long)total);
    m->per_epoch = per_epoch, m->total = total;
    return DLC_OK;
}

static int check_parameter(struct DLC_INSTANCE *m, const char *what, const char *name, const void *data) {
    if (m->status) return m->status;
    m->message[0] = 0;
    if (!name || !data) return fail(m, DLC_ERROR_ARGUMENT, "%s: a null pointer", what);
    int i = param_named(name);
    if (i < 0) return fail(m, DLC_ERROR_ARGUMENT, "%s: the model has no parameter '%.200s'", what, name);
    return DLC_OK;
}

static int get_parameter(struct DLC_INSTANCE *m, const char *name, float *data, int64_t capacity, int64_t *shape,
                         int *rank) {
    int status = check_parameter(m, "get_parameter", name, data);
    if (status) return status;
    const dlc_param *p = &PARAMS[param_named(name)];
    if (capacity < p->count)
        return fail(m, DLC_ERROR_SHAPE, "get_parameter: %s has %lld elements; the buffer holds %lld", name,
                    (long long)p->count, (long long)capacity);
    memcpy(data, m->params[param_named(name)], (size_t)(p->count * 4));
    if (shape) memcpy(shape, p->shape, sizeof(int64_t) * (size_t)p->rank);
    if (rank) *rank = p->rank;
    return DLC_OK;
}

static int set_parameter(struct DLC_INSTANCE *m, const char *name, const float *data, const int64_t *shape, int rank) {
    int status = check_parameter(m, "set_parameter", name, data);
    if (status) return status;
    const dlc_param *p = &PARAMS[param_named(name)];
    if (rank < 0 || rank > DLC_PARAMETER_MAX_RANK)         /* before a dim is read: shape holds at most that many */
        return fail(m, DLC_ERROR_SHAPE, "set_parameter: rank %d; %s has rank %d (give 0 to %d)", rank, name, p->rank,
                    DLC_PARAMETER_MAX_RANK);
    if (!shape && rank) return fail(m, DLC_ERROR_ARGUMENT, "set_parameter: a null shape");
    char got[256], want[256];
    if (!shape_is(p, shape, rank, got, want))
        return fail(m, DLC_ERROR_SHAPE, "set_parameter: %s has shape %s, got %s", name, want, got);
    memcpy(m->params[param_named(name)], data, (size_t)(p->count * 4));
    return DLC_OK;
}

/* ---- saving: the .npz dlc writes (runtime/interop/checkpoint.py), stored, with its JSON metadata */
typedef struct { unsigned char *bytes; uint64_t size, capacity; int failed; } growing;

static void put(growing *g, const void *data, uint64_t n) {
    if (g->failed) return;
    if (g->size + n > g->capacity) {
        uint64_t c = (g->size + n) * 2;
        unsigned char *b = c < (uint64_t)MOST_BYTES ? realloc(g->bytes, (size_t)c) : NULL;
        if (!b) { g->failed = 1; return; }
        g->bytes = b, g->capacity = c;
    }
    memcpy(g->bytes + g->size, data, (size_t)n);
    g->size += n;
}

static void put_le(growing *g, uint64_t v, int n) {
    unsigned char b[8];
    for (int i = 0; i < n; i++) b[i] = (unsigned char)(v >> (8 * i));
    put(g, b, (uint64_t)n);
}

/* one stored zip member, an .npy array; its central directory entry goes in `dir` */
static void member(growing *z, growing *dir, const char *name, const char *descr, const int64_t *shape, int rank,
                   const void *data, uint64_t bytes) {
    char header[512], dims[400];
    size_t at = 0;
    for (int a = 0; a < rank; a++) at += (size_t)snprintf(dims + at, sizeof dims - at, "%lld,%s", (long long)shape[a],
                                                          a + 1 < rank ? " " : "");
    if (rank > 1) dims[at - 1] = 0;                   /* (2, 3) but (5,) */
    if (!rank) dims[0] = 0;
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, dims);
    int total = (10 + n + 1 + 63) / 64 * 64;          /* numpy pads the header to 64 bytes, ending in \n */
    memset(header + n, ' ', (size_t)(total - 10 - n));
    header[total - 11] = '\n';
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)((total - 10) & 0xFF),
                               (unsigned char)((total - 10) >> 8)};
    growing npy = {0};
    put(&npy, magic, 10);
    put(&npy, header, (uint64_t)(total - 10));
    put(&npy, data, bytes);
    if (npy.failed || npy.size > 0xFFFFFFFFu || z->size > 0xFFFFFFFFu) { z->failed = 1; free(npy.bytes); return; }
    uint32_t crc = crc32_of(0, npy.bytes, npy.size);
    uint64_t local = z->size, nlen = strlen(name);
    put_le(z, 0x04034b50, 4), put_le(z, 20, 2), put_le(z, 0, 2), put_le(z, 0, 2), put_le(z, 0, 2), put_le(z, 0x21, 2);
    put_le(z, crc, 4), put_le(z, npy.size, 4), put_le(z, npy.size, 4), put_le(z, nlen, 2), put_le(z, 0, 2);
    put(z, name, nlen);
    put(z, npy.bytes, npy.size);
    put_le(dir, 0x02014b50, 4), put_le(dir, 20, 2), put_le(dir, 20, 2), put_le(dir, 0, 2), put_le(dir, 0, 2);
    put_le(dir, 0, 2), put_le(dir, 0x21, 2), put_le(dir, crc, 4), put_le(dir, npy.size, 4), put_le(dir, npy.size, 4);
    put_le(dir, nlen, 2), put_le(dir, 0, 2), put_le(dir, 0, 2), put_le(dir, 0, 2), put_le(dir, 0, 2), put_le(dir, 0, 4);
    put_le(dir, local, 4);
    put(dir, name, nlen);
    free(npy.bytes);
}

static int save(struct DLC_INSTANCE *m, const char *path) {
    if (m->status) return m->status;
    m->message[0] = 0;
    if (!path) return fail(m, DLC_ERROR_ARGUMENT, "save: a null path");
    growing z = {0}, dir = {0};
    char name[512], meta[sizeof DLC_META + 128];
    int entries = 0;
    for (int i = 0; i < DLC_N_PARAMS; i++, entries++) {
        snprintf(name, sizeof name, "param:%s.npy", PARAMS[i].name);
        member(&z, &dir, name, "<f4", PARAMS[i].shape, PARAMS[i].rank, m->params[i], (uint64_t)PARAMS[i].count * 4);
    }
    for (int i = 0; i < DLC_N_TRAINED_PARAMS; i++)
        for (int s = 0; s < DLC_N_SLOTS; s++, entries++) {
            snprintf(name, sizeof name, "opt:%s:%s.npy", PARAMS[i].name, SLOTS[s]);
            member(&z, &dir, name, "<f4", PARAMS[i].shape, PARAMS[i].rank, m->state[s] + FLAT_AT[i],
                   (uint64_t)PARAMS[i].count * 4);
        }
    int n = snprintf(meta, sizeof meta, "%s, \"step\": %lld, \"epoch\": %lld, \"batch\": %lld}", DLC_META,
                     (long long)m->steps, (long long)(m->per_epoch ? m->steps / m->per_epoch : 0),
                     (long long)(m->per_epoch ? m->steps % m->per_epoch : 0));
    int64_t length = n;
    member(&z, &dir, "meta.npy", "|u1", &length, 1, meta, (uint64_t)n);
    entries++;
    uint64_t start = z.size, size = dir.size;
    put(&z, dir.bytes, dir.size);
    put_le(&z, 0x06054b50, 4), put_le(&z, 0, 2), put_le(&z, 0, 2), put_le(&z, (uint64_t)entries, 2);
    put_le(&z, (uint64_t)entries, 2), put_le(&z, size, 4), put_le(&z, start, 4), put_le(&z, 0, 2);
    free(dir.bytes);
    if (z.failed || dir.failed) {
        free(z.bytes);
        return fail(m, DLC_ERROR_MEMORY, "save: out of memory, or a checkpoint over 4 GiB (no zip64 yet)");
    }
    /* written beside the path, then renamed over it: a crash leaves the old checkpoint whole */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(z.bytes);
        return fail(m, DLC_ERROR_ARGUMENT, "save: the path is too long");
    }
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(z.bytes, 1, (size_t)z.size, f) == (size_t)z.size;
    ok = (f && !fclose(f)) && ok;
    free(z.bytes);
    if (!ok || rename(tmp, path)) {
        int e = errno;
        remove(tmp);
        return fail(m, DLC_ERROR_ARGUMENT, "save: cannot write %.1000s: %s", path, strerror(e));
    }
    return DLC_OK;
}
