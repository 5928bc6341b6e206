/* SPDX-License-Identifier: MIT */
#include "basic/esp-err.h"
#include "fuzz-nvs-util.h"
#include "fuzz-util.h"

static int collect(const NvsEntryInfo *info, void *userdata) {
        FuzzNvsSnapshot *s = userdata;

        if (s->n == s->allocated) {
                size_t a = s->allocated ? 2 * s->allocated : 64;
                FuzzNvsEntry *e = reallocarray(s->entries, a, sizeof *e);
                if (!e)
                        abort();
                s->entries = e;
                s->allocated = a;
        }
        s->entries[s->n++] = (FuzzNvsEntry) { .info = *info };
        return 0;
}

static int count_one(const NvsEntryInfo *info, void *userdata) {
        (*(size_t *) userdata)++;
        return 0;
}

static int stop_at_first(const NvsEntryInfo *info, void *userdata) {
        (*(size_t *) userdata)++;
        return 1;
}

/* An orphan key (its namespace entry is gone) is listed as "#<index>" and
 * cannot be looked up by name. */
static bool namespace_resolvable(const NvsEntryInfo *info) {
        return info->namespace_name[0] != '#';
}

static bool type_is_blob(NvsType t) {
        return t == NVS_TYPE_BLOB || t == NVS_TYPE_BLOB_IDX;
}

/* Reads the key once more through a handle and the getter of its type. */
static void check_typed_get(Nvs *nvs, const FuzzNvsEntry *e) {
        _cleanup_(nvs_handle_closep) NvsHandle *h = NULL;
        const NvsValue *v = &e->value;
        const char *key = e->info.key;
        int r;

        r = nvs_handle_open(nvs, e->info.namespace_name, NVS_READONLY, &h);
        fuzz_check(r == 0, "namespace '%s' lists keys but cannot be opened: %d", e->info.namespace_name, r);

        switch (v->type) {
        case NVS_TYPE_U8: { uint8_t x; r = nvs_get_u8(h, key, &x); fuzz_check(r == 0 && x == v->u, "u8 '%s'", key); break; }
        case NVS_TYPE_I8: { int8_t x; r = nvs_get_i8(h, key, &x); fuzz_check(r == 0 && x == v->i, "i8 '%s'", key); break; }
        case NVS_TYPE_U16: { uint16_t x; r = nvs_get_u16(h, key, &x); fuzz_check(r == 0 && x == v->u, "u16 '%s'", key); break; }
        case NVS_TYPE_I16: { int16_t x; r = nvs_get_i16(h, key, &x); fuzz_check(r == 0 && x == v->i, "i16 '%s'", key); break; }
        case NVS_TYPE_U32: { uint32_t x; r = nvs_get_u32(h, key, &x); fuzz_check(r == 0 && x == v->u, "u32 '%s'", key); break; }
        case NVS_TYPE_I32: { int32_t x; r = nvs_get_i32(h, key, &x); fuzz_check(r == 0 && x == v->i, "i32 '%s'", key); break; }
        case NVS_TYPE_U64: { uint64_t x; r = nvs_get_u64(h, key, &x); fuzz_check(r == 0 && x == v->u, "u64 '%s'", key); break; }
        case NVS_TYPE_I64: { int64_t x; r = nvs_get_i64(h, key, &x); fuzz_check(r == 0 && x == v->i, "i64 '%s'", key); break; }
        case NVS_TYPE_STR: {
                _cleanup_free_ char *s = NULL;
                size_t len = 0;

                r = nvs_get_str(h, key, NULL, &len);
                /* NvsValue.size counts the NUL, as the size query does */
                fuzz_check(r == 0 && len == v->size, "string '%s': size query %d, %zu vs %zu", key, r, len, v->size);
                r = nvs_get_str_alloc(h, key, &s);
                fuzz_check(r == 0 && memcmp(s, v->data, v->size) == 0, "string '%s' reads differently", key);
                break;
        }
        case NVS_TYPE_BLOB:
        case NVS_TYPE_BLOB_IDX: {
                _cleanup_free_ uint8_t *b = NULL;
                size_t len = 0;

                r = nvs_get_blob(h, key, NULL, &len);
                fuzz_check(r == 0 && len == v->size, "blob '%s': size query %d, %zu vs %zu", key, r, len, v->size);
                r = nvs_get_blob_alloc(h, key, &b, &len);
                fuzz_check(r == 0 && len == v->size && (len == 0 || memcmp(b, v->data, len) == 0),
                           "blob '%s' reads differently", key);
                break;
        }
        case NVS_TYPE_FLOAT:
        case NVS_TYPE_DOUBLE:
        case NVS_TYPE_BLOB_DATA:
        case NVS_TYPE_ANY:
        case _NVS_TYPE_INVALID:
                break;
        }

        /* nvs_find_key reports what iteration reported. */
        NvsType t;
        r = nvs_find_key(h, key, &t);
        fuzz_check(r == 0 && t == e->info.type, "find_key '%s': %d, type 0x%x vs 0x%x", key, r, t, e->info.type);
}

