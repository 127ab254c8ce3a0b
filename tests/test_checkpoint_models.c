/* Checkpoints of real models: ResNet-20 split into parts, and ResNet-18 exchanged with torchvision. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plait/checkpoint.h"
#include "testing.h"

/* ---- interoperability with PyTorch (needs /usr/bin/python3 with torch and torchvision) ---------- */

static const char *interop_script(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0), "torch_interop.py");
    return path;
}

static bool torch_available(void) {
    char command[1200];
    snprintf(command, sizeof command, "/usr/bin/python3 '%s' check >/dev/null 2>&1", interop_script());
    return access("/usr/bin/python3", X_OK) == 0 && access(interop_script(), R_OK) == 0 && system(command) == 0;
}

/* Eval-mode forward through every unit. */
static int model_logits(plait_model *m, const float *input, int n, float *logits) {
    plait_tensor x = {0};
    plait_shape shape = m->input;
    shape.n = n;
    if (plait_tensor_reserve(&x, shape) != PLAIT_OK) return PLAIT_ERROR;
    memcpy(x.data, input, plait_shape_count(shape) * sizeof(float));
    plait_unit_state **states = calloc((size_t)m->unit_count, sizeof *states);
    const plait_tensor *current = &x;
    int status = PLAIT_OK;
    for (int u = 0; u < m->unit_count && status == PLAIT_OK; u++) {
        states[u] = plait_unit_state_create();
        status = plait_unit_forward(&m->units[u], states[u], current, false, &current);
    }
    if (status == PLAIT_OK) memcpy(logits, current->data, (size_t)n * (size_t)m->classes * sizeof(float));
    for (int u = 0; u < m->unit_count; u++)
        if (states[u]) plait_unit_state_free(states[u]);
    free(states);
    plait_tensor_free(&x);
    return status;
}

static bool read_floats(const char *path, float *values, size_t count) {
    FILE *file = fopen(path, "rb");
    if (!file) return false;
    size_t got = fread(values, sizeof(float), count, file);
    bool at_end = fgetc(file) == EOF;
    fclose(file);
    return got == count && at_end;
}

