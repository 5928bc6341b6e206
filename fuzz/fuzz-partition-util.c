/* SPDX-License-Identifier: MIT */
#include <ctype.h>

#include "fuzz-partition-util.h"
#include "fuzz-util.h"

static bool partition_eq(const Partition *a, const Partition *b) {
        /* .line says where an entry came from, not what it is. */
        return streq(a->name, b->name) && a->type == b->type && a->subtype == b->subtype && a->offset == b->offset &&
               a->size == b->size && a->flags == b->flags;
}

static void check_same(const PartitionTable *a, const PartitionTable *b, const char *what) {
        size_t n = partition_table_count(a);

        fuzz_check(partition_table_count(b) == n, "%s: %zu entries became %zu", what, n, partition_table_count(b));
        for (size_t i = 0; i < n; i++) {
                const Partition *x = partition_table_get(a, i), *y = partition_table_get(b, i);
                fuzz_check(partition_eq(x, y),
                           "%s: entry %zu '%s' %u/%u 0x%x+0x%x flags 0x%x became '%s' %u/%u 0x%x+0x%x flags 0x%x",
                           what, i, x->name, x->type, x->subtype, x->offset, x->size, x->flags, y->name, y->type,
                           y->subtype, y->offset, y->size, y->flags);
        }
}

/* What a CSV line can say (gen_esp32part.py's grammar, partition-table.h):
 * a name without ',' that is not empty, does not start with '#' and has no
 * space at either end; a size that is not zero (both refused on top of
 * gen_esp32part.py, for CSV only: its binary reader takes them, and so does
 * ours); type and subtype up to 0xFE; no bootloader entry; partition_table
 * entries of one sector, the primary one at 0x8000; known flags only;
 * and, as gen_esp32part.py reads a CSV top-down, each entry after the end of
 * the one before (the primary table aside). A binary table can hold more
 * than that (its entries in any order), and its CSV then cannot say it, as
 * gen_esp32part.py's cannot. */
static bool csv_expressible(const PartitionTable *t) {
        uint64_t last_end = 0;

        for (size_t i = 0; i < partition_table_count(t); i++) {
                const Partition *p = partition_table_get(t, i);
                size_t len = strlen(p->name);

                if (len == 0 || p->name[0] == '#' || strchr(p->name, ',') || strchr(p->name, '$') ||
                    isspace((unsigned char) p->name[0]) || isspace((unsigned char) p->name[len - 1]))
                        return false;
                if (p->size == 0 || p->type == 0xFF || p->subtype == 0xFF || p->type == PARTITION_TYPE_BOOTLOADER)
                        return false;
                /* A CSV's size of a partition_table entry is not read: it is a
                 * sector (gen_esp32part.py's parse_size); the primary table's
                 * offset is not read either: it is 0x8000. */
                if (p->type == PARTITION_TYPE_PARTITION_TABLE &&
                    (p->size != PARTITION_TABLE_SECTOR_SIZE || (p->subtype == 0 && p->offset != PARTITION_TABLE_OFFSET)))
                        return false;
                if (p->flags & ~(PARTITION_FLAG_ENCRYPTED | PARTITION_FLAG_READONLY))
                        return false;
                if (p->type == PARTITION_TYPE_PARTITION_TABLE && p->subtype == 0)
                        continue;
                if (p->offset < last_end)
                        return false;
                last_end = (uint64_t) p->offset + p->size;
        }
        return true;
}

void fuzz_partition_table_check(const PartitionTable *t) {
        _cleanup_(partition_table_freep) PartitionTable *from_bin = NULL, *from_csv = NULL;
        _cleanup_free_ char *csv = NULL;
        uint8_t bin[PARTITION_TABLE_MAX_LEN];
        char err[FUZZ_ERR_LEN] = "";
        size_t n = partition_table_count(t);
        uint64_t end = 0;
        int r;

        fuzz_check(n <= PARTITION_TABLE_MAX_ENTRIES, "%zu entries", n);
        fuzz_check(!partition_table_get(t, n), "get() past the end");
        for (size_t i = 0; i < n; i++) {
                const Partition *p = partition_table_get(t, i);

                fuzz_check(p && strlen(p->name) <= PARTITION_NAME_MAX, "entry %zu", i);
                fuzz_check(partition_table_find_by_name(t, p->name) == p, "names are unique, '%s' is found elsewhere",
                           p->name);
                /* 0xFF is also the wildcard (PARTITION_TYPE_ANY / _SUBTYPE_ANY),
                 * which a binary entry may hold. */
                const Partition *f = partition_table_find(t, p->type, p->subtype);
                fuzz_check(f && f <= p, "find(%u, %u)", p->type, p->subtype);
                if (p->type != PARTITION_TYPE_ANY && p->subtype != PARTITION_SUBTYPE_ANY)
                        fuzz_check(f->type == p->type && f->subtype == p->subtype, "find(%u, %u) found %u/%u",
                                   p->type, p->subtype, f->type, f->subtype);
                fuzz_check(partition_table_find(t, PARTITION_TYPE_ANY, PARTITION_SUBTYPE_ANY) ==
                           partition_table_get(t, 0), "find(any, any) is the first entry");
                (void) partition_type_to_string(p->type);
                (void) partition_subtype_to_string(p->type, p->subtype);
                end = MAX(end, (uint64_t) p->offset + p->size);
        }
        fuzz_check(partition_table_end(t) == MIN(end, (uint64_t) UINT32_MAX), "the table end");
        unsigned ota = partition_table_ota_count(t);
        fuzz_check(ota <= 16, "%u OTA slots", ota);
        for (unsigned s = 0; s < ota; s++)
                fuzz_check(partition_table_find_ota(t, s), "ota_%u counted but not found", s);
        fuzz_check(!partition_table_find_ota(t, ota), "ota_%u found past the count", ota);

        r = partition_table_to_binary(t, bin);
        fuzz_check(r == 0, "to_binary: %d", r);
        r = partition_table_from_binary(bin, sizeof bin, &from_bin, err, sizeof err);
        fuzz_check(r == 0, "the binary written for a valid table does not parse: %s", err);
        check_same(t, from_bin, "binary round trip");

        r = partition_table_to_csv(t, &csv);
        fuzz_check(r == 0, "to_csv: %d", r);
        if (!csv_expressible(t))
                return;
        r = partition_table_from_csv(csv, "round-trip.csv", &from_csv, err, sizeof err);
        fuzz_check(r == 0, "the CSV written for a valid table does not parse: %s\n%s", err, csv);
        check_same(t, from_csv, "CSV round trip");
}
