/* SPDX-License-Identifier: MIT */
#pragma once

/* The `--format json` outputs of the CLI, built as json-c trees.
 *
 * Every builder below returns NULL or -ENOMEM when json-c cannot allocate
 * and logs nothing: the verb that prints the tree logs the failure once. */

#include <json-c/json.h>
#include <stddef.h>

#include "basic/macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

/* One layout for every JSON the CLI prints: two-space indentation and
 * `"key": value`, the separators of Python's json.dump(…, indent=N) that
 * espefuse uses; '/' is not escaped (paths, URLs). */
#define CLI_JSON_FLAGS (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Adds `val` to `obj` under `key`, or appends it to `array`. Both take `val`
 * in every case: on failure it is freed. A NULL `val` is a constructor that
 * ran out of memory, so they can wrap json_object_new_*() directly:
 *     if (cli_json_add(o, "size", json_object_new_uint64(n)) < 0) …
 * 0 or -ENOMEM. */
int cli_json_add(json_object *obj, const char *key, json_object *val);
int cli_json_append(json_object *array, json_object *val);
/* Adds a JSON null under `key`. 0 or -ENOMEM. */
int cli_json_add_null(json_object *obj, const char *key);

/* A JSON string of `n` arbitrary bytes (NULs included), each byte standing for
 * the code point of its value, U+0000…U+00FF: the output is valid JSON
 * whatever the bytes, and a consumer gets them back exactly by encoding the
 * string as Latin-1. NULL on OOM. */
json_object *cli_json_new_bytes(const void *data, size_t n);

/* `s` as a JSON string when it is valid UTF-8 (RFC 3629), otherwise byte by
 * byte as cli_json_new_bytes() does, so that no input makes the output
 * invalid. NULL on OOM. */
json_object *cli_json_new_text(const char *s);

/* Prints `o` to stdout in the CLI_JSON_FLAGS layout with a trailing newline
 * and flushes it. Logs a failure (out of memory, a write error) itself.
 * 0 or -errno. */
int cli_json_print(json_object *o);