void fuzz_nvs_snapshot(Nvs *nvs, bool thorough, FuzzNvsSnapshot *ret) {
        FuzzNvsSnapshot s = {};
        NvsStats stats;
        size_t n, typed = 0;
        int r;

        r = nvs_iterate(nvs, NULL, NVS_TYPE_ANY, collect, &s);
        fuzz_check(r == 0, "nvs_iterate: %d", r);

        for (size_t i = 0; i < s.n; i++) {
                FuzzNvsEntry *e = &s.entries[i];

                fuzz_check(e->info.key[0] != 0 && strlen(e->info.key) <= NVS_KEY_MAX, "bad key listed");
                if (!namespace_resolvable(&e->info))
                        continue;
                r = nvs_get_value(nvs, e->info.namespace_name, e->info.key, &e->value);
                fuzz_check(r == 0, "key '%s' in '%s' is listed but cannot be read: %s", e->info.key,
                           e->info.namespace_name, esp_err_to_name(r));
                e->have_value = true;
                fuzz_check(e->value.type == e->info.type, "key '%s' listed as 0x%x, read as 0x%x", e->info.key,
                           e->info.type, e->value.type);
                if (e->value.type == NVS_TYPE_STR)
                        fuzz_check(e->value.size > 0 && e->value.data[e->value.size - 1] == 0 &&
                                   strlen((char *) e->value.data) == e->value.size - 1,
                                   "string '%s' is not one NUL-terminated string", e->info.key);
                if (thorough)
                        check_typed_get(nvs, e);
        }
        if (!thorough) {
                *ret = s;
                return;
        }

        /* Filtered iterations list the matching subset of the full one. */
        static const NvsType types[] = { NVS_TYPE_U8, NVS_TYPE_I8, NVS_TYPE_U16, NVS_TYPE_I16, NVS_TYPE_U32,
                                         NVS_TYPE_I32, NVS_TYPE_U64, NVS_TYPE_I64, NVS_TYPE_STR, NVS_TYPE_FLOAT,
                                         NVS_TYPE_DOUBLE, NVS_TYPE_BLOB_IDX };
        for (size_t k = 0; k < ELEMENTSOF(types); k++) {
                size_t expected = 0;

                n = 0;
                r = nvs_iterate(nvs, NULL, types[k], count_one, &n);
                fuzz_check(r == 0, "nvs_iterate(type 0x%x): %d", types[k], r);
                for (size_t i = 0; i < s.n; i++)
                        if (s.entries[i].info.type == types[k] ||
                            (type_is_blob(types[k]) && type_is_blob(s.entries[i].info.type)))
                                expected++;
                fuzz_check(n == expected, "type 0x%x: %zu keys listed, %zu expected", types[k], n, expected);
                typed += n;
        }
        fuzz_check(typed == s.n, "the typed iterations list %zu keys, the full one %zu", typed, s.n);

        if (s.n > 0) {
                const NvsEntryInfo *first = &s.entries[0].info;
                size_t expected = 0;

                if (namespace_resolvable(first)) {
                        n = 0;
                        r = nvs_iterate(nvs, first->namespace_name, NVS_TYPE_ANY, count_one, &n);
                        fuzz_check(r == 0, "nvs_iterate('%s'): %d", first->namespace_name, r);
                        for (size_t i = 0; i < s.n; i++)
                                if (s.entries[i].info.namespace_index == first->namespace_index)
                                        expected++;
                        fuzz_check(n == expected, "namespace '%s': %zu keys listed, %zu expected",
                                   first->namespace_name, n, expected);
                }
                n = 0;
                r = nvs_iterate(nvs, NULL, NVS_TYPE_ANY, stop_at_first, &n);
                fuzz_check(r == 0 && n == 1, "a positive return must stop the iteration: %d, %zu calls", r, n);
        }

        for (unsigned p = 0; p < nvs_page_count(nvs); p++) {
                NvsPageInfo pi;

                r = nvs_page_info(nvs, p, &pi);
                fuzz_check(r == 0 && pi.index == p, "page %u info: %d", p, r);
                fuzz_check(pi.written + pi.erased + pi.empty == NVS_ENTRIES_PER_PAGE, "page %u: %u+%u+%u entries",
                           p, pi.written, pi.erased, pi.empty);
                fuzz_check(nvs_page_state_to_string(pi.state), "page %u: state %d has no name", p, pi.state);
        }
        r = nvs_get_stats(nvs, &stats);
        fuzz_check(r == 0, "nvs_get_stats: %d", r);
        fuzz_check(stats.total_entries == (size_t) nvs_page_count(nvs) * NVS_ENTRIES_PER_PAGE &&
                   stats.used_entries + stats.free_entries == stats.total_entries &&
                   stats.available_entries <= stats.free_entries,
                   "stats do not add up: used %zu, free %zu, available %zu, total %zu", stats.used_entries,
                   stats.free_entries, stats.available_entries, stats.total_entries);

        *ret = s;
}

