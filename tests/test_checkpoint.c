/* Model checkpoints: round trips, unit-range parts, mismatches, atomic saves, PyTorch interop. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plait/checkpoint.h"
#include "testing.h"
#include "train/safetensors.h"

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- model checkpoints on a small hand-built model ------------------------------------------ */

/* Three units shaped like a CIFAR ResNet: stem (conv, bn), a block with a projection shortcut, a head. */
typedef struct tiny_model {
    plait_model model;
    plait_unit units[3];
    plait_layer stem[2], block[2], shortcut[2], head[1];
} tiny_model;

static void param_init(plait_param *p, const char *layer, const char *suffix, int ndim, const int64_t *dims,
                       bool conv) {
    snprintf(p->name, sizeof p->name, "%s.%s", layer, suffix);
    p->ndim = ndim;
    p->count = 1;
    for (int d = 0; d < ndim; d++) p->count *= (size_t)(p->dims[d] = dims[d]);
    p->value = calloc(p->count, sizeof(float));
    p->grad = calloc(p->count, sizeof(float));
    p->momentum = calloc(p->count, sizeof(float));
    p->conv_weight = conv;
    p->decay = conv;
}

static void conv_layer(plait_layer *l, const char *name, int out, int in, int size) {
    l->kind = PLAIT_LAYER_CONV2D;
    snprintf(l->name, sizeof l->name, "%s", name);
    param_init(&l->params[0], name, "weight", 4, (int64_t[]){out, in, size, size}, true);
    l->param_count = 1;
}

static void batchnorm_layer(plait_layer *l, const char *name, int channels) {
    l->kind = PLAIT_LAYER_BATCHNORM;
    snprintf(l->name, sizeof l->name, "%s", name);
    param_init(&l->params[0], name, "weight", 1, (int64_t[]){channels}, false);
    param_init(&l->params[1], name, "bias", 1, (int64_t[]){channels}, false);
    l->param_count = 2;
    const char *suffixes[2] = {"running_mean", "running_var"};
    for (int i = 0; i < 2; i++) {
        snprintf(l->buffers[i].name, sizeof l->buffers[i].name, "%s.%s", name, suffixes[i]);
        l->buffers[i].count = (size_t)channels;
        l->buffers[i].value = calloc((size_t)channels, sizeof(float));
    }
    l->buffer_count = 2;
}

static void linear_layer(plait_layer *l, const char *name, int out, int in) {
    l->kind = PLAIT_LAYER_LINEAR;
    snprintf(l->name, sizeof l->name, "%s", name);
    param_init(&l->params[0], name, "weight", 2, (int64_t[]){out, in}, false);
    param_init(&l->params[1], name, "bias", 1, (int64_t[]){out}, false);
    l->param_count = 2;
}

typedef void (*layer_visit)(plait_layer *a, plait_layer *b, void *context);

static void visit_layers(tiny_model *a, tiny_model *b, layer_visit visit, void *context) {
    for (int u = 0; u < 3; u++) {
        plait_unit *ua = &a->model.units[u], *ub = b ? &b->model.units[u] : NULL;
        for (int i = 0; i < ua->main_count; i++) visit(&ua->main[i], ub ? &ub->main[i] : NULL, context);
        for (int i = 0; i < ua->shortcut_count; i++) visit(&ua->shortcut[i], ub ? &ub->shortcut[i] : NULL, context);
    }
}

static void fill_layer(plait_layer *l, plait_layer *unused, void *seed) {
    (void)unused;
    unsigned long *s = seed;
    for (int i = 0; i < l->param_count; i++) {
        testing_fill_uniform(l->params[i].value, l->params[i].count, (*s)++);
        testing_fill_uniform(l->params[i].momentum, l->params[i].count, (*s)++);
    }
    for (int i = 0; i < l->buffer_count; i++) testing_fill_uniform(l->buffers[i].value, l->buffers[i].count, (*s)++);
    l->num_batches_tracked = l->kind == PLAIT_LAYER_BATCHNORM ? (int64_t)(*s)++ * 1000 : 0;
}

