#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_internal.h"
#include "plait/nn.h"
#include "testing.h"

static plait_model *create_model(const char *name, int size, int classes) {
    plait_model *m = NULL;
    if (plait_model_create(name, (plait_shape){1, size, size, 3}, classes, 1, &m) != PLAIT_OK)
        fprintf(stderr, "  create %s: %s\n", name, plait_last_error());
    return m;
}

/* The ImageNet-sized models take a while to create; each is made once. */
static struct {
    const char *name;
    plait_model *model;
} cache[] = {{"resnet18", NULL}, {"resnet50", NULL}, {"mobilenetv2", NULL}};

static plait_model *imagenet_model(const char *name) {
    for (size_t i = 0; i < sizeof cache / sizeof cache[0]; i++)
        if (strcmp(cache[i].name, name) == 0) {
            if (!cache[i].model) cache[i].model = create_model(name, 224, 1000);
            return cache[i].model;
        }
    return create_model(name, 224, 1000);
}

static void release_model(plait_model *m) {
    for (size_t i = 0; i < sizeof cache / sizeof cache[0]; i++)
        if (cache[i].model == m) return;
    plait_model_free(m);
}

static plait_param *find_param(plait_model *m, const char *name) {
    plait_param **params;
    int count;
    plait_param *found = NULL;
    if (plait_model_params(m, 0, m->unit_count, &params, &count) != PLAIT_OK) return NULL;
    for (int i = 0; i < count; i++)
        if (strcmp(params[i]->name, name) == 0) found = params[i];
    free(params);
    return found;
}

static bool param_dims_are(plait_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3) {
    plait_param *p = find_param(m, name);
    if (!p) {
        fprintf(stderr, "  no parameter %s\n", name);
        return false;
    }
    int64_t want[4] = {d0, d1, d2, d3};
    bool same = p->ndim == ndim;
    for (int i = 0; i < ndim && same; i++) same = p->dims[i] == want[i];
    return same;
}

static double model_macs(const plait_model *m) {
    double total = 0.0;
    for (int i = 0; i < m->unit_count; i++) total += plait_unit_macs(&m->units[i]);
    return total;
}

/* ---- architecture --------------------------------------------------------------------------- */

static void param_counts_match_published(void) {
    struct {
        const char *name;
        int size, classes;
        size_t expected;
    } cases[] = {
        {"resnet18", 224, 1000, 11689512},   {"resnet34", 224, 1000, 21797672},
        {"resnet50", 224, 1000, 25557032},   {"mobilenetv2", 224, 1000, 3504872},
        {"cifar_resnet18", 32, 10, 11173962}, /* torchvision's resnet18 minus the 7x7 stem, 10 classes */
        /* He et al. with projection shortcuts: stem 464, per stage 3 blocks of 4672 / 14528 + 2 x 18560 /
         * 57728 + 2 x 73984, fc 650 */
        {"resnet20", 32, 10, 272474},
        {"resnet56", 32, 10, 855770},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plait_model *m = cases[i].size == 224 ? imagenet_model(cases[i].name)
                                              : create_model(cases[i].name, cases[i].size, cases[i].classes);
        CHECK(m != NULL);
        if (!m) continue;
        CHECKF(plait_model_param_count(m) == cases[i].expected, "%s has %zu parameters, expected %zu",
               cases[i].name, plait_model_param_count(m), cases[i].expected);
        release_model(m);
    }
}

static void macs_match_published(void) {
    struct {
        const char *name;
        double expected;
    } cases[] = {{"resnet18", 1.82e9}, {"resnet50", 4.1e9}, {"mobilenetv2", 0.30e9}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plait_model *m = imagenet_model(cases[i].name);
        if (!m) continue;
        double macs = model_macs(m);
        CHECKF(fabs(macs / cases[i].expected - 1.0) < 0.01, "%s: %.4g MACs, expected %.4g", cases[i].name, macs,
               cases[i].expected);
        release_model(m);
    }
    /* ResNet-18's stem by hand: 112*112*64 outputs of 7*7*3 taps */
    plait_model *m = imagenet_model("resnet18");
    if (m) CHECK(plait_unit_macs(&m->units[0]) == 112.0 * 112 * 64 * 7 * 7 * 3);
    release_model(m);
}

