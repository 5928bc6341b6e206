/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "basic/macro.h"
#include "metrics/report-html.h"

/* The report is user data: a hand-edited file, an older or newer daemon, a
 * truncated run. Every read below goes through these accessors, which take
 * NULL and anything of the wrong type as "missing". */

static json_object *get_typed(json_object *o, const char *key, json_type type) {
        json_object *v;

        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return json_object_is_type(v, type) ? v : NULL;
}

static json_object *get_object(json_object *o, const char *key) {
        return get_typed(o, key, json_type_object);
}

static json_object *get_array(json_object *o, const char *key) {
        return get_typed(o, key, json_type_array);
}

/* NULL for a missing, non-string or empty string. */
static const char *get_string(json_object *o, const char *key) {
        json_object *v = get_typed(o, key, json_type_string);
        const char *s = v ? json_object_get_string(v) : NULL;

        return s && *s ? s : NULL;
}

/* A finite int or double; false for anything else (NaN and Infinity too,
 * which json-c accepts). */
static bool number_of(json_object *v, double *ret) {
        double d;

        if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
                return false;
        d = json_object_get_double(v);
        if (!isfinite(d))
                return false;
        *ret = d;
        return true;
}

static bool get_number(json_object *o, const char *key, double *ret) {
        json_object *v;

        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
                return false;
        return number_of(v, ret);
}

/* 1 or 0, or -1 when missing or not a boolean. */
static int get_bool(json_object *o, const char *key) {
        json_object *v = get_typed(o, key, json_type_boolean);

        return v ? json_object_get_boolean(v) : -1;
}

static size_t array_length(json_object *a) {
        return json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

/* json-c asserts (or crashes, in json_object_object_foreach()) on anything
 * but an object: every walk over a member object checks this first. */
static size_t object_length(json_object *o) {
        return json_object_is_type(o, json_type_object) ? (size_t) json_object_object_length(o) : 0;
}

/* --- output --- */

/* Writes `s` escaped for both text and attribute values: & < > " ' become
 * entities, control characters U+FFFD. At most `max` bytes of `s` (cut on
 * a UTF-8 boundary), then an ellipsis. */
static void put_text_n(FILE *f, const char *s, size_t max) {
        size_t len, n;

        if (!s)
                return;
        len = n = strlen(s);
        if (n > max) {
                n = max;
                while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80)
                        n--;
        }
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c == '&')
                        fputs("&amp;", f);
                else if (c == '<')
                        fputs("&lt;", f);
                else if (c == '>')
                        fputs("&gt;", f);
                else if (c == '"')
                        fputs("&quot;", f);
                else if (c == '\'')
                        fputs("&#39;", f);
                else if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
                        fputs("\xef\xbf\xbd", f);
                else
                        fputc(c, f);
        }
        if (n < len)
                fputs("\xe2\x80\xa6", f);
}

/* A cell never holds more than this of one string; the JSON has it all. */
#define TEXT_MAX 1024

static void put_text(FILE *f, const char *s) {
        put_text_n(f, s, TEXT_MAX);
}

/* A string field of `o`, escaped, or `fallback` (a literal of ours). */
static void put_field(FILE *f, json_object *o, const char *key, const char *fallback) {
        const char *s = get_string(o, key);

        if (s)
                put_text(f, s);
        else
                fputs(fallback, f);
}

static void put_no_data(FILE *f) {
        fputs("<p class=\"nodata\">no data</p>\n", f);
}

/* --- numbers --- */

#define FMT_MAX 64
#define FMT_COUNT(v) format_count((char[FMT_MAX]){}, (v))
#define FMT_SECONDS(v) format_seconds((char[FMT_MAX]){}, (v))
#define FMT_RATE(v) format_rate((char[FMT_MAX]){}, (v))
#define FMT_BYTES(v) format_bytes((char[FMT_MAX]){}, (v))
#define FMT_NUMBER(v) format_number((char[FMT_MAX]){}, (v))

/* 12,345 for whole numbers, 4 significant digits otherwise. */
static const char *format_count(char *buf, double v) {
        char digits[24];
        char *p = buf;
        int n;

        if (v != floor(v) || fabs(v) >= 1e15) {
                snprintf(buf, FMT_MAX, "%.4g", v);
                return buf;
        }
        n = snprintf(digits, sizeof digits, "%.0f", fabs(v));
        if (v < 0)
                *p++ = '-';
        for (int i = 0; i < n; i++) {
                if (i > 0 && (n - i) % 3 == 0)
                        *p++ = ',';
                *p++ = digits[i];
        }
        *p = 0;
        return buf;
}

static const char *format_number(char *buf, double v) {
        snprintf(buf, FMT_MAX, "%g", v);
        return buf;
}

/* Three significant digits in the unit that fits: 118 µs, 53.2 ms, 2.06 s,
 * 2 min 0.5 s, 1 h 05 min. The thresholds sit where rounding to three
 * digits would carry into the next unit (999.96 ms is "1 s"). */
static const char *format_seconds(char *buf, double v) {
        const char *sign = v < 0 ? "-" : "";
        double a = fabs(v);

        if (a == 0)
                snprintf(buf, FMT_MAX, "0 s");
        else if (a < 0.9995e-3)
                snprintf(buf, FMT_MAX, "%s%.3g µs", sign, a * 1e6);
        else if (a < 0.9995)
                snprintf(buf, FMT_MAX, "%s%.3g ms", sign, a * 1e3);
        else if (a < 59.95)
                snprintf(buf, FMT_MAX, "%s%.3g s", sign, a);
        else if (a < 3599.95) {
                double t = round(a * 10) / 10, m = floor(t / 60);

                snprintf(buf, FMT_MAX, "%s%.0f min %g s", sign, m, round((t - m * 60) * 10) / 10);
        } else if (a < 1e9) {
                double h = floor(a / 3600), m = round((a - h * 3600) / 60);

                if (m >= 60) {
                        h++;
                        m = 0;
                }
                snprintf(buf, FMT_MAX, "%s%.0f h %02.0f min", sign, h, m);
        } else
                snprintf(buf, FMT_MAX, "%s%.3g s", sign, a);
        return buf;
}

static const char *format_scaled(char *buf, double v, double base, const char *const *units, size_t n_units) {
        double a = fabs(v);
        size_t u = 0;

        while (u + 1 < n_units && a >= base * 0.9995) {
                a /= base;
                u++;
        }
        snprintf(buf, FMT_MAX, "%s%.3g %s", v < 0 ? "-" : "", a, units[u]);
        return buf;
}

static const char *format_rate(char *buf, double v) {
        static const char *const units[] = { "B/s", "kB/s", "MB/s", "GB/s", "TB/s" };

        return format_scaled(buf, v, 1000, units, ELEMENTSOF(units));
}

static const char *format_bytes(char *buf, double v) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };

        return format_scaled(buf, v, 1024, units, ELEMENTSOF(units));
}

/* A step of 1, 2 or 5 times a power of ten that cuts [0, max] into at
 * most `ticks` parts, and the axis top, the first multiple of the step at
 * or above max. Always finite and positive. */
static void nice_axis(double max, int ticks, bool integer, double *ret_step, double *ret_top) {
        double rough, mag, r, step, top;

        if (!isfinite(max) || max <= 0)
                max = 1;
        rough = max / ticks;
        mag = pow(10, floor(log10(rough)));
        r = rough / mag;
        step = (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
        if (integer && step < 1)
                step = 1;
        top = ceil(max / step) * step;
        if (!isfinite(step) || !isfinite(top) || step <= 0 || top < max) {
                step = max / ticks;
                top = max;
        }
        *ret_step = step;
        *ret_top = top;
}

/* Tick steps for seconds since the start: whole seconds, then minutes. */
static double time_step(double range, int ticks) {
        static const double steps[] = {
                1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
                3600, 7200, 10800, 21600, 43200, 86400,
        };
        double rough = range / ticks, step, top;

        if (rough <= 1) {
                nice_axis(range, ticks, false, &step, &top);
                return step;
        }
        for (size_t i = 0; i < ELEMENTSOF(steps); i++)
                if (steps[i] >= rough)
                        return steps[i];
        nice_axis(range / 86400, ticks, true, &step, &top);
        return step * 86400;
}

/* --- SVG --- */

/* Charts are drawn 1:1 in the page's content column (1200 px less the
 * padding), so text in them reads at the size it is written. */
#define CHART_W 1120
/* What a character of 12 px text takes, on average, in a wide sans-serif
 * (DejaVu Sans); used to make room for labels. */
#define CHAR_W 7.0

typedef struct Scale {
        double d0, d1;          /* domain */
        double r0, r1;          /* range, px */
        bool log;               /* log10 between d0 > 0 and d1 */
} Scale;

typedef struct Frame {
        double left, right, top, bottom;        /* the plot area, px */
} Frame;

/* Maps v into the range, clamped to it; a value the scale cannot place
 * (NaN, <= 0 on a log scale) lands on the range's start. */
static double scale_map(const Scale *s, double v) {
        double a = s->d0, b = s->d1, t;

        if (s->log) {
                a = log10(a);
                b = log10(b);
                v = v > 0 ? log10(v) : a;
        }
        t = b > a ? (v - a) / (b - a) : 0;
        if (!isfinite(t))
                t = 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        return s->r0 + t * (s->r1 - s->r0);
}

static void svg_open(FILE *f, double w, double h, const char *label) {
        fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"%.0f\" height=\"%.0f\" "
                "viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"%s\">\n",
                w, h, w, h, label);
}