static tiny_model *tiny_create(const char *name, int width, int classes, unsigned long seed) {
    tiny_model *t = calloc(1, sizeof *t);
    snprintf(t->model.name, sizeof t->model.name, "%s", name);
    t->model.input = (plait_shape){1, 8, 8, 3};
    t->model.classes = classes;
    t->model.units = t->units;
    t->model.unit_count = 3;
    conv_layer(&t->stem[0], "conv1", width, 3, 3);
    batchnorm_layer(&t->stem[1], "bn1", width);
    conv_layer(&t->block[0], "layer1.0.conv1", 2 * width, width, 3);
    batchnorm_layer(&t->block[1], "layer1.0.bn1", 2 * width);
    conv_layer(&t->shortcut[0], "layer1.0.downsample.0", 2 * width, width, 1);
    batchnorm_layer(&t->shortcut[1], "layer1.0.downsample.1", 2 * width);
    linear_layer(&t->head[0], "fc", classes, 2 * width);
    t->units[0] = (plait_unit){.name = "stem", .main = t->stem, .main_count = 2};
    t->units[1] = (plait_unit){.name = "layer1.0", .main = t->block, .main_count = 2, .shortcut = t->shortcut,
                               .shortcut_count = 2, .residual = true, .post_relu = true};
    t->units[2] = (plait_unit){.name = "head", .main = t->head, .main_count = 1};
    visit_layers(t, NULL, fill_layer, &seed);
    return t;
}

static void free_layer(plait_layer *l, plait_layer *unused, void *context) {
    (void)unused, (void)context;
    for (int i = 0; i < l->param_count; i++) {
        free(l->params[i].value);
        free(l->params[i].grad);
        free(l->params[i].momentum);
    }
    for (int i = 0; i < l->buffer_count; i++) free(l->buffers[i].value);
}

static void tiny_free(tiny_model *t) {
    visit_layers(t, NULL, free_layer, NULL);
    free(t);
}

typedef struct comparison {
    bool momentum;
    int differences;
} comparison;

static void compare_layer(plait_layer *a, plait_layer *b, void *context) {
    comparison *c = context;
    for (int i = 0; i < a->param_count; i++) {
        size_t bytes = a->params[i].count * sizeof(float);
        c->differences += memcmp(a->params[i].value, b->params[i].value, bytes) != 0;
        if (c->momentum) c->differences += memcmp(a->params[i].momentum, b->params[i].momentum, bytes) != 0;
    }
    for (int i = 0; i < a->buffer_count; i++)
        c->differences += memcmp(a->buffers[i].value, b->buffers[i].value, a->buffers[i].count * sizeof(float)) != 0;
    c->differences += a->num_batches_tracked != b->num_batches_tracked;
}

/* Number of layers of units [first, last) whose tensors differ (momentum included when asked). */
static int differences(tiny_model *a, tiny_model *b, int first, int last, bool momentum) {
    comparison c = {.momentum = momentum};
    for (int u = first; u < last; u++) {
        plait_unit *ua = &a->model.units[u], *ub = &b->model.units[u];
        for (int i = 0; i < ua->main_count; i++) compare_layer(&ua->main[i], &ub->main[i], &c);
        for (int i = 0; i < ua->shortcut_count; i++) compare_layer(&ua->shortcut[i], &ub->shortcut[i], &c);
    }
    return c.differences;
}

static int load_one(const char *path, tiny_model *t, plait_checkpoint_mode mode, plait_train_state *state) {
    return plait_checkpoint_load(&path, 1, &t->model, 0, 3, mode, state);
}

static float file_float(const safetensors_file *f, const char *name, size_t index) {
    const safetensors_tensor *t = safetensors_find(f, name);
    float value = NAN;
    if (t && (index + 1) * sizeof(float) <= t->bytes) memcpy(&value, (const char *)t->data + index * 4, 4);
    return value;
}

