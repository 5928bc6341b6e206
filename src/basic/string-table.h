/* SPDX-License-Identifier: MIT */
#pragma once

#include <string.h>

#include "basic/macro.h"

/* Enum <-> string tables. The table is indexed by the enum value; the enum
 * ends in _X_MAX, _X_INVALID = -EINVAL. */
#define DEFINE_STRING_TABLE_LOOKUP(name, type)                                    \
        const char *name##_to_string(type i) {                                    \
                if ((int) i < 0 || (size_t) i >= ELEMENTSOF(name##_table))          \
                        return NULL;                                              \
                return name##_table[i];                                           \
        }                                                                         \
        type name##_from_string(const char *s) {                                  \
                if (!s)                                                           \
                        return (type) -EINVAL;                                    \
                for (size_t i = 0; i < ELEMENTSOF(name##_table); i++)             \
                        if (name##_table[i] && streq(name##_table[i], s))         \
                                return (type) i;                                  \
                return (type) -EINVAL;                                            \
        }