static void svg_close(FILE *f) {
        fputs("</svg>\n", f);
}

static void svg_line(FILE *f, const char *cls, double x1, double y1, double x2, double y2) {
        fprintf(f, "<line class=\"%s\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", cls, x1, y1, x2, y2);
}

/* Text of ours (labels, formatted numbers); anything from the report goes
 * through put_text() instead. */
static void svg_text(FILE *f, const char *cls, const char *anchor, double x, double y, const char *s) {
        fprintf(f, "<text class=\"%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">", cls, x, y, anchor);
        put_text(f, s);
        fputs("</text>\n", f);
}

/* A swatch and its label at (x, y); returns where the next one goes. */
static double svg_legend(FILE *f, double x, double y, const char *cls, const char *label) {
        fprintf(f, "<rect class=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" rx=\"2\"/>\n", cls, x, y - 10);
        svg_text(f, "legend", "start", x + 17, y, label);
        return x + 17 + strlen(label) * CHAR_W + 18;
}

/* Horizontal grid lines with labels at each step of a linear y scale from
 * 0, and the axis title, rotated, at the left edge. */
static void svg_y_axis(FILE *f, const Frame *p, const Scale *y, double step, const char *title) {
        for (int i = 0; i <= 50; i++) {
                double v = i * step, py;

                if (v > y->d1 * (1 + 1e-9))
                        break;
                py = scale_map(y, v);
                svg_line(f, i == 0 ? "axis" : "grid", p->left, py, p->right, py);
                svg_text(f, "tick", "end", p->left - 8, py + 4, FMT_COUNT(v));
        }
        fprintf(f, "<text class=\"title\" text-anchor=\"middle\" transform=\"translate(16 %.1f) rotate(-90)\">%s</text>\n",
                (p->top + p->bottom) / 2, title);
}

/* Labels in seconds for a short run, m:ss up to an hour, h:mm:ss beyond. */
static const char *format_clock(char *buf, double t, double end) {
        const char *sign = t < 0 ? "-" : "";
        double a = fabs(t);

        if (end < 120 || a >= 1e9)
                snprintf(buf, FMT_MAX, "%g", t);
        else if (end < 3600)
                snprintf(buf, FMT_MAX, "%s%.0f:%02.0f", sign, floor(a / 60), fmod(floor(a), 60));
        else
                snprintf(buf, FMT_MAX, "%s%.0f:%02.0f:%02.0f", sign, floor(a / 3600),
                         fmod(floor(a / 60), 60), fmod(floor(a), 60));
        return buf;
}

static const char *time_axis_title(double end) {
        return end < 120 ? "time since start (s)" : end < 3600 ? "time since start (min:s)" : "time since start (h:min:s)";
}

/* Vertical grid lines and labels along a time scale. */
static void svg_time_axis(FILE *f, const Frame *p, const Scale *x) {
        double step = time_step(x->d1 - x->d0, 10), first = ceil(x->d0 / step) * step;

        for (int i = 0; i <= 60; i++) {
                double v = first + i * step, px;

                if (v > x->d1 + step * 1e-9)
                        break;
                px = scale_map(x, v);
                svg_line(f, "grid", px, p->top, px, p->bottom);
                svg_line(f, "axis", px, p->bottom, px, p->bottom + 5);
                svg_text(f, "tick", "middle", px, p->bottom + 19, format_clock((char[FMT_MAX]){}, v, x->d1));
        }
        svg_line(f, "axis", p->left, p->bottom, p->right, p->bottom);
        svg_text(f, "title", "middle", (p->left + p->right) / 2, p->bottom + 38, time_axis_title(x->d1));
}

/* A line through many points: at most four points per pixel column (the
 * first, lowest, highest and last value falling in it), so an hour of 1 s
 * samples costs no more than the chart is wide, and no peak is lost. A
 * point that is not a number breaks the line. */
typedef struct Polyline {
        FILE *f;
        bool open;              /* a column is being gathered */
        bool pen;               /* the next point continues the line */
        long column;
        double first, lo, hi, last;
} Polyline;

static void polyline_point(Polyline *p, double x, double y) {
        fprintf(p->f, "%c%.1f %.1f", p->pen ? 'L' : 'M', x, y);
        p->pen = true;
}

static void polyline_flush(Polyline *p) {
        double x = (double) p->column;

        if (!p->open)
                return;
        polyline_point(p, x, p->first);
        if (p->lo != p->first)
                polyline_point(p, x, p->lo);
        if (p->hi != p->first)
                polyline_point(p, x, p->hi);
        if (p->last != p->lo && p->last != p->hi)
                polyline_point(p, x, p->last);
        p->open = false;
}

/* x and y are px, already clamped into the chart by scale_map(). */
static void polyline_add(Polyline *p, double x, double y, bool valid) {
        long column;

        if (!valid) {
                polyline_flush(p);
                p->pen = false;
                return;
        }
        column = lround(x);
        if (p->open && column == p->column) {
                p->lo = MIN(p->lo, y);
                p->hi = MAX(p->hi, y);
                p->last = y;
                return;
        }
        polyline_flush(p);
        p->open = true;
        p->column = column;
        p->first = p->lo = p->hi = p->last = y;
}

/* --- the timeline --- */

typedef struct Timeline {
        size_t n;
        double interval;                /* s, > 0 */
        double *t, *online, *connects, *failures;       /* NAN where missing */
        double t0, t1;                  /* the x domain: first sample to last sample + interval */
} Timeline;

static void timeline_done(Timeline *tl) {
        free(tl->t);
        free(tl->online);
        free(tl->connects);
        free(tl->failures);
}

static void load_series(json_object *a, size_t n, double *out) {
        size_t len = array_length(a);

        for (size_t i = 0; i < n; i++)
                if (i >= len || !number_of(json_object_array_get_idx(a, i), &out[i]))
                        out[i] = NAN;
}

/* Returns 0, -ENODATA when there is nothing to draw, or -ENOMEM. */
static int timeline_load(json_object *report, Timeline *tl) {
        json_object *o = get_object(report, "timeline");
        json_object *t = get_array(o, "t"), *online = get_array(o, "online");
        json_object *connects = get_array(o, "connects"), *failures = get_array(o, "failures");
        double lo = INFINITY, hi = -INFINITY;
        size_t n;

        *tl = (Timeline) {};
        n = t ? array_length(t) : MAX(array_length(online), MAX(array_length(connects), array_length(failures)));
        if (n == 0)
                return -ENODATA;
        tl->n = n;
        tl->t = calloc(n, sizeof(double));
        tl->online = calloc(n, sizeof(double));
        tl->connects = calloc(n, sizeof(double));
        tl->failures = calloc(n, sizeof(double));
        if (!tl->t || !tl->online || !tl->connects || !tl->failures)
                return -ENOMEM;
        load_series(online, n, tl->online);
        load_series(connects, n, tl->connects);
        load_series(failures, n, tl->failures);

        if (!get_number(o, "interval_s", &tl->interval) || tl->interval <= 0)
                tl->interval = 0;
        if (t) {
                load_series(t, n, tl->t);
                if (tl->interval == 0) {
                        /* Without interval_s: the mean step between the first and the last sample. */
                        size_t a = 0, b = n;

                        while (a < n && isnan(tl->t[a]))
                                a++;
                        while (b > a + 1 && isnan(tl->t[b - 1]))
                                b--;
                        if (b > a + 1)
                                tl->interval = (tl->t[b - 1] - tl->t[a]) / (double) (b - 1 - a);
                        if (!isfinite(tl->interval) || tl->interval <= 0)
                                tl->interval = 1;
                }
        } else {
                if (tl->interval == 0)
                        tl->interval = 1;
                for (size_t i = 0; i < n; i++)
                        tl->t[i] = (double) i * tl->interval;
        }

        for (size_t i = 0; i < n; i++)
                if (!isnan(tl->t[i])) {
                        lo = MIN(lo, tl->t[i]);
                        hi = MAX(hi, tl->t[i]);
                }
        tl->t0 = lo;
        tl->t1 = hi + tl->interval;
        if (!isfinite(tl->t0) || !isfinite(tl->t1) || !isfinite(tl->t1 - tl->t0) || tl->t1 <= tl->t0)
                return -ENODATA;
        return 0;
}

#define TIME_CHART_H 300

static Frame time_chart_frame(void) {
        return (Frame) { .left = 70, .right = CHART_W - 24, .top = 30, .bottom = TIME_CHART_H - 48 };
}

static void chart_online(FILE *f, const Timeline *tl, double devices) {
        Frame p = time_chart_frame();
        Polyline line = { .f = f };
        double ymax = 0, last = NAN, step, top;
        Scale x, y;

        for (size_t i = 0; i < tl->n; i++)
                if (!isnan(tl->t[i]) && !isnan(tl->online[i])) {
                        ymax = MAX(ymax, tl->online[i]);
                        last = tl->online[i];
                }
        if (isnan(last)) {
                put_no_data(f);
                return;
        }
        fprintf(f, "<p class=\"note\">peak %s online, %s at the end", FMT_COUNT(ymax), FMT_COUNT(last));
        if (!isnan(devices))
                fprintf(f, ", of %s devices", FMT_COUNT(devices));
        fputs(".</p>\n", f);

        nice_axis(isnan(devices) ? ymax : MAX(ymax, devices), 5, true, &step, &top);
        x = (Scale) { tl->t0, tl->t1, p.left, p.right, false };
        y = (Scale) { 0, top, p.bottom, p.top, false };

        svg_open(f, CHART_W, TIME_CHART_H, "Devices online over time");
        svg_y_axis(f, &p, &y, step, "devices online");
        svg_time_axis(f, &p, &x);
        if (!isnan(devices) && devices > 0) {
                double py = scale_map(&y, devices);
                char label[FMT_MAX + 16];

                svg_line(f, "ref", p.left, py, p.right, py);
                snprintf(label, sizeof label, "%s devices", FMT_COUNT(devices));
                svg_text(f, "ref-label", "end", p.right - 4, py - 5, label);
        }
        fputs("<path class=\"online\" d=\"", f);
        for (size_t i = 0; i < tl->n; i++) {
                bool valid = !isnan(tl->t[i]) && !isnan(tl->online[i]);

                polyline_add(&line, valid ? scale_map(&x, tl->t[i]) : 0, valid ? scale_map(&y, tl->online[i]) : 0, valid);
        }
        polyline_flush(&line);
        fputs("\"/>\n", f);
        svg_close(f);
}

/* Bars at least this wide: a long run is binned into fewer, wider bars. */
#define BAR_MIN_W 3.0

typedef struct RateBin {
        double start, end;      /* s */
        double connects, failures;      /* per second */
} RateBin;

/* Bin b of `per_bin` samples; false when it has no usable time. Negative
 * and missing counts count as 0. */
static bool rate_bin(const Timeline *tl, size_t b, size_t per_bin, RateBin *ret) {
        size_t i0 = b * per_bin, i1 = MIN(tl->n, i0 + per_bin);
        double start = INFINITY, end = -INFINITY, c = 0, fl = 0, d;

        for (size_t i = i0; i < i1; i++) {
                if (isnan(tl->t[i]))
                        continue;
                start = MIN(start, tl->t[i]);
                end = MAX(end, tl->t[i] + tl->interval);
                if (tl->connects[i] > 0)
                        c += tl->connects[i];
                if (tl->failures[i] > 0)
                        fl += tl->failures[i];
        }
        d = (double) (i1 - i0) * tl->interval;
        if (!isfinite(start) || !isfinite(end) || !(d > 0))
                return false;
        *ret = (RateBin) { start, end, c / d, fl / d };
        return isfinite(ret->connects) && isfinite(ret->failures);
}

static void chart_connect_rate(FILE *f, const Timeline *tl) {
        Frame p = time_chart_frame();
        double plot_w = p.right - p.left, total_c = 0, total_f = 0, peak = 0, peak_at = 0, step, top, lx;
        size_t per_bin, n_bins;
        bool any = false;
        RateBin bin;
        Scale x, y;

        for (size_t i = 0; i < tl->n; i++) {
                if (!isnan(tl->connects[i]) || !isnan(tl->failures[i]))
                        any = true;
                if (tl->connects[i] > 0)
                        total_c += tl->connects[i];
                if (tl->failures[i] > 0)
                        total_f += tl->failures[i];
        }
        if (!any) {
                put_no_data(f);
                return;
        }
        per_bin = (size_t) ceil((double) tl->n / (plot_w / BAR_MIN_W));
        per_bin = MAX(per_bin, (size_t) 1);
        n_bins = (tl->n + per_bin - 1) / per_bin;
        for (size_t b = 0; b < n_bins; b++)
                if (rate_bin(tl, b, per_bin, &bin) && bin.connects + bin.failures > peak) {
                        peak = bin.connects + bin.failures;
                        peak_at = bin.start;
                }

        fprintf(f, "<p class=\"note\">%s connects and %s failed attempts; bars of %s; peak %s attempts/s at %s.</p>\n",
                FMT_COUNT(total_c), FMT_COUNT(total_f), FMT_SECONDS((double) per_bin * tl->interval),
                FMT_NUMBER(round(peak * 100) / 100), format_clock((char[FMT_MAX]){}, peak_at, tl->t1));

        nice_axis(peak, 5, peak >= 5, &step, &top);
        x = (Scale) { tl->t0, tl->t1, p.left, p.right, false };
        y = (Scale) { 0, top, p.bottom, p.top, false };

        svg_open(f, CHART_W, TIME_CHART_H, "Connect rate over time");
        svg_y_axis(f, &p, &y, step, "per second");
        lx = svg_legend(f, p.left + 8, 18, "connects", "connects/s");
        svg_legend(f, lx, 18, "failures", "failed attempts/s");
        for (size_t b = 0; b < n_bins; b++) {
                double x0, x1, yc, yf, w;

                if (!rate_bin(tl, b, per_bin, &bin))
                        continue;
                x0 = scale_map(&x, bin.start);
                x1 = scale_map(&x, bin.end);
                w = MAX(x1 - x0 - (x1 - x0 > 4 ? 1 : 0), 0.5);
                yc = scale_map(&y, bin.connects);
                yf = scale_map(&y, bin.connects + bin.failures);
                if (bin.connects > 0)
                        fprintf(f, "<rect class=\"connects\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n",
                                x0, yc, w, p.bottom - yc);
                if (bin.failures > 0)
                        fprintf(f, "<rect class=\"failures\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n",
                                x0, yf, w, yc - yf);
        }
        svg_time_axis(f, &p, &x);
        svg_close(f);
}

static int section_timeline(FILE *f, json_object *report) {
        _cleanup_(timeline_done) Timeline tl = {};
        double devices = NAN;
        int r;

        fputs("<section class=\"card\">\n<h2>Devices online</h2>\n", f);
        r = timeline_load(report, &tl);
        if (r == -ENOMEM)
                return r;
        if (!get_number(get_object(report, "summary"), "devices", &devices))
                devices = NAN;
        if (r < 0)
                put_no_data(f);
        else
                chart_online(f, &tl, devices);
        fputs("</section>\n<section class=\"card\">\n<h2>Connect rate</h2>\n", f);
        if (r < 0)
                put_no_data(f);
        else
                chart_connect_rate(f, &tl);
        fputs("</section>\n", f);
        return 0;
}

/* --- latency histograms --- */

/* The daemon's histograms in its own order (metrics_histogram_key()); keys
 * it does not know come after them, in the report's order. */
static const char *const histogram_order[] = {
        "connect", "tcp_connect", "tls_handshake", "ds_sign", "connack", "suback", "puback",
        "command", "telemetry", "ota_ttfb", "ota_download", "ota_throughput", "ota_verify",
        "ota_run_to_online",
};

static const struct {
        const char *key, *label, *cls;
} percentiles[] = {
        { "p50", "p50", "q50" },
        { "p90", "p90", "q90" },
        { "p99", "p99", "q99" },
        { "p99.9", "p99.9", "q999" },
        { "max", "max", "qmax" },
};

typedef struct HistogramRow {
        const char *key;
        json_object *h;         /* NULL when not an object */
} HistogramRow;

static bool is_known_histogram(const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(histogram_order); i++)
                if (streq(histogram_order[i], key))
                        return true;
        return false;
}

