/* SPDX-License-Identifier: MIT */
/* Partition table CSV (gen_esp32part.py's grammar, partition-table.h). The
 * input is the file's text; a parser of C strings sees it up to its first
 * NUL byte (partition_table_load_csv refuses a file with one). A table that
 * parses must survive both serialisations (fuzz-partition-util.h). */

#include "fuzz-partition-util.h"
#include "fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        _cleanup_free_ char *text = fuzz_strndup(data, size);
        char err[FUZZ_ERR_LEN] = "";
        int r;

        r = partition_table_from_csv(text, "fuzz.csv", &t, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "partition_table_from_csv");
        if (r < 0) {
                fuzz_check(r == -EINVAL, "from_csv: %d (%s)", r, err);
                fuzz_check(strncmp(err, "fuzz.csv", 8) == 0, "the error does not name the file: %s", err);
                return 0;
        }
        fuzz_partition_table_check(t);
        return 0;
}