static void model_round_trip(void) {
    tiny_model *a = tiny_create("tiny", 4, 10, 1), *b = tiny_create("tiny", 4, 10, 100);
    const char *path = testing_temp_path("tiny.safetensors");
    plait_train_state saved = {.epoch = 3, .step = 120, .training = "{\"rng\":[1,2,3],\"lr_step\":5}"};
    CHECK(plait_checkpoint_save(path, &a->model, 0, 3, &saved) == PLAIT_OK);
    CHECK(!file_exists(testing_temp_path("tiny.safetensors.tmp")));
    CHECK(differences(a, b, 0, 3, true) > 0);
    plait_train_state loaded = {0};
    CHECK(load_one(path, b, PLAIT_CHECKPOINT_RESUME, &loaded) == PLAIT_OK);
    CHECK(differences(a, b, 0, 3, true) == 0);
    CHECK(loaded.epoch == 3 && loaded.step == 120);
    CHECK(loaded.training && strcmp(loaded.training, saved.training) == 0);
    plait_train_state_clear(&loaded);
    CHECK(loaded.training == NULL);

    /* The file speaks torchvision: OIHW conv weights, I64 scalar counters, string metadata. */
    safetensors_file *f;
    CHECK(safetensors_read(path, &f) == PLAIT_OK);
    if (!f) return;
    const safetensors_tensor *conv = safetensors_find(f, "conv1.weight");
    CHECK(conv && conv->dtype == SAFETENSORS_F32 && conv->ndim == 4 && conv->shape[0] == 4 && conv->shape[1] == 3 &&
          conv->shape[2] == 3 && conv->shape[3] == 3);
    /* OIHW element [k=2][c=1][r=0][s=2] is OHWI element [2][0][2][1]. */
    const float *ohwi = a->stem[0].params[0].value;
    CHECK(file_float(f, "conv1.weight", ((2 * 3 + 1) * 3 + 0) * 3 + 2) == ohwi[((2 * 3 + 0) * 3 + 2) * 3 + 1]);
    CHECK(file_float(f, "conv1.weight", ((2 * 3 + 1) * 3 + 0) * 3 + 2) != ohwi[((2 * 3 + 1) * 3 + 0) * 3 + 2]);
    const float *momentum = a->block[0].params[0].momentum; /* [8][3][3][4] */
    CHECK(file_float(f, "optimizer.momentum.layer1.0.conv1.weight", ((5 * 4 + 3) * 3 + 1) * 3 + 0) ==
          momentum[((5 * 3 + 1) * 3 + 0) * 4 + 3]);
    CHECK(file_float(f, "fc.weight", 13) == a->head[0].params[0].value[13]);
    const safetensors_tensor *tracked = safetensors_find(f, "layer1.0.downsample.1.num_batches_tracked");
    int64_t count = -1;
    if (tracked) memcpy(&count, tracked->data, 8);
    CHECK(tracked && tracked->dtype == SAFETENSORS_I64 && tracked->ndim == 0 && count == a->shortcut[1].num_batches_tracked);
    const char *order[] = {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                           "bn1.num_batches_tracked", "layer1.0.conv1.weight"};
    for (int i = 0; i < 7; i++) CHECKF(strcmp(f->tensors[i].name, order[i]) == 0, "tensor %d is %s", i, f->tensors[i].name);
    CHECK(f->tensor_count == 11 + 6 + 3 + 11); /* parameters, BN buffers, BN counters, momentum */
    CHECK(strcmp(safetensors_metadata(f, "model"), "tiny") == 0);
    CHECK(strcmp(safetensors_metadata(f, "format_version"), "1") == 0);
    CHECK(strcmp(safetensors_metadata(f, "classes"), "10") == 0);
    CHECK(strcmp(safetensors_metadata(f, "input_hwc"), "[8,8,3]") == 0);
    CHECK(strcmp(safetensors_metadata(f, "units"), "[0,3]") == 0);
    CHECK(strcmp(safetensors_metadata(f, "epoch"), "3") == 0 && strcmp(safetensors_metadata(f, "step"), "120") == 0);
    safetensors_free(f);

    /* Weights-only loading leaves the optimizer state alone. */
    tiny_model *c = tiny_create("tiny", 4, 10, 200);
    float momentum_before = c->stem[0].params[0].momentum[0];
    CHECK(load_one(path, c, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_OK);
    CHECK(differences(a, c, 0, 3, false) == 0);
    CHECK(c->stem[0].params[0].momentum[0] == momentum_before && momentum_before != a->stem[0].params[0].momentum[0]);
    tiny_free(a);
    tiny_free(b);
    tiny_free(c);
}

static void split_checkpoints_load_under_another_split(void) {
    tiny_model *a = tiny_create("tiny", 4, 10, 1);
    const char *parts[2] = {testing_temp_path("part0.safetensors"), testing_temp_path("part1.safetensors")};
    plait_train_state state = {.epoch = 1, .step = 50, .training = "{}"};
    CHECK(plait_checkpoint_save(parts[0], &a->model, 0, 2, &state) == PLAIT_OK);
    CHECK(plait_checkpoint_save(parts[1], &a->model, 2, 3, &state) == PLAIT_OK);

    tiny_model *whole = tiny_create("tiny", 4, 10, 300);
    plait_train_state loaded = {0};
    CHECK(plait_checkpoint_load(parts, 2, &whole->model, 0, 3, PLAIT_CHECKPOINT_RESUME, &loaded) == PLAIT_OK);
    CHECK(differences(a, whole, 0, 3, true) == 0);
    CHECK(loaded.step == 50 && loaded.epoch == 1);
    plait_train_state_clear(&loaded);

    /* A stage holding units [1,3) under another split takes its tensors from both parts. */
    tiny_model *stage = tiny_create("tiny", 4, 10, 400), *untouched = tiny_create("tiny", 4, 10, 400);
    CHECK(plait_checkpoint_load(parts, 2, &stage->model, 1, 3, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_OK);
    CHECK(differences(a, stage, 1, 3, true) == 0);
    CHECK(differences(untouched, stage, 0, 1, true) == 0);

    /* One part alone lacks the head. */
    tiny_model *fresh = tiny_create("tiny", 4, 10, 500);
    CHECK(plait_checkpoint_load(parts, 1, &fresh->model, 0, 3, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    char expected[700];
    snprintf(expected, sizeof expected, "checkpoint %s has no tensor fc.weight", parts[0]);
    CHECK(testing_error_has(expected));
    CHECK(differences(untouched, fresh, 0, 1, true) > 0); /* seeds differ, and the failed load changed nothing */
    tiny_model *fresh_copy = tiny_create("tiny", 4, 10, 500);
    CHECK(differences(fresh_copy, fresh, 0, 3, true) == 0);
    CHECK(plait_checkpoint_load(parts, 1, &fresh->model, 0, 2, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_OK);
    CHECK(differences(a, fresh, 0, 2, true) == 0);

    const char *twice[2] = {parts[1], parts[1]};
    CHECK(plait_checkpoint_load(twice, 2, &fresh->model, 0, 3, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("tensor fc.weight is also in part"));
    CHECK(plait_checkpoint_load(&parts[1], 1, &fresh->model, 0, 3, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("has no tensor conv1.weight"));

    /* Parts from different steps do not make one checkpoint. */
    state.step = 51;
    CHECK(plait_checkpoint_save(parts[1], &a->model, 2, 3, &state) == PLAIT_OK);
    CHECK(plait_checkpoint_load(parts, 2, &fresh->model, 0, 3, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("different points of training"));
    CHECK(plait_checkpoint_load(parts, 2, &fresh->model, 0, 3, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_OK);
    tiny_free(a);
    tiny_free(whole);
    tiny_free(stage);
    tiny_free(untouched);
    tiny_free(fresh);
    tiny_free(fresh_copy);
}

static void mismatches_are_errors(void) {
    tiny_model *resnet20 = tiny_create("resnet20", 4, 10, 1), *resnet18 = tiny_create("resnet18", 4, 10, 2);
    const char *path = testing_temp_path("resnet20.safetensors");
    CHECK(plait_checkpoint_save(path, &resnet20->model, 0, 3, NULL) == PLAIT_OK);
    char expected[700];
    CHECK(load_one(path, resnet18, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    snprintf(expected, sizeof expected, "checkpoint %s is for model resnet20, not resnet18", path);
    CHECK(testing_error_has(expected));
    CHECK(load_one(path, resnet18, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has(expected));

    tiny_model *wide = tiny_create("resnet20", 8, 10, 3);
    CHECK(load_one(path, wide, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    snprintf(expected, sizeof expected,
             "checkpoint %s: tensor conv1.weight has shape [4,3,3,3], model resnet20 expects [8,3,3,3]", path);
    CHECK(testing_error_has(expected));

    /* Only the head differs: the error comes after the stem checked fine, yet nothing changed. */
    tiny_model *other_classes = tiny_create("resnet20", 4, 100, 4), *copy = tiny_create("resnet20", 4, 100, 4);
    CHECK(load_one(path, other_classes, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    snprintf(expected, sizeof expected, "checkpoint %s: tensor fc.weight has shape [10,8], model resnet20 expects [100,8]",
             path);
    CHECK(testing_error_has(expected));
    CHECK(differences(copy, other_classes, 0, 3, true) == 0);

    plait_train_state bad = {.training = "{\"rng\": [1, 2"};
    CHECK(plait_checkpoint_save(path, &resnet20->model, 0, 3, &bad) == PLAIT_ERROR);
    CHECK(testing_error_has("training state is not valid JSON") && testing_error_has(path));
    CHECK(plait_checkpoint_save(path, &resnet20->model, 1, 1, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("unit range [1,1)") && testing_error_has(path));
    CHECK(plait_checkpoint_load(&path, 1, &resnet20->model, 0, 4, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("unit range [0,4) is not within model resnet20's 3 units") && testing_error_has(path));
    tiny_free(resnet20);
    tiny_free(resnet18);
    tiny_free(wide);
    tiny_free(other_classes);
    tiny_free(copy);
}

typedef bool (*tensor_filter)(const char *name);

/* Copies a file's tensors that pass `keep` (all when NULL) into a new file, optionally without metadata,
 * changing the dtype of `retype` to F64. */
static void rewrite(const char *from, const char *to, tensor_filter keep, bool metadata, const char *retype) {
    safetensors_file *f;
    CHECK(safetensors_read(from, &f) == PLAIT_OK);
    if (!f) return;
    safetensors_writer *w = safetensors_writer_create();
    for (int i = 0; i < f->tensor_count; i++) {
        const safetensors_tensor *t = &f->tensors[i];
        if (keep && !keep(t->name)) continue;
        if (retype && strcmp(t->name, retype) == 0) {
            size_t count = t->bytes / 4;
            double *wide = safetensors_writer_add_storage(w, t->name, SAFETENSORS_F64, t->ndim, t->shape);
            for (size_t k = 0; wide && k < count; k++) wide[k] = file_float(f, t->name, k);
        } else {
            CHECK(safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data) == PLAIT_OK);
        }
    }
    for (int i = 0; metadata && i < f->metadata_count; i++)
        safetensors_writer_set_metadata(w, f->metadata_keys[i], f->metadata_values[i]);
    CHECK(safetensors_writer_write(w, to) == PLAIT_OK);
    safetensors_writer_free(w);
    safetensors_free(f);
}

static bool torchvision_tensor(const char *name) {
    return strncmp(name, "optimizer.", 10) != 0 && !strstr(name, "num_batches_tracked");
}

static bool not_bn1_bias(const char *name) { return strcmp(name, "bn1.bias") != 0; }

static void torchvision_style_files(void) {
    tiny_model *a = tiny_create("tiny", 4, 10, 1);
    const char *path = testing_temp_path("full.safetensors"), *plain = testing_temp_path("plain.safetensors");
    CHECK(plait_checkpoint_save(path, &a->model, 0, 3, NULL) == PLAIT_OK);
    /* An old torchvision state dict: no metadata, no optimizer, no num_batches_tracked. */
    rewrite(path, plain, torchvision_tensor, false, NULL);
    tiny_model *b = tiny_create("tiny", 4, 10, 2);
    int64_t tracked = b->stem[1].num_batches_tracked;
    CHECK(load_one(plain, b, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_OK);
    CHECK(memcmp(a->stem[0].params[0].value, b->stem[0].params[0].value, 4 * 27 * sizeof(float)) == 0);
    CHECK(memcmp(a->shortcut[1].buffers[1].value, b->shortcut[1].buffers[1].value, 8 * sizeof(float)) == 0);
    CHECK(b->stem[1].num_batches_tracked == tracked && tracked != a->stem[1].num_batches_tracked);
    CHECK(load_one(plain, b, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has(plain) && testing_error_has("has no plait metadata"));

    const char *missing = testing_temp_path("missing.safetensors");
    rewrite(path, missing, not_bn1_bias, true, NULL);
    CHECK(load_one(missing, b, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("has no tensor bn1.bias"));
    CHECK(load_one(missing, b, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("has no tensor bn1.bias"));

    const char *resume_needs_momentum = testing_temp_path("no_momentum.safetensors");
    rewrite(path, resume_needs_momentum, torchvision_tensor, true, NULL);
    CHECK(load_one(resume_needs_momentum, b, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("has no tensor bn1.num_batches_tracked"));

    const char *wide = testing_temp_path("f64.safetensors");
    rewrite(path, wide, NULL, true, "layer1.0.bn1.weight");
    CHECK(load_one(wide, b, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("tensor layer1.0.bn1.weight has dtype F64, expected F32"));

    /* A tensor the model does not have is an error, except optimizer state when loading weights. */
    safetensors_writer *w = safetensors_writer_create();
    const float one = 1;
    CHECK(safetensors_writer_add(w, "optimizer.momentum.conv9.weight", SAFETENSORS_F32, 1, (int64_t[]){1}, &one) == PLAIT_OK);
    safetensors_file *f;
    CHECK(safetensors_read(plain, &f) == PLAIT_OK);
    for (int i = 0; f && i < f->tensor_count; i++)
        safetensors_writer_add(w, f->tensors[i].name, f->tensors[i].dtype, f->tensors[i].ndim, f->tensors[i].shape,
                               f->tensors[i].data);
    safetensors_free(f);
    const char *with_optimizer = testing_temp_path("optimizer.safetensors");
    CHECK(safetensors_writer_write(w, with_optimizer) == PLAIT_OK);
    CHECK(load_one(with_optimizer, b, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_OK);
    CHECK(safetensors_writer_add(w, "layer9.conv.weight", SAFETENSORS_F32, 1, (int64_t[]){1}, &one) == PLAIT_OK);
    CHECK(safetensors_writer_write(w, with_optimizer) == PLAIT_OK);
    CHECK(load_one(with_optimizer, b, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has("tensor layer9.conv.weight is not in model tiny"));
    safetensors_writer_free(w);
    tiny_free(a);
    tiny_free(b);
}

static void failed_save_keeps_the_old_checkpoint(void) {
    tiny_model *a = tiny_create("tiny", 4, 10, 1), *b = tiny_create("tiny", 4, 10, 2);
    const char *path = testing_temp_path("keep.safetensors");
    const char *temp = testing_temp_path("keep.safetensors.tmp");
    CHECK(plait_checkpoint_save(path, &a->model, 0, 3, NULL) == PLAIT_OK);
    CHECK(!file_exists(temp));
    /* A directory where the temporary file must go makes the write fail (root ignores permissions). */
    CHECK(mkdir(temp, 0755) == 0);
    CHECK(plait_checkpoint_save(path, &b->model, 0, 3, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has(path));
    CHECK(rmdir(temp) == 0);
    tiny_model *c = tiny_create("tiny", 4, 10, 3);
    CHECK(load_one(path, c, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_OK);
    CHECK(differences(a, c, 0, 3, true) == 0);
    const char *nowhere = "/nonexistent-plait-dir/x.safetensors";
    CHECK(plait_checkpoint_save(nowhere, &a->model, 0, 3, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has(nowhere));
    CHECK(load_one(nowhere, c, PLAIT_CHECKPOINT_RESUME, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has(nowhere));
    tiny_free(a);
    tiny_free(b);
    tiny_free(c);
}


int main(void) {
    testing_run("model_round_trip", model_round_trip);
    testing_run("split_checkpoints_load_under_another_split", split_checkpoints_load_under_another_split);
    testing_run("mismatches_are_errors", mismatches_are_errors);
    testing_run("torchvision_style_files", torchvision_style_files);
    testing_run("failed_save_keeps_the_old_checkpoint", failed_save_keeps_the_old_checkpoint);
    return testing_finish();
}
