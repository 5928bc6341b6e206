/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>

#include "basic/macro.h"
#include "basic/progress.h"

char *format_eta(char *buf, size_t size, double seconds) {
        uint64_t s, h, m;

        if (!(seconds >= 0) || seconds > 99.0 * 3600) {
                snprintf(buf, size, "--:--");
                return buf;
        }
        s = (uint64_t) seconds;
        if ((double) s < seconds)
                s++;
        h = s / 3600;
        m = s / 60 % 60;
        s %= 60;
        if (h > 0)
                snprintf(buf, size, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, h, m, s);
        else
                snprintf(buf, size, "%" PRIu64 ":%02" PRIu64, m, s);
        return buf;
}

char *progress_format(char *buf, size_t size, uint64_t done, uint64_t total, double elapsed_s, unsigned bar) {
        char bars[129], eta[32], rate[32];
        unsigned filled;

        done = MIN(done, total);
        bar = MIN(bar, (unsigned) sizeof bars - 1);
        filled = total > 0 ? (unsigned) (done * bar / total) : bar;
        for (unsigned i = 0; i < bar; i++)
                bars[i] = i < filled ? '#' : '.';
        bars[bar] = 0;

        if (done > 0 && elapsed_s > 0) {
                double r = (double) done / elapsed_s;
                snprintf(rate, sizeof rate, r >= 100 ? "%.0f/s" : "%.1f/s", r);
                format_eta(eta, sizeof eta, (double) (total - done) / r);
        } else {
                snprintf(rate, sizeof rate, "--/s");
                format_eta(eta, sizeof eta, -1);
        }
        snprintf(buf, size, "[%s] %" PRIu64 "/%" PRIu64 "  %s  ETA %s", bars, done, total, rate, eta);
        return buf;
}