/* Largest difference relative to the largest logit; float32 through 20 layers in different orders. */
static double logits_error(const float *a, const float *b, size_t count) {
    double largest = 0, worst = 0;
    for (size_t i = 0; i < count; i++) largest = fmax(largest, fabs(b[i]));
    for (size_t i = 0; i < count; i++) {
        double e = fabs((double)a[i] - b[i]) / largest;
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static void randomize_batchnorm(plait_model *m, unsigned long seed) {
    for (int u = 0; u < m->unit_count; u++) {
        plait_unit *unit = &m->units[u];
        for (int path = 0; path < 2; path++)
            for (int i = 0; i < (path ? unit->shortcut_count : unit->main_count); i++) {
                plait_layer *l = path ? &unit->shortcut[i] : &unit->main[i];
                if (l->kind != PLAIT_LAYER_BATCHNORM) continue;
                size_t c = l->buffers[0].count;
                testing_fill_uniform(l->buffers[0].value, c, seed++); /* mean in [-1, 1) */
                testing_fill_uniform(l->buffers[1].value, c, seed++);
                for (size_t k = 0; k < c; k++) l->buffers[1].value[k] = 1.0f + 0.5f * l->buffers[1].value[k];
                testing_fill_uniform(l->params[1].value, c, seed++); /* beta */
                l->num_batches_tracked = (int64_t)seed;
            }
    }
}

static void torchvision_interop(void) {
    if (!torch_available()) {
        printf("skipped: torchvision_interop (no python3 with torch and torchvision)\n");
        return;
    }
    const int n = 2, h = 64, w = 64, classes = 10;
    plait_model *ours = NULL, *loaded = NULL;
    CHECK(plait_model_create("resnet18", (plait_shape){1, h, w, 3}, classes, 7, &ours) == PLAIT_OK);
    CHECK(plait_model_create("resnet18", (plait_shape){1, h, w, 3}, classes, 8, &loaded) == PLAIT_OK);
    if (!ours || !loaded) return;
    randomize_batchnorm(ours, 11);
    size_t input_count = (size_t)n * h * w * 3, logit_count = (size_t)n * classes;
    float *input = malloc(input_count * sizeof(float));
    float *expected = malloc(logit_count * sizeof(float)), *actual = malloc(logit_count * sizeof(float));
    testing_fill_uniform(input, input_count, 5);
    const char *input_path = testing_temp_path("interop_input.f32"), *plait_path = testing_temp_path("interop_plait.safetensors");
    const char *torch_path = testing_temp_path("interop_torch.safetensors");
    const char *logits_a = testing_temp_path("interop_logits_a.f32"), *logits_b = testing_temp_path("interop_logits_b.f32");
    FILE *file = fopen(input_path, "wb");
    CHECK(file && fwrite(input, sizeof(float), input_count, file) == input_count);
    if (file) fclose(file);
    plait_train_state state = {.epoch = 1, .step = 10, .training = "{}"};
    CHECK(plait_checkpoint_save(plait_path, ours, 0, ours->unit_count, &state) == PLAIT_OK);

    /* (a) our checkpoint into torchvision (strict), (b) torchvision's state dict into plait. */
    char command[4096];
    snprintf(command, sizeof command, "/usr/bin/python3 '%s' both '%s' resnet18 %d '%s' %d %d %d '%s' '%s' 3 '%s'",
             interop_script(), plait_path, classes, input_path, n, h, w, logits_a, torch_path, logits_b);
    CHECKF(system(command) == 0, "%s failed", command);

    CHECK(read_floats(logits_a, expected, logit_count));
    CHECK(model_logits(ours, input, n, actual) == PLAIT_OK);
    double error = logits_error(actual, expected, logit_count);
    CHECKF(error < 1e-4, "plait checkpoint in torchvision: logits differ by %g relative", error);
    fprintf(stderr, "  plait checkpoint in torchvision: logits agree to %.1e relative\n", error);

    CHECK(plait_checkpoint_load(&torch_path, 1, loaded, 0, loaded->unit_count, PLAIT_CHECKPOINT_WEIGHTS, NULL) ==
          PLAIT_OK);
    CHECK(loaded->units[0].main[1].kind == PLAIT_LAYER_BATCHNORM && loaded->units[0].main[1].num_batches_tracked == 3);
    CHECK(read_floats(logits_b, expected, logit_count));
    CHECK(model_logits(loaded, input, n, actual) == PLAIT_OK);
    error = logits_error(actual, expected, logit_count);
    CHECKF(error < 1e-4, "torchvision state dict in plait: logits differ by %g relative", error);
    fprintf(stderr, "  torchvision state dict in plait: logits agree to %.1e relative\n", error);
    free(input);
    free(expected);
    free(actual);
    plait_model_free(ours);
    plait_model_free(loaded);
}

/* ---- real models from the nn layer ---------------------------------------------------------- */

/* Number of parameters, momentum buffers and BN buffers of units [first, last) that differ. */
static int model_differences(plait_model *a, plait_model *b, int first, int last) {
    plait_param **pa, **pb;
    plait_buffer **ba, **bb;
    int count_a, count_b, buffers_a, buffers_b, differ = 0;
    if (plait_model_params(a, first, last, &pa, &count_a) != PLAIT_OK ||
        plait_model_params(b, first, last, &pb, &count_b) != PLAIT_OK ||
        plait_model_buffers(a, first, last, &ba, &buffers_a) != PLAIT_OK ||
        plait_model_buffers(b, first, last, &bb, &buffers_b) != PLAIT_OK || count_a != count_b ||
        buffers_a != buffers_b)
        return -1;
    for (int i = 0; i < count_a; i++) {
        differ += memcmp(pa[i]->value, pb[i]->value, pa[i]->count * sizeof(float)) != 0;
        differ += memcmp(pa[i]->momentum, pb[i]->momentum, pa[i]->count * sizeof(float)) != 0;
    }
    for (int i = 0; i < buffers_a; i++)
        differ += memcmp(ba[i]->value, bb[i]->value, ba[i]->count * sizeof(float)) != 0;
    free(pa);
    free(pb);
    free(ba);
    free(bb);
    return differ;
}

static void fill_momentum(plait_model *m, unsigned long seed) {
    plait_param **params;
    int count;
    if (plait_model_params(m, 0, m->unit_count, &params, &count) != PLAIT_OK) return;
    for (int i = 0; i < count; i++) testing_fill_uniform(params[i]->momentum, params[i]->count, seed + (unsigned long)i);
    free(params);
}

static void resnet20_split_round_trip(void) {
    plait_shape input = {1, 32, 32, 3};
    plait_model *a = NULL, *b = NULL, *c = NULL, *other = NULL;
    CHECK(plait_model_create("resnet20", input, 10, 1, &a) == PLAIT_OK);
    CHECK(plait_model_create("resnet20", input, 10, 2, &b) == PLAIT_OK);
    CHECK(plait_model_create("resnet20", input, 10, 3, &c) == PLAIT_OK);
    CHECK(plait_model_create("resnet56", input, 10, 4, &other) == PLAIT_OK);
    if (!a || !b || !c || !other) return;
    fill_momentum(a, 10);
    randomize_batchnorm(a, 20);
    int units = a->unit_count, cut = units / 3;
    const char *parts[3] = {testing_temp_path("r20_a.safetensors"), testing_temp_path("r20_b.safetensors"),
                            testing_temp_path("r20_c.safetensors")};
    plait_train_state state = {.epoch = 2, .step = 782, .training = "{\"lr_position\":782}"};
    CHECK(plait_checkpoint_save(parts[0], a, 0, cut, &state) == PLAIT_OK);
    CHECK(plait_checkpoint_save(parts[1], a, cut, 2 * cut, &state) == PLAIT_OK);
    CHECK(plait_checkpoint_save(parts[2], a, 2 * cut, units, &state) == PLAIT_OK);
    CHECK(model_differences(a, b, 0, units) > 0);
    /* Two stages under a different split, each loading its range from all three parts. */
    CHECK(plait_checkpoint_load(parts, 3, b, 0, units / 2, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_OK);
    CHECK(plait_checkpoint_load(parts, 3, b, units / 2, units, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_OK);
    CHECK(model_differences(a, b, 0, units) == 0);
    for (int u = 0; u < units; u++)
        for (int i = 0; i < a->units[u].main_count; i++)
            CHECK(a->units[u].main[i].num_batches_tracked == b->units[u].main[i].num_batches_tracked);

    const char *whole = testing_temp_path("r20.safetensors");
    CHECK(plait_checkpoint_save(whole, a, 0, units, &state) == PLAIT_OK);
    CHECK(plait_checkpoint_load(&whole, 1, c, 0, units, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_OK);
    CHECK(model_differences(a, c, 0, units) > 0); /* momentum not loaded */
    CHECK(plait_checkpoint_load(&whole, 1, other, 0, other->unit_count, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    char expected[700];
    snprintf(expected, sizeof expected, "checkpoint %s is for model resnet20, not resnet56", whole);
    CHECK(testing_error_has(expected));
    plait_model_free(a);
    plait_model_free(b);
    plait_model_free(c);
    plait_model_free(other);
}

int main(void) {
    testing_run("resnet20_split_round_trip", resnet20_split_round_trip);
    testing_run("torchvision_interop", torchvision_interop);
    return testing_finish();
}
