/* SPDX-License-Identifier: MIT */
#include <ctype.h>

#include "basic/macro.h"
#include "image/app-image.h"

/* ESP-IDF itself never compares versions (esp-formats.md §8): the app does.
 * We compare them the way people read them: "1.10.0" > "1.9.2". */

#define VERSION_MAX_COMPONENTS 8

typedef struct Version {
        uint64_t num[VERSION_MAX_COMPONENTS];
        size_t n_num;
        const char *pre;        /* pre-release suffix, not NUL-terminated */
        size_t pre_len;         /* 0: a release */
} Version;

static uint64_t read_number(const char **p, size_t *len) {
        uint64_t v = 0;

        while (*len > 0 && isdigit((unsigned char) **p)) {
                unsigned d = (unsigned) (**p - '0');
                v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
                (*p)++;
                (*len)--;
        }
        return v;
}

static void version_parse(const char *s, Version *ret) {
        const char *p = s;
        size_t len = strlen(s);
        const char *plus;

        *ret = (Version) {};
        /* Build metadata ("+sha.abc") never changes the order (semver §10). */
        plus = memchr(s, '+', len);
        if (plus)
                len = (size_t) (plus - s);
        if (len > 0 && (*p == 'v' || *p == 'V')) {
                p++;
                len--;
        }
        while (len > 0 && isdigit((unsigned char) *p)) {
                uint64_t n = read_number(&p, &len);
                if (ret->n_num < VERSION_MAX_COMPONENTS)
                        ret->num[ret->n_num++] = n;
                if (len >= 2 && *p == '.' && isdigit((unsigned char) p[1])) {
                        p++;
                        len--;
                } else
                        break;
        }
        if (len > 0 && (*p == '-' || *p == '.' || *p == '~' || *p == '_')) {
                p++;
                len--;
        }
        ret->pre = p;
        ret->pre_len = len;
}

static bool is_sep(char c) {
        return c == '.' || c == '-' || c == '_' || c == '~';
}

/* Next identifier of a pre-release suffix: [*p, *p + return). */
static size_t next_ident(const char **p, size_t *len) {
        size_t n = 0;

        while (*len > 0 && is_sep(**p)) {
                (*p)++;
                (*len)--;
        }
        while (n < *len && !is_sep((*p)[n]))
                n++;
        return n;
}

static bool all_digits(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!isdigit((unsigned char) s[i]))
                        return false;
        return n > 0;
}

static int compare_pre(const char *a, size_t alen, const char *b, size_t blen) {
        for (;;) {
                size_t na = next_ident(&a, &alen), nb = next_ident(&b, &blen);
                bool da, db;

                if (na == 0 || nb == 0)
                        return (na > 0) - (nb > 0);     /* more identifiers sort higher */
                da = all_digits(a, na);
                db = all_digits(b, nb);
                if (da && db) {
                        const char *pa = a, *pb = b;
                        size_t la = na, lb = nb;
                        uint64_t x = read_number(&pa, &la), y = read_number(&pb, &lb);
                        if (x != y)
                                return x < y ? -1 : 1;
                } else if (da != db)
                        return da ? -1 : 1;             /* numbers sort below words */
                else {
                        int c = memcmp(a, b, MIN(na, nb));
                        if (c != 0)
                                return c < 0 ? -1 : 1;
                        if (na != nb)
                                return na < nb ? -1 : 1;
                }
                a += na;
                alen -= na;
                b += nb;
                blen -= nb;
        }
}

int app_version_compare(const char *a, const char *b) {
        Version va, vb;

        if (!a || !b)
                return (a != NULL) - (b != NULL);
        version_parse(a, &va);
        version_parse(b, &vb);
        for (size_t i = 0; i < MAX(va.n_num, vb.n_num); i++) {
                uint64_t x = i < va.n_num ? va.num[i] : 0, y = i < vb.n_num ? vb.num[i] : 0;
                if (x != y)
                        return x < y ? -1 : 1;
        }
        if (va.pre_len == 0 || vb.pre_len == 0)
                return (va.pre_len == 0) - (vb.pre_len == 0);   /* a release beats its pre-releases */
        return compare_pre(va.pre, va.pre_len, vb.pre, vb.pre_len);
}
