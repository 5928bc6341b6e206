/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "metrics/histogram.h"

void histogram_init(Histogram *h) {
        memset(h, 0, sizeof *h);
}