static void unit_output_shapes(void) {
    plait_model *m = imagenet_model("resnet18");
    if (!m) return;
    CHECK(m->unit_count == 10);
    const char *names[10] = {"stem",     "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                             "layer3.0", "layer3.1", "layer4.0", "layer4.1", "head"};
    int sizes[10] = {56, 56, 56, 28, 28, 14, 14, 7, 7, 1};
    int channels[10] = {64, 64, 64, 128, 128, 256, 256, 512, 512, 1000};
    for (int i = 0; i < 10 && i < m->unit_count; i++) {
        plait_shape s = m->units[i].out_shape;
        CHECKF(strcmp(m->units[i].name, names[i]) == 0, "unit %d is %s", i, m->units[i].name);
        CHECKF(s.h == sizes[i] && s.w == sizes[i] && s.c == channels[i], "%s output %dx%dx%d", names[i], s.h, s.w,
               s.c);
    }
    CHECK(m->units[0].main_count == 4 && m->units[0].main[3].kind == PLAIT_LAYER_MAXPOOL);
    CHECK(m->units[3].shortcut_count == 2 && m->units[1].shortcut_count == 0);
    release_model(m);

    m = create_model("cifar_resnet50", 32, 10);
    if (m) {
        CHECK(m->unit_count == 18);
        CHECK(m->units[0].out_shape.h == 32 && m->units[0].out_shape.c == 64 && m->units[0].main_count == 3);
        CHECK(m->units[1].out_shape.h == 32 && m->units[1].out_shape.c == 256);
        CHECK(m->units[16].out_shape.h == 4 && m->units[16].out_shape.c == 2048);
        CHECK(m->units[17].out_shape.c == 10);
    }
    release_model(m);

    m = imagenet_model("mobilenetv2");
    if (m) {
        CHECK(m->unit_count == 20);
        CHECK(strcmp(m->units[0].name, "features.0") == 0 && m->units[0].out_shape.h == 112);
        CHECK(strcmp(m->units[18].name, "features.18") == 0);
        CHECK(m->units[18].out_shape.h == 7 && m->units[18].out_shape.c == 1280);
        CHECK(m->units[1].residual == false && m->units[3].residual == true && m->units[17].residual == false);
        CHECK(m->units[3].post_relu == false);
        CHECK(m->units[19].out_shape.c == 1000);
    }
    release_model(m);

    /* Real forward passes produce the declared shapes. */
    m = create_model("resnet20", 32, 10);
    if (!m) return;
    CHECK(m->unit_count == 11);
    plait_tensor x = {0};
    plait_tensor_reserve(&x, (plait_shape){2, 32, 32, 3});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 5);
    plait_unit_state *s = plait_unit_state_create();
    const plait_tensor *current = &x;
    for (int i = 0; i < m->unit_count; i++) {
        plait_unit_state_free(s);
        s = plait_unit_state_create();
        const plait_tensor *y;
        plait_tensor copy = {0};
        plait_tensor_reserve(&copy, current->shape);
        memcpy(copy.data, current->data, plait_shape_count(current->shape) * sizeof(float));
        CHECK(plait_unit_forward(&m->units[i], s, &copy, false, &y) == PLAIT_OK);
        plait_shape want = m->units[i].out_shape;
        want.n = 2;
        CHECKF(plait_shape_equal(y->shape, want), "%s", m->units[i].name);
        plait_tensor_reserve(&x, y->shape);
        memcpy(x.data, y->data, plait_shape_count(y->shape) * sizeof(float));
        current = &x;
        plait_tensor_free(&copy);
    }
    CHECK(x.shape.c == 10 && x.shape.h == 1);
    plait_unit_state_free(s);
    plait_tensor_free(&x);
    release_model(m);
}

