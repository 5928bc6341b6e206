/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Memory for secrets that live as long as a device does: the eFuse (its key
 * blocks hold the HMAC key), the DS key's CRT form, NVS XTS keys.
 *
 * It comes from anonymous mappings marked MADV_DONTDUMP, so a core dump of
 * a worker holding 20,000 devices carries none of their keys, and, where
 * the process may lock memory, locked out of swap (mlock; a failure to lock
 * is not an error). Slots are sized in 64-byte steps, so a 640-byte CRT
 * costs 640 bytes; freed slots are wiped and reused, never handed back.
 *
 * secret_free() must be given the size that was allocated. Thread-safe.
 * Short-lived secrets on the stack are wiped with explicit_bzero() instead. */

#define SECRET_MEM_MAX 4096

void *secret_alloc0(size_t size);      /* NULL on OOM or size 0 / > SECRET_MEM_MAX */
void secret_free(void *p, size_t size); /* wipes; NULL is fine */

/* Whether `p` lies in secret memory (for tests and assertions). */
bool secret_mem_owns(const void *p);

/* Bytes mapped for secrets, and how many of them are locked in RAM. */
void secret_mem_stats(size_t *ret_mapped, size_t *ret_locked);
