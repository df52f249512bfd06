/*
 * text_format: the hot loops of the text exposition, for the common case.
 * Mechanical only: names, label blocks, which values go where and how series
 * are grouped are decided in Python (ipvs_fast/formats/exposition.py); this
 * reads the values and writes the bytes.
 */
#ifndef IPVS_TEXT_FORMAT_H
#define IPVS_TEXT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Values at or beyond +-this cannot all be held exactly by a float64; the
 * caller prints such segments itself (as floats, like prometheus_client and
 * client_golang do). */
#define IPVS_TF_EXACT_LIMIT (UINT64_C(1) << 53)

/* How a value is read (host order): kind. */
#define IPVS_TF_U32 0
#define IPVS_TF_U64 1
#define IPVS_TF_I32 2
#define IPVS_TF_I64 3

/* How it is written: style. DECIMAL as prometheus_client writes an integer
 * ("1234567"); GO_FLOAT as client_golang writes float64(value), i.e. Go's
 * strconv.FormatFloat(v, 'g', -1, 64) ("123456", "1.234567e+06"). */
#define IPVS_TF_DECIMAL 0
#define IPVS_TF_GO_FLOAT 1

/* A group id meaning "this value belongs to no group" (ipvs_sum_groups). */
#define IPVS_TF_NO_GROUP 0xFFFFFFFF

/*
 * Write n samples of one family into out:
 *   for i in [0, n): "\n" name blocks[off[i] .. off[i+1]) text(value_i)
 * value_i is read as `kind` at values + i * stride (stride 0: one value for
 * every sample). off has n + 1 entries (offsets into blocks).
 * Returns the number of bytes written; -1 if kind or style is unknown (even
 * for n == 0), if out (cap bytes) is too small or an offset decreases; -2 if
 * some value is not within +-IPVS_TF_EXACT_LIMIT (exclusive). Nothing is
 * allocated.
 */
long ipvs_format_samples(const char *name, size_t name_len,
                         const char *blocks, const uint32_t *off,
                         const uint8_t *values, size_t stride, int kind, int style,
                         size_t n, char *out, size_t cap);

/*
 * The number of bytes ipvs_format_samples would write for the same samples
 * (so that a body's length is known before it is written); -1 for an unknown
 * kind or style or a decreasing offset, -2 as above.
 */
long ipvs_format_length(size_t name_len, const uint32_t *off,
                        const uint8_t *values, size_t stride, int kind, int style,
                        size_t n);

/*
 * sums[group[i]] += value_i for i in [0, n), value_i read as above; entries
 * with group[i] == IPVS_TF_NO_GROUP are skipped. sums (ngroups entries) is
 * added to, not cleared. Returns 0; -1 for an unknown kind (even for
 * n == 0) or a group id
 * >= ngroups; -2 if a sum would leave the int64 range (sums are then
 * partly updated: the caller starts over). Nothing is allocated.
 */
int ipvs_sum_groups(const uint8_t *values, size_t stride, int kind, size_t n,
                    const uint32_t *group, int64_t *sums, size_t ngroups);

#endif