/* Fills rows (room for every key of `hs`); returns how many. */
static size_t histogram_rows(json_object *hs, HistogramRow *rows) {
        size_t n = 0;
        json_object *v;

        for (size_t i = 0; i < ELEMENTSOF(histogram_order); i++)
                if (json_object_object_get_ex(hs, histogram_order[i], &v))
                        rows[n++] = (HistogramRow) {
                                histogram_order[i], json_object_is_type(v, json_type_object) ? v : NULL
                        };
        json_object_object_foreach(hs, key, val)
                if (!is_known_histogram(key))
                        rows[n++] = (HistogramRow) { key, json_object_is_type(val, json_type_object) ? val : NULL };
        return n;
}

/* A histogram of durations: unit "seconds", or no unit on a key that is
 * not the throughput. */
static bool histogram_is_time(const HistogramRow *row) {
        const char *unit = get_string(row->h, "unit");

        return unit ? streq(unit, "seconds") : !streq(row->key, "ota_throughput");
}

static bool histogram_has_samples(const HistogramRow *row) {
        double count;

        return row->h && get_number(row->h, "count", &count) && count > 0;
}

#define LAT_LABEL_W 190.0
#define LAT_BAR_H 11.0
#define LAT_BAR_GAP 2.0
#define LAT_GROUP_GAP 14.0
#define LAT_TOP 54.0
#define LAT_BOTTOM 44.0

