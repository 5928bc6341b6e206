/* SPDX-License-Identifier: MIT */
/* The espfleetd configuration file (libconfig, sim/config.h). The input is
 * the file: it is written to an in-memory file (memfd, nothing touches a
 * disk) and loaded by path, as the daemon loads /etc/espfleet/espfleet.conf;
 * a file without NUL bytes is also loaded from memory, and both must come
 * to the same result and the same message. Then:
 *  - a rejected file leaves the configuration it was loaded over untouched;
 *  - loading an accepted file a second time over its own result changes
 *    nothing (every key is a plain assignment);
 *  - the effective-config walk, the restart check and the worker sizing run
 *    on what was loaded. */

#include <sys/mman.h>

#include "fuzz-util.h"
#include "sim/config.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        memfd = memfd_create("fuzz-config", MFD_CLOEXEC);
        fuzz_check(memfd >= 0, "memfd_create: %m");
        snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
        return 0;
}

/* The effective configuration as text, to compare two of them. */
typedef struct Dump {
        char *buf;
        size_t len;
        FILE *f;
} Dump;

static void dump_string(const char *key, const char *value, void *userdata) {
        fprintf(((Dump *) userdata)->f, "%s=\"%s\"\n", key, value);
}

static void dump_strv(const char *key, char *const *values, void *userdata) {
        FILE *f = ((Dump *) userdata)->f;

        fprintf(f, "%s=[", key);
        for (size_t i = 0; values && values[i]; i++)
                fprintf(f, "\"%s\",", values[i]);
        fputs("]\n", f);
}

static void dump_number(const char *key, double value, void *userdata) {
        fprintf(((Dump *) userdata)->f, "%s=%a\n", key, value);
}

static void dump_boolean(const char *key, bool value, void *userdata) {
        fprintf(((Dump *) userdata)->f, "%s=%d\n", key, value);
}

static char *dump(const DaemonConfig *c) {
        ConfigVisitor v = {
                .string = dump_string, .strv = dump_strv, .number = dump_number, .boolean = dump_boolean,
        };
        Dump d = {};
        int r;

        d.f = open_memstream(&d.buf, &d.len);
        if (!d.f)
                abort();
        r = daemon_config_foreach(c, &v, &d);
        fuzz_check(r == 0, "daemon_config_foreach: %d", r);
        fclose(d.f);
        return d.buf;
}

static int load_file(DaemonConfig *c, const uint8_t *data, size_t size, char *err, size_t errlen) {
        fuzz_check(ftruncate(memfd, 0) == 0, "ftruncate: %m");
        fuzz_check(pwrite(memfd, data, size, 0) == (ssize_t) size, "pwrite: %m");
        return daemon_config_load(c, path, err, errlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        DaemonConfig defaults, c;
        _cleanup_free_ char *text = fuzz_strndup(data, size);
        _cleanup_free_ char *before = NULL, *after = NULL;
        char err[FUZZ_ERR_LEN] = "", err_mem[FUZZ_ERR_LEN] = "";
        int r, r_mem;

        fuzz_check(daemon_config_init(&defaults) == 0 && daemon_config_init(&c) == 0, "daemon_config_init");
        before = dump(&c);

        r = load_file(&c, data, size, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "daemon_config_load");
        fuzz_check(r == 0 || r == -EINVAL, "daemon_config_load: %d (%s)", r, err);
        if (strlen(text) == size) {
                DaemonConfig m;

                fuzz_check(daemon_config_init(&m) == 0, "daemon_config_init");
                r_mem = daemon_config_load_string(&m, text, path, err_mem, sizeof err_mem);
                fuzz_check(r_mem == r && streq(err, err_mem), "from the file: %d '%s', from memory: %d '%s'", r, err,
                           r_mem, err_mem);
                daemon_config_done(&m);
        }

        if (r < 0) {
                after = dump(&c);
                fuzz_check(streq(before, after), "a rejected file changed the configuration");
        } else {
                const char *changed = NULL;
                bool restart;

                free(before);
                before = dump(&c);
                err[0] = 0;
                r = load_file(&c, data, size, err, sizeof err);
                fuzz_check(r == 0, "an accepted file is refused the second time: %s", err);
                after = dump(&c);
                fuzz_check(streq(before, after), "loading the same file twice gives two configurations");

                restart = daemon_config_needs_restart(&defaults, &c, &changed);
                fuzz_check(!restart || changed, "needs_restart without naming the key");
                fuzz_check(!daemon_config_needs_restart(&c, &c, NULL), "a configuration differs from itself");
                err[0] = 0;
                r = daemon_config_workers_for(&c, 20000, 1024, err, sizeof err);
                fuzz_check_err(r, err, sizeof err, "daemon_config_workers_for");
                fuzz_check(r != 0, "zero workers");
        }

        daemon_config_done(&defaults);
        daemon_config_done(&c);
        return 0;
}
