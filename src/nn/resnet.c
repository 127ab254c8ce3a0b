/* ResNets with torchvision's module names: ImageNet ResNet-18/34/50, their CIFAR forms, and He et al.'s
 * CIFAR ResNet-20/56 (projection shortcuts where the shape changes). */
#include <string.h>

#include "nn/nn_internal.h"

static int layer_name(char *buffer, const char *unit, const char *suffix) {
    int written = snprintf(buffer, 80, "%s.%s", unit, suffix);
    return written > 0 && written < 80 ? PLAIT_OK : plait_fail("layer name %s.%s is too long", unit, suffix);
}

/* Appends a conv + batchnorm (+ ReLU) to a unit path, naming them unit.conv_name / unit.bn_name. */
static int conv_bn(plait_unit *u, bool shortcut, const char *conv_name, const char *bn_name, int out_channels,
                   int kernel, int stride, bool relu, plait_rng *rng) {
    char name[80];
    if (layer_name(name, u->name, conv_name) != PLAIT_OK ||
        nn_add_conv(u, shortcut, name, out_channels, kernel, stride, kernel / 2, 1, rng) != PLAIT_OK ||
        layer_name(name, u->name, bn_name) != PLAIT_OK || nn_add_batchnorm(u, shortcut, name) != PLAIT_OK)
        return PLAIT_ERROR;
    if (!relu) return PLAIT_OK;
    return layer_name(name, u->name, "relu") == PLAIT_OK ? nn_add_activation(u, shortcut, PLAIT_LAYER_RELU, name)
                                                           : PLAIT_ERROR;
}

int nn_resnet_stem(plait_model *m, int channels, bool imagenet, plait_rng *rng) {
    plait_unit *u = nn_model_add_unit(m, "stem");
    if (!u) return PLAIT_ERROR;
    int kernel = imagenet ? 7 : 3, stride = imagenet ? 2 : 1;
    if (nn_add_conv(u, false, "conv1", channels, kernel, stride, kernel / 2, 1, rng) != PLAIT_OK ||
        nn_add_batchnorm(u, false, "bn1") != PLAIT_OK ||
        nn_add_activation(u, false, PLAIT_LAYER_RELU, "relu") != PLAIT_OK)
        return PLAIT_ERROR;
    if (imagenet && nn_add_maxpool(u, "maxpool", 3, 2, 1) != PLAIT_OK) return PLAIT_ERROR;
    return nn_unit_finish(u);
}

static int downsample_if_needed(plait_unit *u, int out_channels, int stride, plait_rng *rng) {
    if (stride == 1 && u->in_shape.c == out_channels) return PLAIT_OK;
    return conv_bn(u, true, "downsample.0", "downsample.1", out_channels, 1, stride, false, rng);
}

int nn_basic_block(plait_model *m, const char *name, int planes, int stride, plait_rng *rng) {
    plait_unit *u = nn_model_add_unit(m, name);
    if (!u) return PLAIT_ERROR;
    u->residual = true;
    u->post_relu = true;
    if (conv_bn(u, false, "conv1", "bn1", planes, 3, stride, true, rng) != PLAIT_OK ||
        conv_bn(u, false, "conv2", "bn2", planes, 3, 1, false, rng) != PLAIT_OK ||
        downsample_if_needed(u, planes, stride, rng) != PLAIT_OK)
        return PLAIT_ERROR;
    return nn_unit_finish(u);
}

/* torchvision's v1.5 bottleneck: the stride sits in the 3x3 convolution. */
int nn_bottleneck(plait_model *m, const char *name, int planes, int stride, plait_rng *rng) {
    plait_unit *u = nn_model_add_unit(m, name);
    if (!u) return PLAIT_ERROR;
    u->residual = true;
    u->post_relu = true;
    if (conv_bn(u, false, "conv1", "bn1", planes, 1, 1, true, rng) != PLAIT_OK ||
        conv_bn(u, false, "conv2", "bn2", planes, 3, stride, true, rng) != PLAIT_OK ||
        conv_bn(u, false, "conv3", "bn3", 4 * planes, 1, 1, false, rng) != PLAIT_OK ||
        downsample_if_needed(u, 4 * planes, stride, rng) != PLAIT_OK)
        return PLAIT_ERROR;
    return nn_unit_finish(u);
}

int nn_classifier_head(plait_model *m, const char *linear_name, int classes, nn_linear_init init, plait_rng *rng) {
    plait_unit *u = nn_model_add_unit(m, "head");
    if (!u) return PLAIT_ERROR;
    if (nn_add_global_avgpool(u, "avgpool") != PLAIT_OK ||
        nn_add_linear(u, linear_name, classes, init, rng) != PLAIT_OK)
        return PLAIT_ERROR;
    return nn_unit_finish(u);
}

typedef struct resnet_spec {
    const char *name;
    bool bottleneck, imagenet_stem;
    int stages;
    int blocks[4];
    int widths[4];
} resnet_spec;

static const resnet_spec resnet_specs[] = {
    {"resnet18", false, true, 4, {2, 2, 2, 2}, {64, 128, 256, 512}},
    {"resnet34", false, true, 4, {3, 4, 6, 3}, {64, 128, 256, 512}},
    {"resnet50", true, true, 4, {3, 4, 6, 3}, {64, 128, 256, 512}},
    {"cifar_resnet18", false, false, 4, {2, 2, 2, 2}, {64, 128, 256, 512}},
    {"cifar_resnet34", false, false, 4, {3, 4, 6, 3}, {64, 128, 256, 512}},
    {"cifar_resnet50", true, false, 4, {3, 4, 6, 3}, {64, 128, 256, 512}},
    {"resnet20", false, false, 3, {3, 3, 3}, {16, 32, 64}},
    {"resnet56", false, false, 3, {9, 9, 9}, {16, 32, 64}},
};

int nn_build_resnet(plait_model *m, const char *name, plait_rng *rng) {
    const resnet_spec *spec = NULL;
    for (size_t i = 0; i < sizeof resnet_specs / sizeof resnet_specs[0]; i++)
        if (strcmp(resnet_specs[i].name, name) == 0) spec = &resnet_specs[i];
    if (!spec) return plait_fail("unknown resnet '%s'", name);
    if (nn_resnet_stem(m, spec->widths[0], spec->imagenet_stem, rng) != PLAIT_OK) return PLAIT_ERROR;
    for (int stage = 0; stage < spec->stages; stage++) {
        for (int block = 0; block < spec->blocks[stage]; block++) {
            char unit_name[32];
            snprintf(unit_name, sizeof unit_name, "layer%d.%d", stage + 1, block);
            int stride = stage > 0 && block == 0 ? 2 : 1;
            int rc = spec->bottleneck ? nn_bottleneck(m, unit_name, spec->widths[stage], stride, rng)
                                      : nn_basic_block(m, unit_name, spec->widths[stage], stride, rng);
            if (rc != PLAIT_OK) return PLAIT_ERROR;
        }
    }
    return nn_classifier_head(m, "fc", m->classes, NN_LINEAR_TORCH_DEFAULT, rng);
}