static void chart_latency(FILE *f, const HistogramRow *rows, size_t n_rows) {
        double lo = INFINITY, hi = 0, group_h, h, v, lx;
        int e0, e1;
        size_t n_drawn = 0, k = 0;
        Frame p;
        Scale x;

        for (size_t i = 0; i < n_rows; i++) {
                if (!histogram_is_time(&rows[i]) || !histogram_has_samples(&rows[i]))
                        continue;
                n_drawn++;
                for (size_t j = 0; j < ELEMENTSOF(percentiles); j++)
                        if (get_number(rows[i].h, percentiles[j].key, &v) && v > 0) {
                                lo = MIN(lo, v);
                                hi = MAX(hi, v);
                        }
        }
        if (n_drawn == 0 || !(hi > 0)) {
                put_no_data(f);
                return;
        }
        /* Whole decades around the data, at most 12 of them. */
        e1 = (int) MIN(ceil(log10(hi)), 300.0);
        e0 = (int) MAX(floor(log10(lo)), (double) e1 - 12);
        if (e1 <= e0)
                e1 = e0 + 1;

        group_h = ELEMENTSOF(percentiles) * (LAT_BAR_H + LAT_BAR_GAP) - LAT_BAR_GAP + LAT_GROUP_GAP;
        h = LAT_TOP + (double) n_drawn * group_h + LAT_BOTTOM;
        p = (Frame) { .left = LAT_LABEL_W, .right = CHART_W - 80, .top = LAT_TOP, .bottom = h - LAT_BOTTOM };
        x = (Scale) { pow(10, e0), pow(10, e1), p.left, p.right, true };

        svg_open(f, CHART_W, h, "Latency percentiles per histogram, log scale");
        for (size_t i = 0; i < n_drawn; i += 2)
                fprintf(f, "<rect class=\"band\" x=\"0\" y=\"%.1f\" width=\"%.0f\" height=\"%.1f\"/>\n",
                        p.top + (double) i * group_h, (double) CHART_W, group_h);
        lx = p.left;
        for (size_t j = 0; j < ELEMENTSOF(percentiles); j++)
                lx = svg_legend(f, lx, 16, percentiles[j].cls, percentiles[j].label);
        for (int e = e0; e <= e1; e++) {
                double px = scale_map(&x, pow(10, e));

                for (int m = 2; e < e1 && m <= 9; m++) {
                        double mx = scale_map(&x, m * pow(10, e));

                        svg_line(f, "grid", mx, p.top, mx, p.bottom);
                }
                svg_line(f, "grid major", px, p.top - 4, px, p.bottom);
                svg_line(f, "axis", px, p.bottom, px, p.bottom + 5);
                /* The decades at the top too: the chart is taller than a screen. */
                svg_text(f, "tick", "middle", px, p.top - 9, FMT_SECONDS(pow(10, e)));
                svg_text(f, "tick", "middle", px, p.bottom + 19, FMT_SECONDS(pow(10, e)));
        }
        svg_line(f, "axis", p.left, p.bottom, p.right, p.bottom);
        svg_line(f, "axis", p.left, p.top - 4, p.left, p.bottom);
        svg_text(f, "title", "middle", (p.left + p.right) / 2, p.bottom + 38, "seconds (log scale)");

        for (size_t i = 0; i < n_rows; i++) {
                const HistogramRow *row = &rows[i];
                double y0 = p.top + (double) k * group_h + LAT_GROUP_GAP / 2, count = 0;
                char label[FMT_MAX + 8];

                if (!histogram_is_time(row) || !histogram_has_samples(row))
                        continue;
                k++;
                fprintf(f, "<text class=\"hist-name\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", p.left - 12, y0 + 26);
                put_text_n(f, row->key, 24);
                fputs("</text>\n", f);
                get_number(row->h, "count", &count);
                snprintf(label, sizeof label, "n = %s", FMT_COUNT(count));
                svg_text(f, "tick", "end", p.left - 12, y0 + 42, label);

                for (size_t j = 0; j < ELEMENTSOF(percentiles); j++) {
                        double by = y0 + (double) j * (LAT_BAR_H + LAT_BAR_GAP), px;

                        if (!get_number(row->h, percentiles[j].key, &v))
                                continue;
                        px = scale_map(&x, v);
                        fprintf(f, "<rect class=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n",
                                percentiles[j].cls, p.left, by, MAX(px - p.left, 1.0), LAT_BAR_H);
                        svg_text(f, "value", "start", MAX(px, p.left + 1) + 4, by + LAT_BAR_H - 1.5, FMT_SECONDS(v));
                }
        }
        svg_close(f);
}

static void put_histogram_value(FILE *f, const HistogramRow *row, const char *key, bool time) {
        double v;

        if (!get_number(row->h, key, &v))
                fputs("<td class=\"n muted\">—</td>", f);
        else
                fprintf(f, "<td class=\"n\">%s</td>", time ? FMT_SECONDS(v) : FMT_RATE(v));
}

static void table_histograms(FILE *f, const HistogramRow *rows, size_t n_rows) {
        fputs("<table class=\"hist\">\n<thead><tr><th>histogram</th><th>unit</th><th class=\"n\">count</th>"
              "<th class=\"n\">min</th><th class=\"n\">mean</th>", f);
        for (size_t j = 0; j < ELEMENTSOF(percentiles); j++)
                fprintf(f, "<th class=\"n\">%s</th>", percentiles[j].label);
        fputs("</tr></thead>\n<tbody>\n", f);
        for (size_t i = 0; i < n_rows; i++) {
                const HistogramRow *row = &rows[i];
                bool time = histogram_is_time(row);
                double count;

                fputs("<tr><td class=\"mono\">", f);
                put_text_n(f, row->key, 64);
                fputs("</td><td>", f);
                put_field(f, row->h, "unit", time ? "seconds" : "bytes/s");
                fputs("</td>", f);
                if (!row->h) {
                        fputs("<td class=\"muted\" colspan=\"8\">no data</td></tr>\n", f);
                        continue;
                }
                if (!get_number(row->h, "count", &count) || count <= 0) {
                        fprintf(f, "<td class=\"n\">%s</td><td class=\"muted\" colspan=\"7\">no samples</td></tr>\n",
                                get_number(row->h, "count", &count) ? FMT_COUNT(count) : "—");
                        continue;
                }
                fprintf(f, "<td class=\"n\">%s</td>", FMT_COUNT(count));
                put_histogram_value(f, row, "min", time);
                put_histogram_value(f, row, "mean", time);
                for (size_t j = 0; j < ELEMENTSOF(percentiles); j++)
                        put_histogram_value(f, row, percentiles[j].key, time);
                fputs("</tr>\n", f);
        }
        fputs("</tbody>\n</table>\n", f);
}