static void names_dims_and_order(void) {
    plait_model *m = imagenet_model("resnet18");
    if (m) {
        CHECK(param_dims_are(m, "conv1.weight", 4, 64, 3, 7, 7));
        CHECK(param_dims_are(m, "layer2.0.downsample.0.weight", 4, 128, 64, 1, 1));
        CHECK(param_dims_are(m, "layer4.1.bn2.bias", 1, 512, 0, 0, 0));
        CHECK(param_dims_are(m, "fc.weight", 2, 1000, 512, 0, 0));
        CHECK(param_dims_are(m, "fc.bias", 1, 1000, 0, 0, 0));
        plait_param **params;
        int count;
        CHECK(plait_model_params(m, 0, m->unit_count, &params, &count) == PLAIT_OK);
        CHECK(count == 62); /* torchvision's resnet18 has 62 parameter tensors */
        const char *first[7] = {"conv1.weight",          "bn1.weight",          "bn1.bias",
                                "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                                "layer1.0.conv2.weight"};
        for (int i = 0; i < 7 && i < count; i++) CHECKF(strcmp(params[i]->name, first[i]) == 0, "%s", params[i]->name);
        CHECK(strcmp(params[count - 1]->name, "fc.bias") == 0);
        CHECK(params[0]->decay && params[0]->conv_weight && !params[1]->decay && !params[count - 1]->decay);
        CHECK(params[count - 2]->decay && !params[count - 2]->conv_weight);
        free(params);
        /* layer2.0: conv1, bn1, conv2, bn2, downsample.0, downsample.1 */
        CHECK(plait_model_params(m, 3, 4, &params, &count) == PLAIT_OK);
        CHECK(count == 9 && strcmp(params[6]->name, "layer2.0.downsample.0.weight") == 0);
        free(params);
        plait_buffer **buffers;
        CHECK(plait_model_buffers(m, 0, m->unit_count, &buffers, &count) == PLAIT_OK);
        CHECK(count == 40 && strcmp(buffers[0]->name, "bn1.running_mean") == 0);
        CHECK(strcmp(buffers[1]->name, "bn1.running_var") == 0 && buffers[1]->value[0] == 1.0f);
        free(buffers);
        CHECK(plait_model_params(m, 3, 11, &params, &count) == PLAIT_ERROR);
        release_model(m);
    }
    m = imagenet_model("resnet50");
    if (m) {
        CHECK(param_dims_are(m, "layer1.0.downsample.0.weight", 4, 256, 64, 1, 1));
        CHECK(param_dims_are(m, "layer1.0.conv2.weight", 4, 64, 64, 3, 3));
        CHECK(param_dims_are(m, "layer2.0.conv1.weight", 4, 128, 256, 1, 1));
        /* v1.5: the stride is in conv2 */
        CHECK(m->units[4].main[0].conv.stride_h == 1 && m->units[4].main[3].conv.stride_h == 2);
        CHECK(param_dims_are(m, "fc.weight", 2, 1000, 2048, 0, 0));
        release_model(m);
    }
    m = imagenet_model("mobilenetv2");
    if (m) {
        CHECK(param_dims_are(m, "features.0.0.weight", 4, 32, 3, 3, 3));
        CHECK(param_dims_are(m, "features.1.conv.0.0.weight", 4, 32, 1, 3, 3));
        CHECK(param_dims_are(m, "features.1.conv.1.weight", 4, 16, 32, 1, 1));
        CHECK(param_dims_are(m, "features.1.conv.2.weight", 1, 16, 0, 0, 0));
        CHECK(param_dims_are(m, "features.2.conv.0.0.weight", 4, 96, 16, 1, 1));
        CHECK(param_dims_are(m, "features.2.conv.1.0.weight", 4, 96, 1, 3, 3));
        CHECK(param_dims_are(m, "features.2.conv.3.bias", 1, 24, 0, 0, 0));
        CHECK(param_dims_are(m, "features.18.0.weight", 4, 1280, 320, 1, 1));
        CHECK(param_dims_are(m, "classifier.1.weight", 2, 1000, 1280, 0, 0));
        release_model(m);
    }
}

static void initialization_statistics(void) {
    plait_model *m = imagenet_model("resnet18");
    if (!m) return;
    struct {
        const char *name;
        double mean_bound, std;
    } cases[] = {
        {"layer3.0.conv2.weight", 0.002, sqrt(2.0 / (256 * 9))}, /* kaiming normal, fan_out */
        {"fc.weight", 0.002, 1.0 / sqrt(512) / sqrt(3.0)},       /* uniform +-1/sqrt(512) */
        {"fc.bias", 0.01, 1.0 / sqrt(512) / sqrt(3.0)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plait_param *p = find_param(m, cases[i].name);
        if (!p) continue;
        double sum = 0, sumsq = 0, bound = 0;
        for (size_t j = 0; j < p->count; j++) {
            sum += p->value[j];
            sumsq += (double)p->value[j] * p->value[j];
            bound = fmax(bound, fabs(p->value[j]));
        }
        double mean = sum / (double)p->count, std = sqrt(sumsq / (double)p->count - mean * mean);
        CHECKF(fabs(mean) < cases[i].mean_bound, "%s mean %g", cases[i].name, mean);
        CHECKF(fabs(std / cases[i].std - 1.0) < 0.1, "%s std %g, expected %g", cases[i].name, std, cases[i].std);
        if (strncmp(cases[i].name, "fc", 2) == 0) CHECK(bound <= 1.0 / sqrt(512));
    }
    plait_param *bn = find_param(m, "layer1.0.bn1.weight"), *bias = find_param(m, "layer1.0.bn1.bias");
    CHECK(bn && bias && bn->value[5] == 1.0f && bias->value[5] == 0.0f);
    release_model(m);
    /* same seed, same weights; another seed, others */
    plait_model *one = create_model("resnet20", 32, 10), *again = create_model("resnet20", 32, 10), *other = NULL;
    plait_model_create("resnet20", (plait_shape){1, 32, 32, 3}, 10, 2, &other);
    plait_param *a = find_param(one, "layer3.2.conv2.weight");
    CHECK(memcmp(a->value, find_param(again, "layer3.2.conv2.weight")->value, a->count * sizeof(float)) == 0);
    CHECK(memcmp(a->value, find_param(other, "layer3.2.conv2.weight")->value, a->count * sizeof(float)) != 0);
    plait_model_free(one);
    plait_model_free(again);
    plait_model_free(other);

    m = imagenet_model("mobilenetv2");
    if (!m) return;
    plait_param *w = find_param(m, "classifier.1.weight"), *b = find_param(m, "classifier.1.bias");
    double sumsq = 0;
    for (size_t j = 0; j < w->count; j++) sumsq += (double)w->value[j] * w->value[j];
    CHECKF(fabs(sqrt(sumsq / (double)w->count) / 0.01 - 1.0) < 0.02, "classifier std %g", sqrt(sumsq / w->count));
    CHECK(b->value[0] == 0.0f && b->value[999] == 0.0f);
    plait_param *dw = find_param(m, "features.2.conv.1.0.weight"); /* depthwise: fan_out = 96 * 9 */
    sumsq = 0;
    for (size_t j = 0; j < dw->count; j++) sumsq += (double)dw->value[j] * dw->value[j];
    CHECKF(fabs(sqrt(sumsq / (double)dw->count) / sqrt(2.0 / (96 * 9)) - 1.0) < 0.15, "depthwise std %g",
           sqrt(sumsq / dw->count));
    release_model(m);
}

static void unknown_model_and_bad_input(void) {
    plait_model *m = (plait_model *)1;
    CHECK(plait_model_create("resnet19", (plait_shape){1, 32, 32, 3}, 10, 1, &m) == PLAIT_ERROR);
    CHECK(m == NULL);
    CHECK(strcmp(plait_last_error(), "unknown model 'resnet19' (known: resnet18, resnet34, resnet50, "
                                     "cifar_resnet18, cifar_resnet34, cifar_resnet50, resnet20, resnet56, "
                                     "mobilenetv2)") == 0);
    CHECK(plait_model_create("resnet20", (plait_shape){1, 32, 32, 3}, 0, 1, &m) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "classes") != NULL);
    int names = 0;
    for (const char *const *n = plait_model_names(); *n; n++) names++;
    CHECK(names == 9);
}

static void summary_lists_units_and_totals(void) {
    plait_model *m = imagenet_model("resnet18");
    if (!m) return;
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    plait_model_print_summary(m, out);
    fclose(out);
    CHECK(strstr(text, "layer4.1") != NULL);
    CHECK(strstr(text, "7x7x512") != NULL);
    CHECK(strstr(text, "11.690 M parameters") != NULL);
    CHECK(strstr(text, "1.814 G multiply-adds") != NULL);
    free(text);
    release_model(m);
}

static void torch_layout_conversion(void) {
    plait_model *m = create_model("resnet20", 32, 10);
    if (!m) return;
    plait_param *p = find_param(m, "layer2.0.conv1.weight"); /* [32,16,3,3] */
    float *torch = malloc(p->count * sizeof(float)), *back = malloc(p->count * sizeof(float));
    plait_param_to_torch(p, p->value, torch);
    /* OIHW (k=5, c=7, r=1, s=2) is OHWI (k=5, r=1, s=2, c=7) */
    CHECK(torch[((5 * 16 + 7) * 3 + 1) * 3 + 2] == p->value[((5 * 3 + 1) * 3 + 2) * 16 + 7]);
    plait_param_from_torch(p, torch, back);
    CHECK(memcmp(back, p->value, p->count * sizeof(float)) == 0);
    free(torch);
    free(back);
    release_model(m);
}

/* ---- unit gradients against central finite differences --------------------------------------- */

/* loss = sum(y * r) in double */
static double weighted_sum(const plait_tensor *y, const float *r) {
    double total = 0.0;
    for (size_t i = 0; i < plait_shape_count(y->shape); i++) total += (double)y->data[i] * r[i];
    return total;
}

static double unit_loss(plait_unit *u, plait_unit_state *s, const plait_tensor *x, const float *r) {
    const plait_tensor *y;
    if (plait_unit_forward(u, s, x, true, &y) != PLAIT_OK) return NAN;
    return weighted_sum(y, r);
}

/* Central differences at eps and eps/2 for every entry of values against the analytic gradient; the
 * relative error in norm. An entry whose two estimates disagree sits near a ReLU or max-pool kink and
 * is left out; *skipped counts those. */
static double gradient_error(plait_unit *u, plait_unit_state *s, const plait_tensor *x, const float *r,
                             float *values, size_t count, const float *analytic, float eps, size_t *skipped) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < count; i++) {
        float saved = values[i];
        double numeric[2];
        for (int k = 0; k < 2; k++) {
            float step = k == 0 ? eps : eps / 2;
            values[i] = saved + step;
            double plus = unit_loss(u, s, x, r);
            values[i] = saved - step;
            double minus = unit_loss(u, s, x, r);
            values[i] = saved;
            numeric[k] = (plus - minus) / (double)(2.0f * step);
        }
        if (fabs(numeric[0] - numeric[1]) > 0.05 * (fabs(numeric[0]) + fabs(numeric[1])) + 3e-3) {
            (*skipped)++;
            continue;
        }
        diff += (numeric[0] - analytic[i]) * (numeric[0] - analytic[i]);
        norm += (double)analytic[i] * analytic[i];
    }
    return sqrt(diff / fmax(norm, 1e-30));
}

