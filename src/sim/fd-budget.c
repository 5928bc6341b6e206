/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>

#include "basic/errmsg.h"
#include "basic/macro.h"
#include "sim/fd-budget.h"

unsigned fd_budget_devices(unsigned nofile, unsigned max_downloads) {
        uint64_t fixed = (uint64_t) FD_RESERVED_PER_WORKER + (uint64_t) max_downloads * FDS_PER_DOWNLOAD;

        if (nofile <= fixed)
                return 0;
        return (unsigned) ((nofile - fixed) / FDS_PER_DEVICE);
}

unsigned fd_budget_needed(unsigned n_devices, unsigned max_downloads) {
        uint64_t n = (uint64_t) FD_RESERVED_PER_WORKER + (uint64_t) max_downloads * FDS_PER_DOWNLOAD +
                     (uint64_t) n_devices * FDS_PER_DEVICE;
        return n > UINT_MAX ? UINT_MAX : (unsigned) n;
}

static unsigned div_up(unsigned a, unsigned b) {
        return a / b + (a % b != 0);
}

int fd_budget_workers(unsigned n_devices, unsigned workers, unsigned per_worker, unsigned budget,
                      char *err, size_t errlen) {
        unsigned w;

        if (n_devices == 0)
                return 1;
        if (budget == 0)
                return errf(err, errlen, -ERANGE, "the open-file limit leaves room for no device at all");
        if (workers > 0) {
                if (div_up(n_devices, MIN(workers, n_devices)) > budget)
                        return errf(err, errlen, -ERANGE,
                                    "workers = %u puts up to %u devices in one worker; its open-file limit allows %u "
                                    "(set workers = 0, or at least %u)",
                                    workers, div_up(n_devices, MIN(workers, n_devices)), budget,
                                    div_up(n_devices, budget));
                w = workers;
        } else {
                unsigned per = per_worker > 0 ? MIN(per_worker, budget) : budget;
                w = div_up(n_devices, per);
        }
        return (int) MAX(MIN(w, n_devices), 1u);
}
