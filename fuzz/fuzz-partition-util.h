/* SPDX-License-Identifier: MIT */
#pragma once

/* What both partition table harnesses check on a table that parsed. */

#include "flash/partition-table.h"

/* Walks the lookups (get, find, find_by_name, find_ota, ota_count,
 * flash_size) and checks they agree with the entries; then checks that the
 * table survives binary -> parse unchanged, and CSV -> parse unchanged
 * whenever every entry can be written as CSV (see the .c). */
void fuzz_partition_table_check(const PartitionTable *t);