static int section_latency(FILE *f, json_object *report) {
        json_object *hs = get_object(report, "histograms");
        _cleanup_free_ HistogramRow *rows = NULL;
        size_t n = 0, empty = 0;

        fputs("<section class=\"card\">\n<h2>Latency percentiles</h2>\n", f);
        if (object_length(hs) > 0) {
                rows = calloc(object_length(hs), sizeof *rows);
                if (!rows)
                        return -ENOMEM;
                n = histogram_rows(hs, rows);
        }
        if (n == 0) {
                put_no_data(f);
                fputs("</section>\n", f);
                return 0;
        }
        fputs("<p class=\"note\">p50, p90, p99, p99.9 and max of every duration, on a log scale. "
              "Durations start when an action was due, not when the loop got to it.", f);
        for (size_t i = 0; i < n; i++)
                if (histogram_is_time(&rows[i]) && !histogram_has_samples(&rows[i])) {
                        fputs(empty++ == 0 ? " No samples: " : ", ", f);
                        put_text_n(f, rows[i].key, 64);
                }
        fputs(empty > 0 ? ".</p>\n" : "</p>\n", f);
        chart_latency(f, rows, n);
        table_histograms(f, rows, n);
        fputs("</section>\n", f);
        return 0;
}

/* --- OTA outcomes --- */

typedef struct NamedCount {
        const char *name;
        double count;
} NamedCount;

/* Largest first, and `first` (when not NULL) ahead of everything. */
static int named_count_cmp(const void *a, const void *b, void *userdata) {
        const NamedCount *x = a, *y = b;
        const char *first = userdata;
        bool fx = first && streq(x->name, first), fy = first && streq(y->name, first);

        if (fx != fy)
                return fx ? -1 : 1;
        if (x->count != y->count)
                return x->count > y->count ? -1 : 1;
        return strcmp(x->name, y->name);
}

/* The members of `o` whose values are numbers, sorted by named_count_cmp(),
 * and the sum of the positive ones. The names point into `o`. */
static int named_counts(json_object *o, const char *first, NamedCount **ret, size_t *ret_n, double *ret_total) {
        _cleanup_free_ NamedCount *v = NULL;
        size_t n = 0;
        double total = 0;

        *ret = NULL;
        *ret_n = 0;
        *ret_total = 0;
        if (object_length(o) == 0)
                return 0;
        v = calloc(object_length(o), sizeof *v);
        if (!v)
                return -ENOMEM;
        json_object_object_foreach(o, key, val) {
                double c;

                if (!number_of(val, &c))
                        continue;
                v[n++] = (NamedCount) { key, c };
                if (c > 0)
                        total += c;
        }
        qsort_r(v, n, sizeof *v, named_count_cmp, (void *) first);
        *ret = TAKE_PTR(v);
        *ret_n = n;
        *ret_total = total;
        return 0;
}

#define OTA_MAX_BARS 30
#define OTA_BAR_H 20.0
#define OTA_BAR_GAP 8.0

static int section_ota(FILE *f, json_object *report) {
        json_object *ota = get_object(get_object(report, "summary"), "ota");
        _cleanup_free_ NamedCount *v = NULL;
        double total, max = 0, label_w = 0, step, top, h, ok, failed, rb;
        size_t n, shown;
        Frame p;
        Scale x;
        int r;

        fputs("<section class=\"card\">\n<h2>OTA outcomes</h2>\n", f);
        if (ota) {
                fputs("<p class=\"note\">", f);
                fprintf(f, "%s ok, ", get_number(ota, "ok", &ok) ? FMT_COUNT(ok) : "—");
                fprintf(f, "%s failed, ", get_number(ota, "failed", &failed) ? FMT_COUNT(failed) : "—");
                fprintf(f, "%s rolled back", get_number(ota, "rolled_back", &rb) ? FMT_COUNT(rb) : "—");
                fputs(" (the devices' last outcome). The bars count every outcome by its ESP-IDF result.</p>\n", f);
        }
        r = named_counts(get_object(get_object(report, "counters"), "ota_results"), "ESP_OK", &v, &n, &total);
        if (r < 0)
                return r;
        if (n == 0) {
                put_no_data(f);
                fputs("</section>\n", f);
                return 0;
        }
        shown = MIN(n, (size_t) OTA_MAX_BARS);
        for (size_t i = 0; i < shown; i++) {
                max = MAX(max, v[i].count);
                label_w = MAX(label_w, (double) MIN(strlen(v[i].name), (size_t) 40) * CHAR_W);
        }
        nice_axis(max, 8, true, &step, &top);
        h = 16 + (double) shown * (OTA_BAR_H + OTA_BAR_GAP) + 44;
        p = (Frame) { .left = label_w + 24, .right = CHART_W - 90, .top = 16, .bottom = h - 44 };
        x = (Scale) { 0, top, p.left, p.right, false };

        svg_open(f, CHART_W, h, "OTA outcomes by ESP-IDF result");
        for (int i = 0; i <= 50; i++) {
                double t = i * step, px;

                if (t > top * (1 + 1e-9))
                        break;
                px = scale_map(&x, t);
                svg_line(f, i == 0 ? "axis" : "grid", px, p.top, px, p.bottom);
                svg_text(f, "tick", "middle", px, p.bottom + 19, FMT_COUNT(t));
        }
        svg_line(f, "axis", p.left, p.bottom, p.right, p.bottom);
        svg_text(f, "title", "middle", (p.left + p.right) / 2, p.bottom + 38, "outcomes");
        for (size_t i = 0; i < shown; i++) {
                double y0 = p.top + OTA_BAR_GAP / 2 + (double) i * (OTA_BAR_H + OTA_BAR_GAP), px = scale_map(&x, v[i].count);
                char label[2 * FMT_MAX];

                fprintf(f, "<text class=\"mono-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", p.left - 10, y0 + 14);
                put_text_n(f, v[i].name, 40);
                fputs("</text>\n", f);
                fprintf(f, "<rect class=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n",
                        streq(v[i].name, "ESP_OK") ? "ok" : "bad", p.left, y0, MAX(px - p.left, 1.0), OTA_BAR_H);
                if (total > 0)
                        snprintf(label, sizeof label, "%s (%.1f %%)", FMT_COUNT(v[i].count), 100.0 * MAX(v[i].count, 0.0) / total);
                else
                        snprintf(label, sizeof label, "%s", FMT_COUNT(v[i].count));
                svg_text(f, "value", "start", px + 6, y0 + 14, label);
        }
        svg_close(f);
        if (n > shown)
                fprintf(f, "<p class=\"note\">%zu more results in the JSON report.</p>\n", n - shown);
        fputs("</section>\n", f);
        return 0;
}

/* --- counters and failure reasons --- */

static void section_counters(FILE *f, json_object *report) {
        json_object *counters = get_object(report, "counters");
        size_t n = 0;

        fputs("<div class=\"card\">\n<h2>Counters</h2>\n", f);
        if (object_length(counters) > 0) {
                json_object_object_foreach(counters, key, val) {
                        double v;

                        if (!number_of(val, &v))
                                continue;
                        if (n++ == 0)
                                fputs("<table class=\"kv\">\n<tbody>\n", f);
                        fputs("<tr><td class=\"mono\">", f);
                        put_text_n(f, key, 64);
                        fprintf(f, "</td><td class=\"n\">%s", FMT_COUNT(v));
                        if (streq(key, "ota_bytes") && v >= 1024)
                                fprintf(f, " <span class=\"muted\">(%s)</span>", FMT_BYTES(v));
                        fputs("</td></tr>\n", f);
                }
        }
        if (n > 0)
                fputs("</tbody>\n</table>\n", f);
        else
                put_no_data(f);
        fputs("</div>\n", f);
}

#define REASONS_MAX 50

