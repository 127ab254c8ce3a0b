/* Trace writers shared by the simulator and the executor: Chrome trace-event JSON and SVG. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plait/plan.h"
#include "plan/json_fields.h"

static void lane_name(int lane, char *out, size_t size) {
    if (lane == 0)
        snprintf(out, size, "compute");
    else
        snprintf(out, size, "stream %d", lane - 1);
}

/* The kind is the name's first word. */
static void event_kind(const char *name, char *out, size_t size) {
    size_t n = strcspn(name, " ");
    if (n >= size) n = size - 1;
    memcpy(out, name, n);
    out[n] = 0;
}

static int max_rank_lane(const plait_trace_event *events, int count, int *max_lane) {
    int max_rank = -1;
    *max_lane = -1;
    for (int k = 0; k < count; k++) {
        if (events[k].rank > max_rank) max_rank = events[k].rank;
        if (events[k].lane > *max_lane) *max_lane = events[k].lane;
    }
    return max_rank;
}

int plait_trace_write_chrome(const char *path, const plait_trace_event *events, int count) {
    for (int k = 0; k < count; k++)
        if (events[k].rank < 0 || events[k].lane < 0)
            return plait_fail("%s: trace event %d has a negative rank or lane", path, k);
    int max_lane, max_rank = max_rank_lane(events, count, &max_lane);
    char *seen = calloc((size_t)(max_rank + 1) * (size_t)(max_lane + 1) + 1, 1);
    json_t *root = json_object(), *list = json_array();
    if (!seen || !root || !list) {
        free(seen);
        json_decref(root);
        json_decref(list);
        return plait_fail("%s: out of memory writing a trace", path);
    }
    for (int k = 0; k < count; k++) {
        const plait_trace_event *e = &events[k];
        size_t key = (size_t)e->rank * (size_t)(max_lane + 1) + (size_t)e->lane;
        if (!seen[key]) {
            char lane[32], process[32];
            lane_name(e->lane, lane, sizeof lane);
            snprintf(process, sizeof process, "rank %d", e->rank);
            json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "process_name", "ph",
                                                  "M", "pid", e->rank, "tid", 0, "args", "name", process));
            json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "thread_name", "ph",
                                                  "M", "pid", e->rank, "tid", e->lane, "args", "name", lane));
            seen[key] = 1;
        }
        char kind[24];
        event_kind(e->name, kind, sizeof kind);
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:i, s:i, s:f, s:f}", "name", e->name, "cat", kind,
                                              "ph", "X", "pid", e->rank, "tid", e->lane, "ts", e->start * 1e6,
                                              "dur", e->duration * 1e6));
    }
    free(seen);
    json_object_set_new(root, "traceEvents", list);
    json_object_set_new(root, "displayTimeUnit", json_string("ms"));
    return json_write_file(path, root);
}

static const char *kind_color(const char *kind) {
    static const struct {
        const char *kind, *color;
    } colors[] = {{"forward", "#4e79a7"}, {"backward", "#f28e2b"}, {"send", "#e15759"},
                  {"recv", "#ff9da7"},    {"allreduce", "#76b7b2"}, {"optimizer", "#59a14f"},
                  {"load", "#edc948"}};
    for (size_t k = 0; k < sizeof colors / sizeof colors[0]; k++)
        if (strcmp(kind, colors[k].kind) == 0) return colors[k].color;
    return "#bab0ac";
}

static void xml_escaped(FILE *out, const char *text) {
    for (; *text; text++) {
        if (*text == '<')
            fputs("&lt;", out);
        else if (*text == '>')
            fputs("&gt;", out);
        else if (*text == '&')
            fputs("&amp;", out);
        else
            fputc(*text, out);
    }
}

int plait_trace_write_svg(const char *path, const plait_trace_event *events, int count) {
    int max_lane, max_rank = max_rank_lane(events, count, &max_lane);
    for (int k = 0; k < count; k++)
        if (events[k].rank < 0 || events[k].lane < 0)
            return plait_fail("%s: trace event %d has a negative rank or lane", path, k);
    size_t rows = (size_t)(max_rank + 1) * (size_t)(max_lane + 1);
    int *row_of = malloc((rows + 1) * sizeof(int));
    if (!row_of) return plait_fail("%s: out of memory writing a timeline", path);
    for (size_t k = 0; k < rows; k++) row_of[k] = -1;
    for (int k = 0; k < count; k++) row_of[(size_t)events[k].rank * (size_t)(max_lane + 1) + (size_t)events[k].lane] = 0;
    int row_count = 0;
    for (size_t k = 0; k < rows; k++)
        if (row_of[k] == 0) row_of[k] = row_count++;
    double end = 0;
    for (int k = 0; k < count; k++) end = fmax(end, events[k].start + events[k].duration);
    if (end <= 0) end = 1;
    const double left = 120, width = 1000, row_height = 20, top = 30;
    double height = top + row_count * row_height + 30;
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (!out) {
        free(row_of);
        return plait_fail("%s: out of memory writing a timeline", path);
    }
    fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                 "font-family=\"sans-serif\" font-size=\"11\">\n", left + width + 20, height);
    fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    for (size_t k = 0; k < rows; k++) {
        if (row_of[k] < 0) continue;
        int rank = (int)(k / (size_t)(max_lane + 1)), lane = (int)(k % (size_t)(max_lane + 1));
        char name[32];
        lane_name(lane, name, sizeof name);
        double y = top + row_of[k] * row_height;
        fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f4f4f4\"/>\n", left, y + 1,
                width, row_height - 2);
        fprintf(out, "<text x=\"4\" y=\"%.1f\">rank %d %s</text>\n", y + row_height - 6, rank, name);
    }
    for (int t = 0; t <= 10; t++) {
        double x = left + width * t / 10;
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>\n", x, top - 4, x,
                top + row_count * row_height);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3g s</text>\n", x,
                top + row_count * row_height + 14, end * t / 10);
    }
    for (int k = 0; k < count; k++) {
        const plait_trace_event *e = &events[k];
        if (e->detail) continue;
        char kind[24];
        event_kind(e->name, kind, sizeof kind);
        double y = top + row_of[(size_t)e->rank * (size_t)(max_lane + 1) + (size_t)e->lane] * row_height;
        double w = fmax(0.5, width * e->duration / end);
        fprintf(out, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\"><title>", left + width * e->start / end,
                y + 2, w, row_height - 4, kind_color(kind));
        xml_escaped(out, e->name);
        fprintf(out, ": %.6g s from %.6g s</title></rect>\n", e->duration, e->start);
    }
    fprintf(out, "<text x=\"%.0f\" y=\"16\">forward, backward, send, allreduce; gaps are idle (pipeline bubble)</text>\n", left);
    fprintf(out, "</svg>\n");
    fclose(out);
    free(row_of);
    int status = text ? plait_write_file_atomic(path, text, length) : plait_fail("%s: out of memory", path);
    free(text);
    return status;
}