/* How far the last forward's activations are from a kink: ReLU inputs from 0 (and 6), the two largest
 * values of each max-pool window from each other. */
static double kink_margin(const plait_unit *u, const plait_unit_state *s, const plait_tensor *x) {
    const nn_layer_state *states = nn_unit_state_layers(s, false);
    double margin = INFINITY;
    for (int i = 0; i < u->main_count; i++) {
        const plait_layer *l = &u->main[i];
        const float *in = i > 0 ? states[i - 1].y.data : x->data;
        size_t count = plait_shape_count(i > 0 ? states[i - 1].y.shape : x->shape);
        if (l->kind == PLAIT_LAYER_RELU || l->kind == PLAIT_LAYER_RELU6)
            for (size_t j = 0; j < count; j++) {
                margin = fmin(margin, fabs(in[j]));
                if (l->kind == PLAIT_LAYER_RELU6) margin = fmin(margin, fabs(in[j] - 6.0f));
            }
        if (l->kind == PLAIT_LAYER_MAXPOOL) {
            const plait_pool2d_desc *d = &l->pool;
            for (int n = 0; n < x->shape.n; n++)
                for (int p = 0; p < l->out_shape.h; p++)
                    for (int q = 0; q < l->out_shape.w; q++)
                        for (int c = 0; c < d->channels; c++) {
                            float first = -INFINITY, second = -INFINITY;
                            for (int r = 0; r < d->kernel; r++)
                                for (int t = 0; t < d->kernel; t++) {
                                    int h = p * d->stride - d->pad + r, w = q * d->stride - d->pad + t;
                                    if (h < 0 || h >= d->in_h || w < 0 || w >= d->in_w) continue;
                                    float v = in[((n * d->in_h + h) * d->in_w + w) * d->channels + c];
                                    if (v > first) {
                                        second = first;
                                        first = v;
                                    } else if (v > second) {
                                        second = v;
                                    }
                                }
                            if (first > 0.0f) margin = fmin(margin, first - second); /* ties of zeros are dead */
                        }
        }
    }
    if (u->post_relu) {
        const plait_tensor *sum = &states[u->main_count - 1].y;
        for (size_t j = 0; j < plait_shape_count(sum->shape); j++) margin = fmin(margin, fabs(sum->data[j]));
    }
    return margin;
}