static int table_reasons(FILE *f, json_object *counters, const char *key, const char *title) {
        _cleanup_free_ NamedCount *v = NULL;
        double total;
        size_t n;
        int r;

        fprintf(f, "<h3>%s</h3>\n", title);
        r = named_counts(get_object(counters, key), NULL, &v, &n, &total);
        if (r < 0)
                return r;
        if (n == 0) {
                put_no_data(f);
                return 0;
        }
        fputs("<table class=\"kv\">\n<thead><tr><th>reason</th><th class=\"n\">count</th><th class=\"n\">share</th></tr></thead>\n<tbody>\n", f);
        for (size_t i = 0; i < MIN(n, (size_t) REASONS_MAX); i++) {
                fputs("<tr><td class=\"mono\">", f);
                put_text_n(f, v[i].name, 80);
                fprintf(f, "</td><td class=\"n\">%s</td>", FMT_COUNT(v[i].count));
                if (total > 0)
                        fprintf(f, "<td class=\"n\">%.1f %%</td></tr>\n", 100.0 * MAX(v[i].count, 0.0) / total);
                else
                        fputs("<td class=\"n muted\">—</td></tr>\n", f);
        }
        fputs("</tbody>\n</table>\n", f);
        if (n > REASONS_MAX)
                fprintf(f, "<p class=\"note\">%zu more in the JSON report.</p>\n", n - REASONS_MAX);
        return 0;
}

static int section_reasons(FILE *f, json_object *report) {
        json_object *counters = get_object(report, "counters");
        int r;

        fputs("<div class=\"card\">\n<h2>Failure reasons</h2>\n", f);
        r = table_reasons(f, counters, "connect_failures", "Connection attempts that failed");
        if (r < 0)
                return r;
        r = table_reasons(f, counters, "disconnects", "Connections that ended");
        if (r < 0)
                return r;
        fputs("</div>\n", f);
        return 0;
}

/* --- devices --- */

typedef struct DeviceRow {
        json_object *d;
        int rank;
        size_t index;
} DeviceRow;

static bool device_ota_failed(json_object *d) {
        const char *result = get_string(get_object(d, "ota"), "result");

        return result && !streq(result, "ESP_OK");
}

/* Failed devices first, then the ones that never got on (no-connect),
 * then the rest that are not online, then online devices with an OTA
 * failure, a rollback or an error on record, then the healthy ones. */
static int device_rank(json_object *d) {
        const char *state = get_string(d, "state");
        double rollbacks;

        if (!state)
                return 2;
        if (streq(state, "failed"))
                return 0;
        if (streq(state, "no-connect"))
                return 1;
        if (!streq(state, "online"))
                return 2;
        if (device_ota_failed(d) || (get_number(d, "rollbacks", &rollbacks) && rollbacks > 0) || get_string(d, "last_error"))
                return 3;
        return 4;
}

static int device_row_cmp(const void *a, const void *b) {
        const DeviceRow *x = a, *y = b;

        if (x->rank != y->rank)
                return x->rank < y->rank ? -1 : 1;
        return x->index < y->index ? -1 : x->index > y->index;
}

static const char *state_class(const char *state) {
        static const struct {
                const char *state, *cls;
        } table[] = {
                { "online", "ok" },
                { "failed", "bad" },
                { "no-connect", "bad" },
                { "connecting", "warn" },
                { "backoff", "warn" },
                { "booting", "warn" },
                { "restarting", "warn" },
        };

        for (size_t i = 0; state && i < ELEMENTSOF(table); i++)
                if (streq(table[i].state, state))
                        return table[i].cls;
        return "muted";
}

static void put_count_cell(FILE *f, json_object *d, const char *key) {
        double v;

        if (get_number(d, key, &v))
                fprintf(f, "<td class=\"n%s\">%s</td>", v > 0 && !streq(key, "connects") ? " hot" : "", FMT_COUNT(v));
        else
                fputs("<td class=\"n muted\">—</td>", f);
}

static void put_ota_cell(FILE *f, json_object *d) {
        json_object *ota = get_object(d, "ota"), *history = get_array(ota, "history");
        const char *result = get_string(ota, "result");
        size_t n = array_length(history);
        double count;

        fputs("<td", f);
        if (n > 0) {
                /* The history as a tooltip: no script needed. */
                fputs(" title=\"", f);
                for (size_t i = n > 4 ? n - 4 : 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(history, i);
                        double s;

                        put_field(f, e, "at", "?");
                        fputs(" ", f);
                        put_field(f, e, "result", "?");
                        fputs(" ", f);
                        put_field(f, e, "version", "");
                        if (get_number(e, "duration_s", &s))
                                fprintf(f, " %s", FMT_SECONDS(s));
                        if (i + 1 < n)
                                fputs("&#10;", f);
                }
                fputs("\"", f);
        }
        fputs(">", f);
        if (result) {
                fprintf(f, "<span class=\"mono %s\">", streq(result, "ESP_OK") ? "ok-text" : "bad-text");
                put_text_n(f, result, 48);
                fputs("</span>", f);
        } else
                fputs("<span class=\"muted\">—</span>", f);
        if (get_number(ota, "count", &count) && count > 1)
                fprintf(f, " <span class=\"muted\">×%s</span>", FMT_COUNT(count));
        fputs("</td>", f);
}

static void put_device_row(FILE *f, json_object *d) {
        const char *state = get_string(d, "state"), *cls = state_class(state);
        double v, last, max;

        fprintf(f, "<tr class=\"row-%s\"><td class=\"mono id\">", cls);
        put_field(f, d, "id", "<span class=\"muted\">(no id)</span>");
        if (get_number(d, "worker", &v))
                fprintf(f, "<br><span class=\"muted\">worker %s</span>", FMT_COUNT(v));
        fputs("</td>", f);
        fprintf(f, "<td><span class=\"pill %s\">", cls);
        put_text_n(f, state ?: "unknown", 32);
        fputs("</span></td>", f);
        put_count_cell(f, d, "connects");
        put_count_cell(f, d, "connect_failures");
        put_count_cell(f, d, "disconnects");
        fputs("<td class=\"n\">", f);
        if (get_number(d, "reboots", &v))
                fputs(FMT_COUNT(v), f);
        else
                fputs("<span class=\"muted\">—</span>", f);
        if (get_number(d, "rollbacks", &v) && v > 0)
                fprintf(f, "<br><span class=\"bad-text\">%s rollback%s</span>", FMT_COUNT(v), v == 1 ? "" : "s");
        fputs("</td><td class=\"n\">", f);
        if (get_number(d, "last_connect_s", &last))
                fputs(FMT_SECONDS(last), f);
        if (get_number(d, "max_connect_s", &max))
                fprintf(f, "<br><span class=\"muted\">max %s</span>", FMT_SECONDS(max));
        fputs("</td><td class=\"err\">", f);
        if (get_string(d, "last_error")) {
                put_text_n(f, get_string(d, "last_error"), 300);
                if (get_string(d, "last_error_at")) {
                        fputs("<br><span class=\"muted\">", f);
                        put_text_n(f, get_string(d, "last_error_at"), 40);
                        fputs("</span>", f);
                }
        }
        fputs("</td>", f);
        put_ota_cell(f, d);
        fputs("<td class=\"mono\">", f);
        put_field(f, d, "version", "");
        fputs("</td></tr>\n", f);
}

