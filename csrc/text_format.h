/*
 * text_format: the one hot loop of the text exposition, for the common case.
 * Mechanical only: names, label blocks and which values go where are decided
 * in Python (ipvs_fast/exposition.py); this writes the bytes.
 */
#ifndef IPVS_TEXT_FORMAT_H
#define IPVS_TEXT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Values at or above this cannot all be held exactly by a float64; the
 * caller prints such segments itself (as floats, like prometheus_client). */
#define IPVS_TF_EXACT_LIMIT (UINT64_C(1) << 53)

/*
 * Write n samples of one family into out:
 *   for i in [0, n): "\n" name blocks[off[i] .. off[i+1]) decimal(value_i)
 * value_i is the unsigned integer of `width` bytes (4 or 8, host order) at
 * values + i * stride. off has n + 1 entries (offsets into blocks).
 * Returns the number of bytes written; -1 if out (cap bytes) is too small,
 * if width is not 4 or 8 or an offset decreases; -2 if some value is
 * >= IPVS_TF_EXACT_LIMIT. Nothing is allocated.
 */
long ipvs_format_samples(const char *name, size_t name_len,
                         const char *blocks, const uint32_t *off,
                         const uint8_t *values, size_t stride, int width,
                         size_t n, char *out, size_t cap);

/*
 * The number of bytes ipvs_format_samples would write for the same samples
 * (so that a body's length is known before it is written); -1 for a bad
 * width or a decreasing offset, -2 as above.
 */
long ipvs_format_length(size_t name_len, const uint32_t *off,
                        const uint8_t *values, size_t stride, int width, size_t n);

#endif
