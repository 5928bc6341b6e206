/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "sim/scenario.h"

static DaemonConfig c;
static MetricsBlock *t;

static void setup(void) {
        cr_assert_eq(daemon_config_init(&c), 0);
        t = metrics_totals_new();
        cr_assert_not_null(t);
}
static void teardown(void) {
        daemon_config_done(&c);
        free(t);
}
TestSuite(scenario, .init = setup, .fini = teardown);

Test(scenario, nothing_set_nothing_checked) {
        ReportCheck ch[SCENARIO_CHECKS_MAX];
        cr_assert_eq(scenario_evaluate(&c, t, 10, 0, ch), 0);
        cr_assert(scenario_passed(ch, 0));
}

Test(scenario, online_percent) {
        ReportCheck ch[SCENARIO_CHECKS_MAX];

        c.pass_online_min_percent = 90;
        cr_assert_eq(scenario_evaluate(&c, t, 10, 9, ch), 1);
        cr_assert(ch[0].passed);
        cr_assert_float_eq(ch[0].value, 90, 1e-9);
        cr_assert_str_eq(ch[0].name, "online >= 90 %");
        cr_assert_eq(scenario_evaluate(&c, t, 10, 8, ch), 1);
        cr_assert(!ch[0].passed);
        cr_assert(!scenario_passed(ch, 1));
        cr_assert_eq(scenario_evaluate(&c, t, 0, 0, ch), 1); /* an empty fleet is 0 % online */
        cr_assert(!ch[0].passed);
}

Test(scenario, latency_p99) {
        ReportCheck ch[SCENARIO_CHECKS_MAX];

        c.pass_connack_p99_max_ms = 5;
        c.pass_connect_p99_max_ms = 100;
        /* no connection at all: no evidence, failed */
        cr_assert_eq(scenario_evaluate(&c, t, 1, 1, ch), 2);
        cr_assert(!ch[0].passed && !ch[1].passed);
        for (int i = 0; i < 99; i++)
                histogram_record(&t->histograms[METRIC_CONNACK], 1000);     /* 1 ms */
        histogram_record(&t->histograms[METRIC_CONNACK], 50000);            /* one of 50 ms */
        for (int i = 0; i < 100; i++)
                histogram_record(&t->histograms[METRIC_CONNECT], 20000);
        cr_assert_eq(scenario_evaluate(&c, t, 1, 1, ch), 2);
        cr_assert(ch[0].passed, "connect p99 %g", ch[0].value);
        cr_assert(ch[1].passed, "connack p99 %g", ch[1].value);       /* p99 is the 99th value: 1 ms */
        histogram_record(&t->histograms[METRIC_CONNACK], 50000);
        cr_assert_eq(scenario_evaluate(&c, t, 1, 1, ch), 2);
        cr_assert(!ch[1].passed, "connack p99 %g", ch[1].value);
        cr_assert_float_eq(ch[1].value, 50, 0.05);
}

Test(scenario, ota_failures) {
        ReportCheck ch[SCENARIO_CHECKS_MAX];

        c.pass_ota_failures_max = 1;
        metrics_ota_result(t, 0);
        metrics_ota_result(t, 0);
        metrics_ota_result(t, -0x1503);
        cr_assert_eq(scenario_evaluate(&c, t, 3, 3, ch), 1);
        cr_assert(ch[0].passed);
        cr_assert_float_eq(ch[0].value, 1, 1e-9);
        metrics_ota_result(t, -0x7002);
        cr_assert_eq(scenario_evaluate(&c, t, 3, 3, ch), 1);
        cr_assert(!ch[0].passed);
}