static int section_devices(FILE *f, json_object *report) {
        json_object *devices = get_array(report, "devices");
        _cleanup_free_ DeviceRow *rows = NULL;
        size_t len = array_length(devices), n = 0;

        fputs("<section class=\"card\">\n<h2>Devices</h2>\n", f);
        if (len > 0) {
                rows = calloc(len, sizeof *rows);
                if (!rows)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < len; i++) {
                json_object *d = json_object_array_get_idx(devices, i);

                if (json_object_is_type(d, json_type_object))
                        rows[n++] = (DeviceRow) { d, device_rank(d), i };
        }
        if (n == 0) {
                put_no_data(f);
                fputs("</section>\n", f);
                return 0;
        }
        qsort(rows, n, sizeof *rows, device_row_cmp);

        fprintf(f, "<p class=\"note\">%s devices; failed and offline devices first, then online ones with an error on record.",
                FMT_COUNT((double) n));
        if (n > REPORT_HTML_MAX_DEVICES)
                fprintf(f, " The first %s are shown.", FMT_COUNT(REPORT_HTML_MAX_DEVICES));
        fputs(" Hover over an OTA result for the device's OTA history.</p>\n", f);
        /* Fixed columns: the error text takes what is left, and wraps. */
        fputs("<table class=\"devices\">\n<colgroup><col style=\"width:120px\"><col style=\"width:92px\">"
              "<col style=\"width:72px\"><col style=\"width:72px\"><col style=\"width:88px\"><col style=\"width:82px\">"
              "<col style=\"width:92px\"><col><col style=\"width:226px\"><col style=\"width:64px\"></colgroup>\n"
              "<thead><tr><th>device</th><th>state</th><th class=\"n\">connects</th><th class=\"n\">connect failures</th>"
              "<th class=\"n\">disconnects</th><th class=\"n\">reboots</th><th class=\"n\">last connect</th>"
              "<th>last error</th><th>OTA result</th><th>version</th></tr></thead>\n<tbody>\n", f);
        for (size_t i = 0; i < MIN(n, (size_t) REPORT_HTML_MAX_DEVICES); i++)
                put_device_row(f, rows[i].d);
        fputs("</tbody>\n</table>\n", f);
        if (n > REPORT_HTML_MAX_DEVICES)
                fprintf(f, "<p class=\"note more\">%s more in the JSON report.</p>\n",
                        FMT_COUNT((double) (n - REPORT_HTML_MAX_DEVICES)));
        fputs("</section>\n", f);
        return 0;
}

/* --- header, verdict, configuration --- */

static void put_meta(FILE *f, const char *label, json_object *o, const char *key) {
        fprintf(f, "<dt>%s</dt><dd>", label);
        put_field(f, o, key, "<span class=\"muted\">—</span>");
        fputs("</dd>\n", f);
}

static void put_kpi(FILE *f, const char *label, const char *value, const char *sub) {
        fprintf(f, "<div class=\"kpi\"><div class=\"kpi-label\">%s</div><div class=\"kpi-value\">%s</div>"
                "<div class=\"kpi-sub\">%s</div></div>\n", label, value, sub);
}

static void section_header(FILE *f, json_object *report) {
        json_object *esp = get_object(report, "espfleet"), *host = get_object(report, "host");
        json_object *run = get_object(report, "run"), *summary = get_object(report, "summary");
        json_object *states = get_object(summary, "states"), *ota = get_object(summary, "ota");
        double v, devices, online, connects, ok, failed;
        char sub[2 * FMT_MAX];

        fputs("<header>\n<h1>espfleet run report</h1>\n<p class=\"sub\">", f);
        put_field(f, host, "hostname", "unknown host");
        fputs(" · ", f);
        put_field(f, run, "started", "start unknown");
        fputs(" → ", f);
        put_field(f, run, "ended", "end unknown");
        if (get_string(run, "reason")) {
                fputs(" · ended by ", f);
                put_text_n(f, get_string(run, "reason"), 64);
        }
        fputs("</p>\n</header>\n", f);

        if (get_number(report, "report_version", &v) && v != 1)
                fprintf(f, "<p class=\"warning\">This report has report_version %s; this page knows version 1, "
                        "so some of it may be missing.</p>\n", FMT_NUMBER(v));

        fputs("<div class=\"kpis\">\n", f);
        if (!get_number(summary, "devices", &devices))
                devices = NAN;
        put_kpi(f, "devices", isnan(devices) ? "—" : FMT_COUNT(devices), "in the run");
        if (get_number(summary, "online", &online)) {
                if (!isnan(devices) && devices > 0)
                        snprintf(sub, sizeof sub, "%.1f %% at the end", 100.0 * online / devices);
                else
                        snprintf(sub, sizeof sub, "at the end");
                put_kpi(f, "online", FMT_COUNT(online), sub);
        } else
                put_kpi(f, "online", "—", "no data");
        put_kpi(f, "duration", get_number(run, "duration_s", &v) ? FMT_SECONDS(v) : "—", "wall clock");
        if (get_number(get_object(report, "counters"), "connects", &connects)) {
                if (get_number(get_object(report, "counters"), "connect_attempts", &v) && v > 0)
                        snprintf(sub, sizeof sub, "of %s attempts", FMT_COUNT(v));
                else
                        snprintf(sub, sizeof sub, "accepted");
                put_kpi(f, "connects", FMT_COUNT(connects), sub);
        } else
                put_kpi(f, "connects", "—", "no data");
        if (get_number(ota, "ok", &ok)) {
                snprintf(sub, sizeof sub, "ok, %s failed",
                         get_number(ota, "failed", &failed) ? FMT_COUNT(failed) : "—");
                put_kpi(f, "OTA", FMT_COUNT(ok), sub);
        } else
                put_kpi(f, "OTA", "—", "no data");
        fputs("</div>\n", f);

        fputs("<div class=\"card\">\n<dl class=\"meta\">\n", f);
        put_meta(f, "espfleet", esp, "version");
        put_meta(f, "host", host, "hostname");
        put_meta(f, "started", run, "started");
        put_meta(f, "OpenSSL", esp, "openssl");
        put_meta(f, "kernel", host, "kernel");
        put_meta(f, "ended", run, "ended");
        put_meta(f, "libmosquitto", esp, "libmosquitto");
        fputs("<dt>CPUs</dt><dd>", f);
        fputs(get_number(host, "cpus", &v) ? FMT_COUNT(v) : "<span class=\"muted\">—</span>", f);
        fputs("</dd>\n<dt>duration</dt><dd>", f);
        fputs(get_number(run, "duration_s", &v) ? FMT_SECONDS(v) : "<span class=\"muted\">—</span>", f);
        fputs("</dd>\n", f);
        put_meta(f, "libcurl", esp, "libcurl");
        put_meta(f, "config file", run, "config_file");
        put_meta(f, "ended by", run, "reason");
        put_meta(f, "json-c", esp, "json-c");
        fputs("</dl>\n", f);

        fputs("<h3>Device states at the end</h3>\n", f);
        if (object_length(states) > 0) {
                fputs("<ul class=\"states\">\n", f);
                json_object_object_foreach(states, key, val) {
                        double c;

                        if (!number_of(val, &c))
                                continue;
                        fprintf(f, "<li class=\"pill %s\">", c > 0 ? state_class(key) : "zero");
                        put_text_n(f, key, 32);
                        fprintf(f, " <b>%s</b></li>\n", FMT_COUNT(c));
                }
                fputs("</ul>\n", f);
        } else
                put_no_data(f);
        fputs("</div>\n", f);
}

static void section_verdict(FILE *f, json_object *report) {
        json_object *verdict = get_object(report, "verdict"), *checks = get_array(verdict, "checks");
        int passed = get_bool(verdict, "passed");
        size_t n = array_length(checks), n_failed = 0;

        if (!verdict) {
                fputs("<div class=\"verdict none\"><b>No verdict</b> in this report.</div>\n", f);
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (get_bool(json_object_array_get_idx(checks, i), "passed") == 0)
                        n_failed++;
        fprintf(f, "<div class=\"verdict %s\"><b>%s</b>", passed == 1 ? "pass" : passed == 0 ? "fail" : "none",
                passed == 1 ? "PASSED" : passed == 0 ? "FAILED" : "Verdict unknown");
        if (n > 0)
                fprintf(f, " — %zu of %zu checks failed", n_failed, n);
        fputs("</div>\n", f);
        if (n == 0)
                return;

        fputs("<div class=\"card\">\n<table class=\"checks\">\n<thead><tr><th>check</th><th class=\"n\">value</th>"
              "<th class=\"n\">threshold</th><th>result</th></tr></thead>\n<tbody>\n", f);
        for (size_t i = 0; i < n; i++) {
                json_object *c = json_object_array_get_idx(checks, i);
                int ok = get_bool(c, "passed");
                double v;

                fputs("<tr><td>", f);
                put_field(f, c, "name", "<span class=\"muted\">(unnamed)</span>");
                fprintf(f, "</td><td class=\"n\">%s</td>", get_number(c, "value", &v) ? FMT_NUMBER(v) : "—");
                fprintf(f, "<td class=\"n\">%s</td>", get_number(c, "threshold", &v) ? FMT_NUMBER(v) : "—");
                fprintf(f, "<td><span class=\"pill %s\">%s</span></td></tr>\n",
                        ok == 1 ? "ok" : ok == 0 ? "bad" : "muted", ok == 1 ? "passed" : ok == 0 ? "failed" : "unknown");
        }
        fputs("</tbody>\n</table>\n</div>\n", f);
}

static void section_config(FILE *f, json_object *report) {
        json_object *config = get_object(report, "config");

        fprintf(f, "<div class=\"card\">\n<details>\n<summary>Configuration (%zu keys)</summary>\n",
                object_length(config));
        if (object_length(config) == 0) {
                put_no_data(f);
                fputs("</details>\n</div>\n", f);
                return;
        }
        fputs("<table class=\"kv\">\n<tbody>\n", f);
        json_object_object_foreach(config, key, val) {
                fputs("<tr><td class=\"mono\">", f);
                put_text_n(f, key, 128);
                fputs("</td><td class=\"mono\">", f);
                if (json_object_is_type(val, json_type_string))
                        put_text(f, json_object_get_string(val));
                else
                        put_text(f, json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN));
                fputs("</td></tr>\n", f);
        }
        fputs("</tbody>\n</table>\n</details>\n</div>\n", f);
}

