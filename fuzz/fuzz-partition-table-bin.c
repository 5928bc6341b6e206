/* SPDX-License-Identifier: MIT */
/* Binary partition tables (esp-formats.md §4), as read from 0x8000: the
 * input is the table as it is (any length); a table that parses must
 * survive both of its serialisations (fuzz-partition-util.h). */

#include "fuzz-partition-util.h"
#include "fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        char err[FUZZ_ERR_LEN] = "";
        int r;

        r = partition_table_from_binary(data, size, &t, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "partition_table_from_binary");
        if (r < 0) {
                fuzz_check(r == -EBADMSG, "from_binary: %d (%s)", r, err);
                return 0;
        }
        fuzz_partition_table_check(t);
        return 0;
}