static void check_unit_gradients(plait_model *m, int batch, unsigned long seed) {
    plait_unit *u = &m->units[m->unit_count - 1];
    plait_shape in = u->in_shape, out = u->out_shape;
    in.n = out.n = batch;
    plait_tensor x = {0}, dy = {0};
    plait_tensor_reserve(&x, in);
    plait_tensor_reserve(&dy, out);
    testing_fill_uniform(dy.data, plait_shape_count(out), seed + 1);
    plait_unit_state *s = plait_unit_state_create();
    const plait_tensor *y, *dx;
    nn_in_place_activations = false; /* keeps the pre-activations for kink_margin */
    /* inputs whose activations all stay clear of kinks, so finite differences never straddle one */
    double margin = 0.0;
    for (unsigned long attempt = 0; attempt < 500 && margin < 0.01; attempt++) {
        testing_fill_uniform(x.data, plait_shape_count(in), seed + 1000 * attempt);
        CHECK(plait_unit_forward(u, s, &x, true, &y) == PLAIT_OK);
        margin = kink_margin(u, s, &x);
    }
    CHECKF(margin >= 0.01, "%s: no input found with activations clear of kinks", u->name);
    plait_model_zero_grad(m, 0, m->unit_count);
    CHECK(plait_unit_forward(u, s, &x, true, &y) == PLAIT_OK);
    CHECK(plait_shape_equal(y->shape, out));
    CHECK(plait_unit_backward(u, s, &dy, &dx) == PLAIT_OK);
    CHECK(plait_shape_equal(dx->shape, in));
    float *analytic_dx = malloc(plait_shape_count(in) * sizeof(float));
    memcpy(analytic_dx, dx->data, plait_shape_count(in) * sizeof(float));

    const float eps = 1e-3f, tolerance = 1e-2;
    size_t skipped = 0, total = plait_shape_count(in);
    double error = gradient_error(u, s, &x, dy.data, x.data, plait_shape_count(in), analytic_dx, eps, &skipped);
    CHECKF(error < tolerance, "%s dx: relative error %g", u->name, error);
    plait_param **params;
    int count;
    plait_model_params(m, 0, m->unit_count, &params, &count);
    for (int i = 0; i < count; i++) {
        error = gradient_error(u, s, &x, dy.data, params[i]->value, params[i]->count, params[i]->grad, eps,
                               &skipped);
        CHECKF(error < tolerance, "%s: relative error %g", params[i]->name, error);
        if (getenv("PLAIT_TEST_VERBOSE")) fprintf(stderr, "  %s: %g\n", params[i]->name, error);
        total += params[i]->count;
    }
    CHECKF(skipped * 100 <= total, "%s: %zu of %zu entries near kinks", u->name, skipped, total);
    if (getenv("PLAIT_TEST_VERBOSE")) fprintf(stderr, "  %s: %zu of %zu entries skipped\n", u->name, skipped, total);
    free(params);
    free(analytic_dx);
    nn_in_place_activations = true;
    plait_unit_state_free(s);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
}

/* BN weights and biases away from 1 and 0, so their gradients and the paths through them are generic. */
static void perturb_batchnorm(plait_model *m, unsigned long seed) {
    plait_param **params;
    int count;
    plait_model_params(m, 0, m->unit_count, &params, &count);
    for (int i = 0; i < count; i++) {
        if (params[i]->conv_weight || params[i]->ndim != 1) continue;
        float noise[512];
        testing_fill_uniform(noise, params[i]->count, seed + (unsigned long)i);
        for (size_t j = 0; j < params[i]->count; j++) params[i]->value[j] += 0.3f * noise[j];
    }
    free(params);
}

static void basic_block_with_downsample_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 6, 6, 4}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 11);
    CHECK(nn_basic_block(m, "layer2.0", 6, 2, &rng) == PLAIT_OK);
    CHECK(m->units[0].shortcut_count == 2 && m->units[0].out_shape.h == 3);
    perturb_batchnorm(m, 100);
    check_unit_gradients(m, 2, 41);
    release_model(m);
}

static void bottleneck_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 5, 5, 8}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 12);
    CHECK(nn_bottleneck(m, "layer1.1", 2, 1, &rng) == PLAIT_OK);
    CHECK(m->units[0].shortcut_count == 0 && m->units[0].out_shape.c == 8);
    perturb_batchnorm(m, 200);
    check_unit_gradients(m, 2, 22);
    release_model(m);
}

static void inverted_residual_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 4, 4, 4}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 13);
    CHECK(nn_inverted_residual(m, "features.4", 4, 1, 2, &rng) == PLAIT_OK);
    CHECK(m->units[0].residual && !m->units[0].post_relu && m->units[0].main_count == 8);
    CHECK(m->units[0].main[3].conv.groups == 8);
    perturb_batchnorm(m, 300);
    check_unit_gradients(m, 2, 23);
    release_model(m);
}

static void stem_with_maxpool_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 12, 12, 3}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 14);
    CHECK(nn_resnet_stem(m, 4, true, &rng) == PLAIT_OK);
    CHECK(m->units[0].out_shape.h == 3 && m->units[0].out_shape.c == 4);
    perturb_batchnorm(m, 400);
    check_unit_gradients(m, 2, 24);
    release_model(m);
}

/* Activations overwriting their inputs give the same outputs, input gradients and parameter gradients. */
static void in_place_activations_change_nothing(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 6, 6, 4}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 17);
    CHECK(nn_bottleneck(m, "layer1.0", 2, 2, &rng) == PLAIT_OK);
    plait_unit *u = &m->units[0];
    plait_tensor x = {0}, dy = {0};
    plait_tensor_reserve(&x, (plait_shape){3, 6, 6, 4});
    plait_tensor_reserve(&dy, (plait_shape){3, 3, 3, 8});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 1);
    testing_fill_uniform(dy.data, plait_shape_count(dy.shape), 2);
    float *outputs[2], *input_gradients[2], *weight_gradients[2];
    for (int mode = 0; mode < 2; mode++) {
        nn_in_place_activations = mode == 1;
        plait_unit_state *s = plait_unit_state_create();
        plait_model_zero_grad(m, 0, 1);
        const plait_tensor *y, *dx;
        CHECK(plait_unit_forward(u, s, &x, true, &y) == PLAIT_OK);
        outputs[mode] = malloc(plait_shape_count(y->shape) * sizeof(float));
        memcpy(outputs[mode], y->data, plait_shape_count(y->shape) * sizeof(float));
        CHECK(plait_unit_backward(u, s, &dy, &dx) == PLAIT_OK);
        input_gradients[mode] = malloc(plait_shape_count(x.shape) * sizeof(float));
        memcpy(input_gradients[mode], dx->data, plait_shape_count(x.shape) * sizeof(float));
        plait_param *w = &u->main[0].params[0];
        weight_gradients[mode] = malloc(w->count * sizeof(float));
        memcpy(weight_gradients[mode], w->grad, w->count * sizeof(float));
        plait_unit_state_free(s);
    }
    nn_in_place_activations = true;
    CHECK(memcmp(outputs[0], outputs[1], plait_shape_count(dy.shape) * sizeof(float)) == 0);
    CHECK(memcmp(input_gradients[0], input_gradients[1], plait_shape_count(x.shape) * sizeof(float)) == 0);
    CHECK(memcmp(weight_gradients[0], weight_gradients[1], u->main[0].params[0].count * sizeof(float)) == 0);
    for (int mode = 0; mode < 2; mode++) {
        free(outputs[mode]);
        free(input_gradients[mode]);
        free(weight_gradients[mode]);
    }
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
    plait_model_free(m);
}

