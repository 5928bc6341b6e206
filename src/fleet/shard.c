/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fleet/shard.h"

static int parse_part(const char *s, size_t len, unsigned *ret) {
        unsigned v = 0;

        /* Digits only: no sign, no space, no hex, no empty part. */
        if (len == 0 || len > 6)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

int shard_from_string(const char *s, Shard *ret) {
        const char *slash;
        Shard sh;

        if (!s || !(slash = strchr(s, '/')))
                return -EINVAL;
        if (parse_part(s, (size_t) (slash - s), &sh.index) < 0 ||
            parse_part(slash + 1, strlen(slash + 1), &sh.count) < 0)
                return -EINVAL;
        if (sh.count == 0 || sh.count > SHARD_COUNT_MAX || sh.index >= sh.count)
                return -EINVAL;
        *ret = sh;
        return 0;
}

static unsigned slice_start(unsigned total, unsigned i, unsigned n) {
        /* total * i fits in 64 bits for any unsigned total and i <= n <= 2^16 */
        return (unsigned) ((uint64_t) total * i / n);
}

void shard_range(const Shard *s, unsigned total, unsigned *ret_first, unsigned *ret_count) {
        unsigned a, b;

        if (!shard_is_set(s)) {
                *ret_first = 0;
                *ret_count = total;
                return;
        }
        a = slice_start(total, s->index, s->count);
        b = slice_start(total, s->index + 1, s->count);
        *ret_first = a;
        *ret_count = b - a;
}

unsigned shard_of_index(unsigned count, unsigned total, unsigned index) {
        /* The largest i with floor(total*i/count) <= index, found from the
         * estimate floor(index*count/total) and corrected by at most one step
         * each way (floors lose less than one device per slice). */
        uint64_t i;

        if (count == 0 || total == 0)
                return 0;
        i = (uint64_t) index * count / total;
        while (i + 1 < count && slice_start(total, (unsigned) i + 1, count) <= index)
                i++;
        while (i > 0 && slice_start(total, (unsigned) i, count) > index)
                i--;
        return (unsigned) i;
}
