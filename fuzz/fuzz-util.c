/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

#include "fuzz-util.h"

/* The sanitizers' defaults when a harness runs, however it is started (the
 * smoke, bench/fuzz.sh, or by hand on one crash file): undefined behaviour
 * is a crash, not a line in the log, and leaks are checked. Environment
 * variables still override these.
 *
 * The quarantine (freed chunks kept poisoned, to catch a use after free) is
 * 16 MiB instead of 256 MiB. libFuzzer runs a leak check after every input
 * that allocated more than it freed, such as each config file libconfig
 * rejects (its own suppressed leak, below), and a leak check walks every
 * chunk, the quarantined ones included: fuzz-config spent 75 % of its time
 * there, at 660 executions/s (3,500/s now). A smaller quarantine forgets a
 * freed chunk sooner: a use after free is still caught unless more than
 * 16 MiB was freed between the free and the use. */
const char *__asan_default_options(void);
const char *__ubsan_default_options(void);
const char *__lsan_default_suppressions(void);

const char *__asan_default_options(void) {
        return "detect_leaks=1:quarantine_size_mb=16";
}

const char *__ubsan_default_options(void) {
        return "halt_on_error=1:print_stacktrace=1";
}

/* libconfig before 1.7.3 leaks a string token that bison discards while it
 * recovers from a syntax error (hyperrealm/libconfig#142, fixed by #155;
 * Debian 12 ships 1.5): a rejected config file costs the token's buffer,
 * allocated by the scanner, in strbuf_append() or (an empty string) in
 * libconfig_yylex() itself. Not ours to free, and nothing of ours allocates
 * through these two, so this hides no leak of espfleet's. */
const char *__lsan_default_suppressions(void) {
        return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

void fuzz_fail(const char *file, int line, const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, "%s:%d: fuzz check failed: ", file, line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        abort();
}

void fuzz_check_err_at(const char *file, int line, int r, const char *err, size_t len, const char *what) {
        if (!memchr(err, 0, len))
                fuzz_fail(file, line, "%s returned %d and left its error message unterminated", what, r);
        if (r < 0 && err[0] == 0)
                fuzz_fail(file, line, "%s returned %d without saying why (empty error message)", what, r);
}

char *fuzz_strndup(const uint8_t *data, size_t size) {
        const uint8_t *nul = memchr(data, 0, size);
        size_t n = nul ? (size_t) (nul - data) : size;
        char *s = malloc(n + 1);

        if (!s)
                abort();
        memcpy(s, data, n);
        s[n] = 0;
        return s;
}

uint8_t *fuzz_pad(const uint8_t *data, size_t size, size_t block, uint8_t fill, size_t *ret_size) {
        size_t n = size == 0 ? block : ALIGN_TO(size, block);
        uint8_t *buf = malloc(n);

        if (!buf)
                abort();
        if (size > 0)
                memcpy(buf, data, size);
        memset(buf + size, fill, n - size);
        *ret_size = n;
        return buf;
}

void fuzz_read_vector(const char *name, void *buf, size_t size) {
        char path[4096];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s", VECTORS_DIR, name);
        f = fopen(path, "re");
        if (!f || fread(buf, 1, size, f) != size) {
                fprintf(stderr, "fuzz: cannot read %zu bytes from %s (the harness's fixed key)\n", size, path);
                abort();
        }
        fclose(f);
}
