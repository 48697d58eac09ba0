/* CRC-32 (zip's: the reflected polynomial 0xEDB88320) of a library `dlc build` writes
 * (runtime/deploy/library.py puts it before library.c): checking a checkpoint's members is
 * most of `create`'s time. Where the CPU has a fast way, chosen at run time (crc_has_fast,
 * crc32_fast): on x86-64 with carry-less multiplication (PCLMULQDQ and SSE4.1, by cpuid) 64
 * bytes are folded at a time, about 15x faster than the tables; on AArch64 the CRC32
 * instructions (HWCAP_CRC32) take 8 bytes each. The tables (slicing-by-8) do the rest and
 * every byte on a CPU without either. All give zlib.crc32's value (tests/deploy: many
 * lengths and alignments, each path). Self-contained, so that a test can include it alone. */
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <string.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#else
#include <sys/auxv.h>
#endif
#endif
#include <pthread.h>
#include <stdint.h>

static uint32_t crc_table[8][256];
static int crc_has_fast;

static void crc_setup(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xFF];
#if defined(__x86_64__)
    unsigned int a = 0, b = 0, c = 0, d = 0;
    crc_has_fast = __get_cpuid(1, &a, &b, &c, &d) && (c >> 1 & 1) && (c >> 19 & 1);    /* pclmulqdq, sse4.1 */
#elif defined(__aarch64__) && defined(__APPLE__)
    int crc = 0;
    size_t size = sizeof crc;
    crc_has_fast = !sysctlbyname("hw.optional.armv8_crc32", &crc, &size, NULL, 0) && crc;
#elif defined(__aarch64__)
    crc_has_fast = getauxval(AT_HWCAP) >> 7 & 1;                                       /* HWCAP_CRC32 */
#endif
}

/* the running value c (inverted, as zlib keeps it) over n bytes, eight at a time */
static uint32_t crc32_tables(uint32_t c, const unsigned char *p, uint64_t n) {
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t a = c ^ (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t b = (uint32_t)(p[4] | p[5] << 8 | p[6] << 16 | (uint32_t)p[7] << 24);
        c = crc_table[7][a & 0xFF] ^ crc_table[6][a >> 8 & 0xFF] ^ crc_table[5][a >> 16 & 0xFF] ^ crc_table[4][a >> 24] ^
            crc_table[3][b & 0xFF] ^ crc_table[2][b >> 8 & 0xFF] ^ crc_table[1][b >> 16 & 0xFF] ^ crc_table[0][b >> 24];
    }
    for (; n; n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
/* The running value c over n bytes, n >= 64 and a multiple of 16: four 128-bit lanes
 * folded 512 bits at a time, then into one, then reduced to 32 bits by Barrett's method
 * (Gopal et al., "Fast CRC computation for generic polynomials using PCLMULQDQ", Intel
 * 2009; the constants are x^k mod P for the reflected polynomial, as zlib's own). */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_fast(uint32_t c, const unsigned char *p, uint64_t n) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4), k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124), poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x1 = _mm_loadu_si128((const __m128i *)p), x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32)), x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)c));
    for (p += 64, n -= 64; n >= 64; p += 64, n -= 64) {
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k1k2, 0x11), _mm_clmulepi64_si128(x1, k1k2, 0x00)),
                           _mm_loadu_si128((const __m128i *)p));
        x2 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x2, k1k2, 0x11), _mm_clmulepi64_si128(x2, k1k2, 0x00)),
                           _mm_loadu_si128((const __m128i *)(p + 16)));
        x3 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x3, k1k2, 0x11), _mm_clmulepi64_si128(x3, k1k2, 0x00)),
                           _mm_loadu_si128((const __m128i *)(p + 32)));
        x4 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x4, k1k2, 0x11), _mm_clmulepi64_si128(x4, k1k2, 0x00)),
                           _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    __m128i next[3] = {x2, x3, x4};
    for (int i = 0; i < 3; i++)            /* the four lanes into one */
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x11), _mm_clmulepi64_si128(x1, k3k4, 0x00)),
                           next[i]);
    for (; n >= 16; p += 16, n -= 16)      /* the 16-byte blocks left */
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x11), _mm_clmulepi64_si128(x1, k3k4, 0x00)),
                           _mm_loadu_si128((const __m128i *)p));
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(x1, k3k4, 0x10));       /* 128 bits to 64 */
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5, 0x00), _mm_srli_si128(x1, 4));
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10), low32);   /* Barrett */
    x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(t, poly, 0x00));
    return (uint32_t)_mm_extract_epi32(x1, 1);
}
#elif defined(__aarch64__)
/* The running value c over n bytes, n a multiple of 8: the CRC32X instruction on each 8 */
__attribute__((target("crc"))) static uint32_t crc32_fast(uint32_t c, const unsigned char *p, uint64_t n) {
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __crc32d(c, v);
    }
    return c;
}
#else
static uint32_t crc32_fast(uint32_t c, const unsigned char *p, uint64_t n) { (void)p; (void)n; return c; }
#endif

/* zlib's crc32(crc, data, n): the CRC of data following bytes whose CRC was crc (0 at first) */
static uint32_t crc32_of(uint32_t crc, const void *data, uint64_t n) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_setup);
    const unsigned char *p = data;
    uint32_t c = crc ^ 0xFFFFFFFFu;
    if (crc_has_fast && n >= 64) {
        uint64_t folded = n & ~(uint64_t)15;
        c = crc32_fast(c, p, folded);
        p += folded, n -= folded;
    }
    return crc32_tables(c, p, n) ^ 0xFFFFFFFFu;
}