static void head_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 3, 3, 6}, 5);
    plait_rng rng;
    plait_rng_seed(&rng, 15);
    CHECK(nn_classifier_head(m, "fc", 5, NN_LINEAR_TORCH_DEFAULT, &rng) == PLAIT_OK);
    check_unit_gradients(m, 2, 25);
    release_model(m);
}

/* ---- batch normalization statistics, micro-batches, training ---------------------------------- */

static void run_units(plait_model *m, plait_unit_state **states, const plait_tensor *x, bool training,
                      const plait_tensor **y) {
    const plait_tensor *current = x;
    for (int i = 0; i < m->unit_count; i++) {
        if (plait_unit_forward(&m->units[i], states[i], current, training, &current) != PLAIT_OK) {
            fprintf(stderr, "  forward %s: %s\n", m->units[i].name, plait_last_error());
            *y = NULL;
            return;
        }
    }
    *y = current;
}

static void backward_units(plait_model *m, plait_unit_state **states, const plait_tensor *dy) {
    const plait_tensor *current = dy;
    for (int i = m->unit_count - 1; i >= 0; i--) {
        const plait_tensor *dx;
        CHECK(plait_unit_backward(&m->units[i], states[i], current, i > 0 ? &dx : NULL) == PLAIT_OK);
        current = dx;
    }
}

static plait_unit_state **states_create(int count) {
    plait_unit_state **states = malloc((size_t)count * sizeof *states);
    for (int i = 0; i < count; i++) states[i] = plait_unit_state_create();
    return states;
}

static void states_free(plait_unit_state **states, int count) {
    for (int i = 0; i < count; i++) plait_unit_state_free(states[i]);
    free(states);
}

/* Rows [first, first+n) of an NHWC tensor. */
static plait_tensor batch_slice(const plait_tensor *x, int first, int n) {
    plait_tensor t = {0};
    plait_shape shape = x->shape;
    shape.n = n;
    plait_tensor_reserve(&t, shape);
    size_t per = plait_shape_count(shape) / (size_t)n;
    memcpy(t.data, x->data + per * (size_t)first, per * (size_t)n * sizeof(float));
    return t;
}

static plait_model *batchnorm_only_model(int channels) {
    plait_model *m = nn_model_new("bn", (plait_shape){1, 2, 3, channels}, channels);
    plait_unit *u = nn_model_add_unit(m, "norm");
    nn_add_batchnorm(u, false, "bn");
    nn_unit_finish(u);
    return m;
}

static void running_stats_follow_pytorch(void) {
    /* Against PyTorch's definition for one mini-batch of 6 split as 3 + 3: running_mean = 0.1 * mean,
     * running_var = 0.9 + 0.1 * unbiased variance over all 6 * 2 * 3 rows. */
    int channels = 5;
    plait_model *m = batchnorm_only_model(channels);
    plait_tensor x = {0};
    plait_tensor_reserve(&x, (plait_shape){6, 2, 3, channels});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 77);
    /* channel 0 varies little, so batchnorm's eps would show if it leaked into the variance */
    for (size_t i = 0; i < plait_shape_count(x.shape); i++)
        x.data[i] = (i % channels == 0 ? 0.01f : 3.0f) * x.data[i] + (float)(i % channels);
    plait_tensor first = batch_slice(&x, 0, 3), second = batch_slice(&x, 3, 3);
    plait_unit_state **states = states_create(2);
    plait_model_zero_grad(m, 0, 1);
    const plait_tensor *y;
    run_units(m, &states[0], &first, true, &y);
    run_units(m, &states[1], &second, true, &y);
    plait_model_update_running_stats(m, 0, 1);
    plait_layer *bn = &m->units[0].main[0];
    CHECK(bn->num_batches_tracked == 1);
    size_t rows = 36;
    for (int c = 0; c < channels; c++) {
        double sum = 0, sumsq = 0;
        for (size_t r = 0; r < rows; r++) sum += x.data[r * channels + c];
        double mean = sum / rows;
        for (size_t r = 0; r < rows; r++) sumsq += (x.data[r * channels + c] - mean) * (x.data[r * channels + c] - mean);
        double var = sumsq / (rows - 1);
        CHECKF(fabs(bn->buffers[0].value[c] - 0.1 * mean) < 1e-6 * (1 + fabs(mean)), "mean %d: %g vs %g", c,
               bn->buffers[0].value[c], 0.1 * mean);
        CHECKF(fabs(bn->buffers[1].value[c] - (0.9 + 0.1 * var)) < 3e-7 + 2e-6 * var, "var %d: %g vs %g", c,
               bn->buffers[1].value[c], 0.9 + 0.1 * var);
    }
    /* the same as one micro-batch of 6 */
    plait_model *whole = batchnorm_only_model(channels);
    plait_unit_state *s = plait_unit_state_create();
    plait_model_zero_grad(whole, 0, 1);
    CHECK(plait_unit_forward(&whole->units[0], s, &x, true, &y) == PLAIT_OK);
    plait_model_update_running_stats(whole, 0, 1);
    for (int c = 0; c < channels; c++) {
        CHECK(fabs(whole->units[0].main[0].buffers[0].value[c] - bn->buffers[0].value[c]) < 1e-6);
        CHECK(fabs(whole->units[0].main[0].buffers[1].value[c] - bn->buffers[1].value[c]) < 1e-5);
    }
    plait_unit_state_free(s);
    plait_model_free(whole);
    /* A second update without new statistics changes nothing. */
    float before = bn->buffers[1].value[2];
    plait_model_update_running_stats(m, 0, 1);
    CHECK(bn->buffers[1].value[2] == before && bn->num_batches_tracked == 1);
    states_free(states, 2);
    plait_tensor_free(&first);
    plait_tensor_free(&second);
    plait_tensor_free(&x);
    release_model(m);
}