/* --- the page --- */

static const char css[] =
        "*{box-sizing:border-box}\n"
        "body{margin:0;background:#f3f5f7;color:#1c232b;"
        "font:14px/1.45 system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif}\n"
        "main{max-width:1200px;margin:0 auto;padding:16px 20px 40px}\n"
        "h1{font-size:26px;margin:6px 0 0}\n"
        "h2{font-size:18px;margin:0 0 8px}\n"
        "h3{font-size:14px;margin:14px 0 6px;color:#3b4652}\n"
        ".sub{color:#56616d;margin:2px 0 12px}\n"
        ".card{background:#fff;border:1px solid #dbe1e7;border-radius:6px;padding:14px 16px;margin:0 0 14px}\n"
        ".grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}\n"
        ".grid2>.card{margin:0 0 14px}\n"
        ".note{color:#56616d;margin:0 0 8px}\n"
        ".nodata{color:#8a949e;font-style:italic;margin:4px 0}\n"
        ".muted{color:#8a949e}\n"
        ".warning{background:#fff4d6;border:1px solid #e7c65a;border-radius:6px;padding:8px 12px}\n"
        ".mono,.mono-label{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12.5px}\n"
        ".kpis{display:grid;grid-template-columns:repeat(5,1fr);gap:14px;margin:0 0 14px}\n"
        ".kpi{background:#fff;border:1px solid #dbe1e7;border-radius:6px;padding:10px 14px}\n"
        ".kpi-label{color:#56616d;font-size:12px;text-transform:uppercase;letter-spacing:.04em}\n"
        ".kpi-value{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums}\n"
        ".kpi-sub{color:#56616d;font-size:12px}\n"
        "dl.meta{display:grid;grid-template-columns:max-content 1fr max-content 1fr max-content 1fr;"
        "gap:4px 14px;margin:0}\n"
        "dl.meta dt{color:#56616d}\n"
        "dl.meta dd{margin:0;overflow-wrap:anywhere}\n"
        ".verdict{border-radius:6px;padding:12px 16px;margin:0 0 14px;font-size:16px;color:#fff}\n"
        ".verdict b{font-size:20px;letter-spacing:.05em}\n"
        ".verdict.pass{background:#1e8449}\n"
        ".verdict.fail{background:#c0392b}\n"
        ".verdict.none{background:#e4e8ec;color:#3b4652}\n"
        "table{border-collapse:collapse;width:100%;font-size:13px}\n"
        "th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6eaee;vertical-align:top}\n"
        "th{background:#f0f3f6;font-weight:600;white-space:nowrap}\n"
        "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
        "tbody tr:nth-child(even) td{background:#fafbfc}\n"
        "td.hot{color:#b03a2e;font-weight:600}\n"
        "table.devices{font-size:12.5px;table-layout:fixed}\n"
        "table.devices th{white-space:normal;vertical-align:bottom}\n"
        "table.devices td{overflow-wrap:break-word}\n"
        "table.devices td.id{white-space:nowrap}\n"
        "table.devices tr.row-bad td{background:#fdecea}\n"
        "table.devices tr.row-warn td{background:#fff7e0}\n"
        ".pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#e4e8ec;color:#3b4652}\n"
        ".pill.ok{background:#d5f0df;color:#145a32}\n"
        ".pill.bad{background:#f9d6d2;color:#922b21}\n"
        ".pill.warn{background:#fdebc8;color:#7e5109}\n"
        ".pill.zero{background:#f3f5f7;color:#a3acb5}\n"
        "ul.states{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:6px}\n"
        ".ok-text{color:#1e8449}\n"
        ".bad-text{color:#c0392b;font-weight:600}\n"
        "details summary{cursor:pointer;font-weight:600;font-size:16px}\n"
        "details table{margin-top:8px}\n"
        "footer{color:#8a949e;font-size:12px;text-align:center;margin-top:20px}\n"
        "svg.chart{display:block;max-width:100%;height:auto;margin:4px 0 8px}\n"
        "svg text{font-family:system-ui,'DejaVu Sans',sans-serif;font-size:12px;fill:#37414b}\n"
        "svg text.title{fill:#56616d}\n"
        "svg text.legend,svg text.value{font-size:11px}\n"
        "svg text.hist-name{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12.5px;fill:#1c232b}\n"
        "svg text.mono-label{fill:#1c232b}\n"
        "svg text.ref-label{fill:#7d8790;font-size:11px}\n"
        "svg .grid{stroke:#e6eaee;stroke-width:1}\n"
        "svg .grid.major{stroke:#c9d0d7}\n"
        "svg .axis{stroke:#87919b;stroke-width:1}\n"
        "svg .ref{stroke:#9aa4ad;stroke-width:1;stroke-dasharray:5 4}\n"
        "svg .band{fill:#f5f7f9}\n"
        "svg .online{fill:none;stroke:#2471a3;stroke-width:2;stroke-linejoin:round}\n"
        "svg .connects{fill:#3b82c4}\n"
        "svg .failures{fill:#d9534f}\n"
        "svg .ok{fill:#27ae60}\n"
        "svg .bad{fill:#d9534f}\n"
        "svg .q50{fill:#9ecae1}\n"
        "svg .q90{fill:#6baed6}\n"
        "svg .q99{fill:#3182bd}\n"
        "svg .q999{fill:#08519c}\n"
        "svg .qmax{fill:#e67e22}\n"
        "@media (max-width:900px){.grid2,.kpis{grid-template-columns:1fr}dl.meta{grid-template-columns:max-content 1fr}}\n";

static void page_head(FILE *f, json_object *report) {
        fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
              "<title>espfleet run report", f);
        if (get_string(get_object(report, "host"), "hostname")) {
                fputs(" — ", f);
                put_text_n(f, get_string(get_object(report, "host"), "hostname"), 128);
        }
        if (get_string(get_object(report, "run"), "started")) {
                fputs(" — ", f);
                put_text_n(f, get_string(get_object(report, "run"), "started"), 64);
        }
        fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n", css);
}

static void page_foot(FILE *f, json_object *report) {
        fputs("<footer>Made by espfleet", f);
        if (get_string(get_object(report, "espfleet"), "version")) {
                fputs(" ", f);
                put_text_n(f, get_string(get_object(report, "espfleet"), "version"), 64);
        }
        fputs(" from the JSON run report, which holds every number in full.</footer>\n</main>\n</body>\n</html>\n", f);
}

int report_html_write(FILE *f, json_object *report) {
        int r;

        if (!f)
                return -EINVAL;
        if (!json_object_is_type(report, json_type_object))
                report = NULL;

        page_head(f, report);
        section_header(f, report);
        section_verdict(f, report);
        r = section_timeline(f, report);
        if (r < 0)
                return r;
        r = section_latency(f, report);
        if (r < 0)
                return r;
        r = section_ota(f, report);
        if (r < 0)
                return r;
        fputs("<div class=\"grid2\">\n", f);
        section_counters(f, report);
        r = section_reasons(f, report);
        if (r < 0)
                return r;
        fputs("</div>\n", f);
        r = section_devices(f, report);
        if (r < 0)
                return r;
        section_config(f, report);
        page_foot(f, report);

        if (fflush(f) != 0 || ferror(f))
                return errno > 0 ? -errno : -EIO;
        return 0;
}