void fuzz_nvs_snapshot_done(FuzzNvsSnapshot *s) {
        for (size_t i = 0; i < s->n; i++)
                nvs_value_done(&s->entries[i].value);
        free(s->entries);
        *s = (FuzzNvsSnapshot) {};
}

static bool value_eq(const NvsValue *a, const NvsValue *b) {
        return a->type == b->type && a->u == b->u && a->i == b->i && a->size == b->size &&
               (a->size == 0 || memcmp(a->data, b->data, a->size) == 0);
}

static bool skipped(const FuzzNvsEntry *e, const char *skip_namespace) {
        return skip_namespace && streq(e->info.namespace_name, skip_namespace);
}

void fuzz_nvs_compare(const FuzzNvsSnapshot *a, const FuzzNvsSnapshot *b, const char *skip_namespace,
                      const char *what) {
        size_t i = 0, j = 0;

        for (;;) {
                while (i < a->n && skipped(&a->entries[i], skip_namespace))
                        i++;
                while (j < b->n && skipped(&b->entries[j], skip_namespace))
                        j++;
                if (i == a->n || j == b->n)
                        break;
                const FuzzNvsEntry *x = &a->entries[i], *y = &b->entries[j];
                fuzz_check(streq(x->info.namespace_name, y->info.namespace_name) && streq(x->info.key, y->info.key) &&
                           x->info.type == y->info.type,
                           "%s: key %zu is '%s'/'%s' (0x%x) on one side, '%s'/'%s' (0x%x) on the other", what, i,
                           x->info.namespace_name, x->info.key, x->info.type, y->info.namespace_name, y->info.key,
                           y->info.type);
                fuzz_check(x->have_value == y->have_value && (!x->have_value || value_eq(&x->value, &y->value)),
                           "%s: key '%s'/'%s' has another value", what, x->info.namespace_name, x->info.key);
                i++, j++;
        }
        fuzz_check(i == a->n && j == b->n, "%s: %zu keys on one side, %zu on the other", what, a->n, b->n);
}

/* Keys that are unordered sets in practice: after writes, items move between
 * pages, so compare by name rather than by position. */
static const FuzzNvsEntry *snapshot_find(const FuzzNvsSnapshot *s, const char *ns, const char *key) {
        for (size_t i = 0; i < s->n; i++)
                if (s->entries[i].have_value && streq(s->entries[i].info.namespace_name, ns) &&
                    streq(s->entries[i].info.key, key))
                        return &s->entries[i];
        return NULL;
}

