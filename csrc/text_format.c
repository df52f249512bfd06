/* See text_format.h. */
#include "text_format.h"

#include <string.h>

/* Decimal digits of v into the end of tmp[20]; returns the first digit. */
static inline char *u64_digits(uint64_t v, char *end)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

/* Read value i; 0 if it is < 2^53, else -2. */
static inline int read_value(const uint8_t *values, size_t stride, int width, size_t i,
                             uint64_t *v)
{
    const uint8_t *vp = values + i * stride;
    if (width == 8) {
        memcpy(v, vp, 8);
        return *v >= IPVS_TF_EXACT_LIMIT ? -2 : 0;
    }
    uint32_t v32;
    memcpy(&v32, vp, 4);
    *v = v32;
    return 0;
}

static inline size_t decimal_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

long ipvs_format_length(size_t name_len, const uint32_t *off,
                        const uint8_t *values, size_t stride, int width, size_t n)
{
    size_t total = 0;
    uint64_t v;

    if (width != 4 && width != 8)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (read_value(values, stride, width, i, &v) < 0)
            return -2;
        if (off[i + 1] < off[i])
            return -1;
        total += 1 + name_len + (off[i + 1] - off[i]) + decimal_len(v);
    }
    return (long)total;
}

long ipvs_format_samples(const char *name, size_t name_len,
                         const char *blocks, const uint32_t *off,
                         const uint8_t *values, size_t stride, int width,
                         size_t n, char *out, size_t cap)
{
    char tmp[20];
    char *o = out;
    char *const end = out + cap;

    if (width != 4 && width != 8)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        if (read_value(values, stride, width, i, &v) < 0)
            return -2;
        if (off[i + 1] < off[i])
            return -1;
        size_t blen = off[i + 1] - off[i];
        char *d = u64_digits(v, tmp + sizeof tmp);
        size_t dlen = (size_t)(tmp + sizeof tmp - d);
        if ((size_t)(end - o) < 1 + name_len + blen + dlen)
            return -1;
        *o++ = '\n';
        memcpy(o, name, name_len);
        o += name_len;
        memcpy(o, blocks + off[i], blen);
        o += blen;
        memcpy(o, d, dlen);
        o += dlen;
    }
    return (long)(o - out);
}
