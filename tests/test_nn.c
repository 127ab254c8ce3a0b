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
        CHECK(strcmp(plait_last_error(), "unit range [3, 11) is outside the model's 10 units") == 0);
        plait_layer **layers;
        CHECK(plait_model_layers(m, 0, 1, &layers, &count) == PLAIT_OK);
        CHECK(count == 4 && strcmp(layers[3]->name, "maxpool") == 0 && layers[0]->kind == PLAIT_LAYER_CONV2D);
        free(layers);
        CHECK(plait_model_layers(m, 3, 4, &layers, &count) == PLAIT_OK);
        CHECK(count == 7 && strcmp(layers[5]->name, "layer2.0.downsample.0") == 0);
        CHECK(layers[6]->kind == PLAIT_LAYER_BATCHNORM && layers[6]->num_batches_tracked == 0);
        free(layers);
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
    CHECK(strstr(text, "11,689,512 parameters (11.690 M)") != NULL);
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

/* Zero-initialized residual blocks start as their shortcut: an identity block passes its (non-negative)
 * input through unchanged, and the zeroed gammas still get gradients, so the blocks can learn. */
static void zero_init_residual_blocks_start_as_shortcut(void) {
    plait_model *m = create_model("resnet20", 9, 10);
    if (!m) return;
    CHECK(plait_model_zero_init_residual(m) == 9); /* 3 stages x 3 basic blocks */
    CHECK(find_param(m, "layer1.0.bn2.weight")->value[5] == 0.0f);
    CHECK(find_param(m, "layer1.0.bn1.weight")->value[5] == 1.0f);
    plait_unit *block = &m->units[2]; /* layer1.1: identity shortcut */
    CHECK(strcmp(block->name, "layer1.1") == 0 && block->shortcut_count == 0);
    plait_tensor x = {0};
    plait_tensor_reserve(&x, (plait_shape){3, 9, 9, 16});
    plait_rng rng;
    plait_rng_seed(&rng, 7);
    for (size_t i = 0; i < plait_shape_count(x.shape); i++) x.data[i] = plait_rng_uniform(&rng); /* as after a ReLU */
    plait_unit_state *state = plait_unit_state_create();
    const plait_tensor *y = NULL;
    plait_model_zero_grad(m, 0, m->unit_count);
    CHECK(plait_unit_forward(block, state, &x, true, &y) == PLAIT_OK);
    double worst = 0;
    for (size_t i = 0; y && i < plait_shape_count(x.shape); i++) worst = fmax(worst, fabs(y->data[i] - x.data[i]));
    CHECKF(worst == 0.0, "identity block changed its input by %g", worst);
    plait_tensor dy = {0};
    plait_tensor_reserve(&dy, x.shape);
    for (size_t i = 0; i < plait_shape_count(dy.shape); i++) dy.data[i] = plait_rng_uniform(&rng) - 0.5f;
    const plait_tensor *dx = NULL;
    CHECK(plait_unit_backward(block, state, &dy, &dx) == PLAIT_OK);
    plait_param *gamma = find_param(m, "layer1.1.bn2.weight");
    double grad = 0;
    for (size_t i = 0; i < gamma->count; i++) grad += fabs(gamma->grad[i]);
    CHECKF(grad > 1e-3, "zeroed gamma got gradient %g", grad);
    plait_unit_state_free(state);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
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
    testing_run("zero_init_residual_blocks_start_as_shortcut", zero_init_residual_blocks_start_as_shortcut);
    for (size_t i = 0; i < sizeof cache / sizeof cache[0]; i++) plait_model_free(cache[i].model);
    return testing_finish();
}