static void micro_batches_match_mini_batch(void) {
    /* In a real ResNet-20 on 8x8 inputs, two micro-batches of 3 in flight together accumulate the sum
     * of their separate gradients, and the stem's batchnorm gets the running statistics of one
     * mini-batch of 6. */
    plait_model *whole = create_model("resnet20", 8, 4), *split = create_model("resnet20", 8, 4);
    if (!whole || !split) return;
    int units = whole->unit_count;
    plait_tensor x = {0}, dy = {0};
    plait_tensor_reserve(&x, (plait_shape){6, 8, 8, 3});
    plait_tensor_reserve(&dy, (plait_shape){6, 1, 1, 4});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 91);
    testing_fill_uniform(dy.data, plait_shape_count(dy.shape), 92);
    plait_tensor x1 = batch_slice(&x, 0, 3), x2 = batch_slice(&x, 3, 3);
    plait_tensor dy1 = batch_slice(&dy, 0, 3), dy2 = batch_slice(&dy, 3, 3);

    plait_unit_state **one = states_create(units), **a = states_create(units), **b = states_create(units);
    const plait_tensor *y;
    plait_model_zero_grad(whole, 0, units);
    run_units(whole, one, &x, true, &y);
    plait_model_update_running_stats(whole, 0, units);

    /* gradients of each micro-batch alone */
    plait_param **params;
    int count;
    plait_model_params(split, 0, units, &params, &count);
    size_t total = 0;
    for (int i = 0; i < count; i++) total += params[i]->count;
    double *expected = calloc(total, sizeof(double));
    for (int part = 0; part < 2; part++) {
        plait_model_zero_grad(split, 0, units);
        run_units(split, a, part == 0 ? &x1 : &x2, true, &y);
        backward_units(split, a, part == 0 ? &dy1 : &dy2);
        size_t k = 0;
        for (int i = 0; i < count; i++)
            for (size_t j = 0; j < params[i]->count; j++) expected[k++] += params[i]->grad[j];
    }
    /* both in flight at once, backward in the other order, accumulated */
    plait_model_zero_grad(split, 0, units);
    run_units(split, a, &x1, true, &y);
    run_units(split, b, &x2, true, &y);
    backward_units(split, b, &dy2);
    backward_units(split, a, &dy1);
    plait_model_update_running_stats(split, 0, units);
    double diff = 0, norm = 0;
    size_t k = 0;
    for (int i = 0; i < count; i++)
        for (size_t j = 0; j < params[i]->count; j++, k++) {
            diff += (params[i]->grad[j] - expected[k]) * (params[i]->grad[j] - expected[k]);
            norm += expected[k] * expected[k];
        }
    CHECKF(sqrt(diff / norm) < 1e-5, "accumulated gradients differ: %g", sqrt(diff / norm));
    CHECK(norm > 0);

    plait_buffer **whole_buffers, **split_buffers;
    int buffer_count;
    plait_model_buffers(whole, 0, units, &whole_buffers, &buffer_count);
    plait_model_buffers(split, 0, units, &split_buffers, &buffer_count);
    CHECK(buffer_count == 2 * 21);
    /* Only the first batchnorm sees the same rows either way: deeper ones see inputs normalized with
     * each micro-batch's own statistics, as in PyTorch. */
    double worst = 0;
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < whole_buffers[i]->count; j++)
            worst = fmax(worst, fabs(whole_buffers[i]->value[j] - split_buffers[i]->value[j]) /
                                    (1e-3 + fabs(whole_buffers[i]->value[j])));
    CHECKF(worst < 1e-4, "running statistics differ by %g", worst);
    CHECK(whole->units[3].main[1].num_batches_tracked == 1 && split->units[3].main[1].num_batches_tracked == 1);
    free(whole_buffers);
    free(split_buffers);
    free(expected);
    free(params);
    states_free(one, units);
    states_free(a, units);
    states_free(b, units);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
    plait_tensor_free(&x1);
    plait_tensor_free(&x2);
    plait_tensor_free(&dy1);
    plait_tensor_free(&dy2);
    plait_model_free(whole);
    plait_model_free(split);
}

