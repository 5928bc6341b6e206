/* SPDX-License-Identifier: MIT */
#pragma once

/* The run report as one self-contained HTML page: inline CSS and inline
 * SVG charts, no JavaScript and no external resource, so the file can be
 * mailed, archived with a CI run, or opened from disk years later.
 *
 * The page shows the run's metadata, the verdict (when the report has
 * one), the devices online and the connect rate over time, the latency
 * percentiles of every duration histogram on a log scale, the OTA
 * outcomes, the counters, the failure reasons and the per-device table
 * (failed and offline devices first, at most REPORT_HTML_MAX_DEVICES
 * rows). */

#include <json-c/json.h>
#include <stdio.h>

#define REPORT_HTML_MAX_DEVICES 1000

/* Writes the page for `report` (the JSON document espfleetd writes with
 * --report, report_version 1) to `f`. A pure function of its input: a
 * field that is missing or of the wrong type is left out and its section
 * says "no data"; a NULL `report` or one that is not an object gives a page
 * of "no data". Every string from the report is HTML-escaped.
 * Returns 0, -EINVAL when `f` is NULL, -ENOMEM, or the -errno of a failed
 * write (-EIO when stdio does not say). */
int report_html_write(FILE *f, json_object *report);