/* By namespace index: a corrupt image may hold two namespace entries with one
 * index, and which name that index reads as is the first of them in partition
 * order (as in ESP-IDF, whose namespace list is built in page order), so it
 * may change when a page is moved; the keys' own items keep their index. */
static const FuzzNvsEntry *snapshot_find_index(const FuzzNvsSnapshot *s, uint8_t ns, const char *key) {
        for (size_t i = 0; i < s->n; i++)
                if (s->entries[i].have_value && s->entries[i].info.namespace_index == ns &&
                    streq(s->entries[i].info.key, key))
                        return &s->entries[i];
        return NULL;
}

static size_t snapshot_count_resolvable(const FuzzNvsSnapshot *s, const char *skip_namespace) {
        size_t n = 0;
        for (size_t i = 0; i < s->n; i++)
                if (s->entries[i].have_value && !skipped(&s->entries[i], skip_namespace))
                        n++;
        return n;
}

static Nvs *open_or_die(uint8_t *image, size_t size, const NvsXtsKeys *keys, NvsOpenFlags flags, const char *what) {
        Nvs *nvs = NULL;
        int r;

        r = nvs_open_buffer(image, size, keys, flags, &nvs);
        fuzz_check(r == 0, "%s: reopen failed: %s", what, esp_err_to_name(r));
        return nvs;
}

static bool write_ok(int r) {
        return r == 0 || r == -ESP_ERR_NVS_NOT_ENOUGH_SPACE;
}

