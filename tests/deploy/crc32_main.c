/* tests/test_deploy.py's check of a library's CRC-32 (runtime/deploy/library_crc32.c):
 * usage: crc32_main DATA; for every start 0..15 and many lengths in the file, prints
 * "start length tables fast split", each the CRC of DATA[start, start + length): by the
 * tables alone, by the CPU's fast way (the tables for a tail; "-" where the CPU lacks it or
 * the length is under 64), and by crc32_of in two pieces (a third, then the rest). */
#include <stdio.h>
#include <stdlib.h>
#include "library_crc32.c"

int main(int argc, char **argv) {
    FILE *f = argc == 2 ? fopen(argv[1], "rb") : NULL;
    if (!f) return 2;
    static unsigned char data[1 << 16];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    crc32_of(0, data, 0);                  /* fills the tables, finds the CPU's features */
    for (size_t start = 0; start < 16 && start < n; start++)
        for (size_t length = 0; start + length <= n; length += length < 300 ? 1 : 97) {
            const unsigned char *p = data + start;
            printf("%zu %zu %08x ", start, length, crc32_tables(0xFFFFFFFFu, p, length) ^ 0xFFFFFFFFu);
            if (crc_has_fast && length >= 64) {
                size_t folded = length & ~(size_t)15;
                printf("%08x ", crc32_tables(crc32_fast(0xFFFFFFFFu, p, folded), p + folded, length - folded) ^ 0xFFFFFFFFu);
            } else printf("- ");
            printf("%08x\n", crc32_of(crc32_of(0, p, length / 3), p + length / 3, length - length / 3));
        }
    return 0;
}
