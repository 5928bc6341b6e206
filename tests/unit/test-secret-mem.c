/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "basic/macro.h"
#include "basic/secret-mem.h"
#include "dsemu/efuse.h"

/* The VmFlags line of the /proc/self/smaps mapping that holds `p`. */
static bool mapping_flags(const void *p, char *flags, size_t size) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/smaps", "re");
        char line[512];
        bool in = false;

        cr_assert_not_null(f);
        while (fgets(line, sizeof line, f)) {
                unsigned long a, b;
                if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
                        in = (uintptr_t) p >= a && (uintptr_t) p < b;
                        continue;
                }
                if (in && strncmp(line, "VmFlags:", 8) == 0) {
                        snprintf(flags, size, "%s", line + 8);
                        return true;
                }
        }
        return false;
}

static bool has_flag(const char *flags, const char *flag) {
        char buf[512], *save = NULL;
        snprintf(buf, sizeof buf, "%s", flags);
        for (char *t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
                if (streq(t, flag))
                        return true;
        return false;
}

Test(secret_mem, zeroed_not_dumped_and_distinct) {
        char flags[512];
        uint8_t *a = secret_alloc0(640), *b = secret_alloc0(640), *c = secret_alloc0(33);

        cr_assert(a && b && c);
        cr_assert_neq(a, b);
        cr_assert(b >= a + 640 || a >= b + 640, "slots overlap");
        for (size_t i = 0; i < 640; i++)
                cr_assert_eq(a[i] | b[i], 0);
        cr_assert(secret_mem_owns(a) && secret_mem_owns(c));
        int on_stack;
        cr_assert_not(secret_mem_owns(&on_stack));
        /* the kernel's own view: "dd" = VM_DONTDUMP, left out of core dumps */
        cr_assert(mapping_flags(a, flags, sizeof flags));
        cr_assert(has_flag(flags, "dd"), "no dd in VmFlags:%s", flags);
        memset(a, 0xA5, 640);
        memset(b, 0x5A, 640);
        memset(c, 0x77, 33);
        secret_free(a, 640);
        secret_free(b, 640);
        secret_free(c, 33);
}

Test(secret_mem, freed_slots_are_wiped_and_reused) {
        uint8_t *a = secret_alloc0(100);
        cr_assert_not_null(a);
        memset(a, 0xFF, 100);
        secret_free(a, 100);
        /* what the slot held is gone even before reuse (the free list link
         * aside, which is a pointer, not a secret) */
        for (size_t i = sizeof(void *); i < 128; i++)
                cr_assert_eq(a[i], 0, "byte %zu survived the free", i);
        uint8_t *b = secret_alloc0(128);   /* the same 128-byte class */
        cr_assert_eq(b, a);
        for (size_t i = 0; i < 128; i++)
                cr_assert_eq(b[i], 0);
        secret_free(b, 128);
}

Test(secret_mem, sizes) {
        cr_assert_null(secret_alloc0(0));
        cr_assert_null(secret_alloc0(SECRET_MEM_MAX + 1));
        /* more than one chunk of a class */
        void *p[200];
        for (size_t i = 0; i < 200; i++) {
                p[i] = secret_alloc0(1280);
                cr_assert_not_null(p[i]);
        }
        for (size_t i = 0; i < 200; i++) {
                cr_assert(secret_mem_owns(p[i]));
                secret_free(p[i], 1280);
        }
        size_t mapped = 0;
        secret_mem_stats(&mapped, NULL);
        cr_assert_geq(mapped, 200 * 1280);
        secret_free(NULL, 10);
}

Test(secret_mem, freeing_foreign_memory_aborts, .signal = SIGABRT) {
        static uint8_t not_secret[64];
        secret_free(not_secret, sizeof not_secret);
}

/* The eFuse (its key blocks hold the HMAC key) lives in secret memory. */
Test(secret_mem, efuse_is_secret_memory) {
        Efuse *e = NULL, *d;
        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &e), 0);
        cr_assert(secret_mem_owns(e));
        d = efuse_dup(e);
        cr_assert(d && secret_mem_owns(d));
        efuse_free(d);
        efuse_free(e);
}