static void eval_uses_running_stats(void) {
    int channels = 3;
    plait_model *m = batchnorm_only_model(channels);
    plait_layer *bn = &m->units[0].main[0];
    float mean[3] = {0.5f, -1.0f, 2.0f}, var[3] = {4.0f, 0.25f, 1.0f}, gamma[3] = {1.0f, 2.0f, -0.5f},
          beta[3] = {0.0f, 0.1f, 0.2f};
    memcpy(bn->buffers[0].value, mean, sizeof mean);
    memcpy(bn->buffers[1].value, var, sizeof var);
    memcpy(bn->params[0].value, gamma, sizeof gamma);
    memcpy(bn->params[1].value, beta, sizeof beta);
    plait_tensor x = {0};
    plait_tensor_reserve(&x, (plait_shape){2, 2, 3, channels});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 5);
    plait_unit_state *s = plait_unit_state_create();
    plait_model_zero_grad(m, 0, 1);
    const plait_tensor *y;
    CHECK(plait_unit_forward(&m->units[0], s, &x, false, &y) == PLAIT_OK);
    for (size_t i = 0; i < plait_shape_count(x.shape); i++) {
        int c = (int)(i % channels);
        double want = (x.data[i] - mean[c]) / sqrt(var[c] + 1e-5) * gamma[c] + beta[c];
        CHECKF(fabs(y->data[i] - want) < 1e-5, "%zu: %g vs %g", i, y->data[i], want);
    }
    CHECK(bn->bn_stat_rows == 0.0); /* evaluation leaves the statistics alone */
    plait_tensor dy = {0};
    plait_tensor_reserve(&dy, x.shape);
    const plait_tensor *dx;
    CHECK(plait_unit_backward(&m->units[0], s, &dy, &dx) == PLAIT_ERROR);
    CHECK(strcmp(plait_last_error(), "norm: backward without a training forward") == 0);
    /* training normalizes with the batch's own statistics instead: mean 0 per channel */
    CHECK(plait_unit_forward(&m->units[0], s, &x, true, &y) == PLAIT_OK);
    double sum = 0;
    for (size_t i = 0; i < plait_shape_count(x.shape); i += channels) sum += y->data[i];
    CHECKF(fabs(sum / 12) < 1e-5, "training mean %g", sum / 12);
    CHECK(bn->bn_stat_rows == 12.0);
    plait_unit_state_free(s);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
    release_model(m);
}

static void sgd_drives_loss_down(void) {
    /* a ResNet in miniature: CIFAR stem, two basic blocks (one with projection), head */
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 8, 8, 3}, 4);
    plait_rng rng;
    plait_rng_seed(&rng, 3);
    CHECK(nn_resnet_stem(m, 8, false, &rng) == PLAIT_OK && nn_basic_block(m, "layer1.0", 8, 1, &rng) == PLAIT_OK &&
          nn_basic_block(m, "layer2.0", 16, 2, &rng) == PLAIT_OK &&
          nn_classifier_head(m, "fc", 4, NN_LINEAR_TORCH_DEFAULT, &rng) == PLAIT_OK);
    int batch = 8, units = m->unit_count;
    plait_tensor x = {0}, dlogits = {0};
    plait_tensor_reserve(&x, (plait_shape){batch, 8, 8, 3});
    plait_tensor_reserve(&dlogits, (plait_shape){batch, 1, 1, 4});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 123);
    int32_t labels[8] = {0, 1, 2, 3, 3, 2, 1, 0};
    plait_unit_state **states = states_create(units);
    plait_param **params;
    int count;
    plait_model_params(m, 0, units, &params, &count);
    float first_loss = 0, loss = 0;
    for (int step = 0; step < 40; step++) {
        plait_model_zero_grad(m, 0, units);
        const plait_tensor *y;
        run_units(m, states, &x, true, &y);
        if (!y) break;
        loss = plait_softmax_cross_entropy(batch, 4, y->data, labels, 0.0f, dlogits.data, NULL);
        if (step == 0) first_loss = loss;
        backward_units(m, states, &dlogits);
        plait_model_update_running_stats(m, 0, units);
        for (int i = 0; i < count; i++)
            plait_sgd_step(params[i]->count, params[i]->value, params[i]->grad, params[i]->momentum, 0.05f, 0.9f,
                           params[i]->decay ? 5e-4f : 0.0f, false);
    }
    CHECKF(first_loss > 1.0f && loss < 0.05f * first_loss, "loss %g -> %g", first_loss, loss);
    if (getenv("PLAIT_TEST_VERBOSE")) fprintf(stderr, "  loss %g -> %g\n", first_loss, loss);
    CHECK(m->units[0].main[1].num_batches_tracked == 40);
    free(params);
    states_free(states, units);
    plait_tensor_free(&x);
    plait_tensor_free(&dlogits);
    release_model(m);
}

int main(void) {
    testing_run("param_counts_match_published", param_counts_match_published);
    testing_run("macs_match_published", macs_match_published);
    testing_run("unit_output_shapes", unit_output_shapes);
    testing_run("names_dims_and_order", names_dims_and_order);
    testing_run("initialization_statistics", initialization_statistics);
    testing_run("unknown_model_and_bad_input", unknown_model_and_bad_input);
    testing_run("summary_lists_units_and_totals", summary_lists_units_and_totals);
    testing_run("torch_layout_conversion", torch_layout_conversion);
    testing_run("basic_block_with_downsample_gradients", basic_block_with_downsample_gradients);
    testing_run("bottleneck_gradients", bottleneck_gradients);
    testing_run("inverted_residual_gradients", inverted_residual_gradients);
    testing_run("stem_with_maxpool_gradients", stem_with_maxpool_gradients);
    testing_run("head_gradients", head_gradients);
    testing_run("in_place_activations_change_nothing", in_place_activations_change_nothing);
    testing_run("running_stats_follow_pytorch", running_stats_follow_pytorch);
    testing_run("micro_batches_match_mini_batch", micro_batches_match_mini_batch);
    testing_run("eval_uses_running_stats", eval_uses_running_stats);
    testing_run("sgd_drives_loss_down", sgd_drives_loss_down);
    for (size_t i = 0; i < sizeof cache / sizeof cache[0]; i++) plait_model_free(cache[i].model);
    return testing_finish();
}