void fuzz_nvs_read_write(const uint8_t *image, size_t size, const NvsXtsKeys *keys,
                         const FuzzNvsSnapshot *expected, const uint8_t *seed, size_t seed_size) {
        _cleanup_free_ uint8_t *copy = NULL;
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        _cleanup_(fuzz_nvs_snapshot_done) FuzzNvsSnapshot rw = {}, after = {}, final = {};
        char str[64];
        uint32_t u = 0;
        size_t blob_size = MIN(seed_size, (size_t) 2 * NVS_CHUNK_MAX + 7);
        int r, r_u, r_s, r_b, r_e = -1;
        const FuzzNvsEntry *erased = NULL;

        copy = malloc(size);
        if (!copy)
                abort();
        memcpy(copy, image, size);

        r = nvs_open_buffer(copy, size, keys, 0, &nvs);
        if (r == -ESP_ERR_NVS_NO_FREE_PAGES)
                return;   /* as nvs_flash_init: the device would erase the partition */
        fuzz_check(r == 0, "read-write open failed where the read-only one did not: %s", esp_err_to_name(r));

        fuzz_nvs_snapshot(nvs, false, &rw);
        fuzz_nvs_compare(expected, &rw, NULL, "read-only vs read-write open");

        /* What the read-write open repaired is now on flash: a second view
         * of the same bytes must need no repair and read the same. Opening
         * costs most of a run, so this view is read-only and the writes
         * below go through the first one. */
        {
                _cleanup_free_ uint8_t *repaired = malloc(size);
                _cleanup_(nvs_closep) Nvs *again = NULL;

                if (!repaired)
                        abort();
                memcpy(repaired, copy, size);
                again = open_or_die(repaired, size, keys, NVS_OPEN_READ_ONLY, "after repair");
                fuzz_check(nvs_repair_count(again) == 0, "the repaired image needs %u more repairs",
                           nvs_repair_count(again));
                fuzz_nvs_snapshot(again, false, &after);
                fuzz_nvs_compare(&rw, &after, NULL, "read-write open vs a reopen of what it repaired");
        }

        /* Now write, as a device would. */
        for (size_t i = 0; i < seed_size && i < 4; i++)
                u = u << 8 | seed[i];
        snprintf(str, sizeof str, "fuzz-%zu-%08x", seed_size, u);
        {
                _cleanup_(nvs_handle_closep) NvsHandle *h = NULL;

                r = nvs_handle_open(nvs, "fuzz", NVS_READWRITE, &h);
                fuzz_check(write_ok(r), "nvs_handle_open(fuzz): %s", esp_err_to_name(r));
                if (r < 0)
                        return;
                r_u = nvs_set_u32(h, "u", u);
                fuzz_check(write_ok(r_u), "nvs_set_u32: %s", esp_err_to_name(r_u));
                r_s = nvs_set_str(h, "s", str);
                fuzz_check(write_ok(r_s), "nvs_set_str: %s", esp_err_to_name(r_s));
                r_b = nvs_set_blob(h, "b", seed, blob_size);
                /* A blob may also be longer than the partition can hold (nvs.h). */
                fuzz_check(write_ok(r_b) || r_b == -ESP_ERR_NVS_VALUE_TOO_LONG, "nvs_set_blob(%zu bytes): %s",
                           blob_size, esp_err_to_name(r_b));
        }
        for (size_t i = 0; i < after.n && !erased; i++)
                if (after.entries[i].have_value && !streq(after.entries[i].info.namespace_name, "fuzz"))
                        erased = &after.entries[i];
        if (erased) {
                _cleanup_(nvs_handle_closep) NvsHandle *h = NULL;

                r = nvs_handle_open(nvs, erased->info.namespace_name, NVS_READWRITE, &h);
                fuzz_check(r == 0, "nvs_handle_open('%s'): %s", erased->info.namespace_name, esp_err_to_name(r));
                r_e = nvs_erase_key(h, erased->info.key);
                fuzz_check(r_e == 0, "nvs_erase_key('%s'): %s", erased->info.key, esp_err_to_name(r_e));
        }
        nvs = nvs_close(nvs);

        nvs = open_or_die(copy, size, keys, NVS_OPEN_READ_ONLY, "after writing");
        fuzz_check(nvs_repair_count(nvs) == 0, "clean writes left %u entries to repair", nvs_repair_count(nvs));
        fuzz_nvs_snapshot(nvs, true, &final);

        /* What was set reads back; a set that failed kept the old value. */
        const FuzzNvsEntry *e, *old;
        e = snapshot_find(&final, "fuzz", "u");
        old = snapshot_find(&after, "fuzz", "u");
        if (r_u == 0)
                fuzz_check(e && e->value.type == NVS_TYPE_U32 && e->value.u == u, "u32 written, not read back");
        else
                fuzz_check(!old == !e && (!e || value_eq(&e->value, &old->value)), "a failed u32 set changed it");
        e = snapshot_find(&final, "fuzz", "s");
        old = snapshot_find(&after, "fuzz", "s");
        if (r_s == 0)
                fuzz_check(e && e->value.type == NVS_TYPE_STR && streq((char *) e->value.data, str),
                           "string written, not read back");
        else
                fuzz_check(!old == !e && (!e || value_eq(&e->value, &old->value)), "a failed string set changed it");
        e = snapshot_find(&final, "fuzz", "b");
        old = snapshot_find(&after, "fuzz", "b");
        if (r_b == 0)
                fuzz_check(e && e->value.type == NVS_TYPE_BLOB_IDX && e->value.size == blob_size &&
                           (blob_size == 0 || memcmp(e->value.data, seed, blob_size) == 0),
                           "blob of %zu bytes written, not read back", blob_size);
        else
                fuzz_check(!old == !e && (!e || value_eq(&e->value, &old->value)), "a failed blob set changed it");

        /* Every other key is untouched, the erased one gone. */
        for (size_t i = 0; i < after.n; i++) {
                const FuzzNvsEntry *x = &after.entries[i];

                if (!x->have_value || streq(x->info.namespace_name, "fuzz"))
                        continue;
                e = snapshot_find_index(&final, x->info.namespace_index, x->info.key);
                if (x == erased) {
                        fuzz_check(!e, "key '%s'/'%s' was erased but reads back", x->info.namespace_name, x->info.key);
                        continue;
                }
                fuzz_check(e && value_eq(&e->value, &x->value), "key '%s'/'%s' %s after writes to other keys",
                           x->info.namespace_name, x->info.key, e ? "changed" : "vanished");
        }
        fuzz_check(snapshot_count_resolvable(&final, "fuzz") + (erased ? 1 : 0) ==
                   snapshot_count_resolvable(&after, "fuzz"),
                   "writes to namespace 'fuzz' added keys elsewhere");
}
