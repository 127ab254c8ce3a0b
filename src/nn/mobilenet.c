/* MobileNetV2 (width 1.0) with torchvision's module names. The classifier's dropout is left out:
 * it is the identity at evaluation, and training here runs without it. */
#include <string.h>

#include "nn/nn_internal.h"

/* conv + batchnorm (+ ReLU6) named prefix.0, prefix.1, prefix.2 (torchvision's Conv2dNormActivation). */
static int conv_bn_relu6(plait_unit *u, const char *prefix, int out_channels, int kernel, int stride, int groups,
                         plait_rng *rng) {
    char name[80];
    snprintf(name, sizeof name, "%s.0", prefix);
    if (nn_add_conv(u, false, name, out_channels, kernel, stride, kernel / 2, groups, rng) != PLAIT_OK)
        return PLAIT_ERROR;
    snprintf(name, sizeof name, "%s.1", prefix);
    if (nn_add_batchnorm(u, false, name) != PLAIT_OK) return PLAIT_ERROR;
    snprintf(name, sizeof name, "%s.2", prefix);
    return nn_add_activation(u, false, PLAIT_LAYER_RELU6, name);
}

int nn_inverted_residual(plait_model *m, const char *name, int out_channels, int stride, int expand_ratio,
                         plait_rng *rng) {
    plait_unit *u = nn_model_add_unit(m, name);
    if (!u) return PLAIT_ERROR;
    int in_channels = u->in_shape.c, hidden = in_channels * expand_ratio, index = 0;
    u->residual = stride == 1 && in_channels == out_channels;
    char prefix[80];
    if (expand_ratio != 1) {
        snprintf(prefix, sizeof prefix, "%s.conv.%d", name, index++);
        if (conv_bn_relu6(u, prefix, hidden, 1, 1, 1, rng) != PLAIT_OK) return PLAIT_ERROR;
    }
    snprintf(prefix, sizeof prefix, "%s.conv.%d", name, index++);
    if (conv_bn_relu6(u, prefix, hidden, 3, stride, hidden, rng) != PLAIT_OK) return PLAIT_ERROR;
    snprintf(prefix, sizeof prefix, "%s.conv.%d", name, index++);
    if (nn_add_conv(u, false, prefix, out_channels, 1, 1, 0, 1, rng) != PLAIT_OK) return PLAIT_ERROR;
    snprintf(prefix, sizeof prefix, "%s.conv.%d", name, index++);
    if (nn_add_batchnorm(u, false, prefix) != PLAIT_OK) return PLAIT_ERROR;
    return nn_unit_finish(u);
}

int nn_build_mobilenetv2(plait_model *m, plait_rng *rng) {
    /* expansion t, output channels c, repeats n, first stride s (torchvision's table) */
    static const int settings[7][4] = {{1, 16, 1, 1},  {6, 24, 2, 2},  {6, 32, 3, 2},  {6, 64, 4, 2},
                                       {6, 96, 3, 1},  {6, 160, 3, 2}, {6, 320, 1, 1}};
    plait_unit *stem = nn_model_add_unit(m, "features.0");
    if (!stem || conv_bn_relu6(stem, "features.0", 32, 3, 2, 1, rng) != PLAIT_OK || nn_unit_finish(stem) != PLAIT_OK)
        return PLAIT_ERROR;
    int feature = 1;
    for (int i = 0; i < 7; i++) {
        for (int repeat = 0; repeat < settings[i][2]; repeat++) {
            char name[32];
            snprintf(name, sizeof name, "features.%d", feature++);
            int stride = repeat == 0 ? settings[i][3] : 1;
            if (nn_inverted_residual(m, name, settings[i][1], stride, settings[i][0], rng) != PLAIT_OK)
                return PLAIT_ERROR;
        }
    }
    char name[32];
    snprintf(name, sizeof name, "features.%d", feature);
    plait_unit *last = nn_model_add_unit(m, name);
    if (!last || conv_bn_relu6(last, name, 1280, 1, 1, 1, rng) != PLAIT_OK || nn_unit_finish(last) != PLAIT_OK)
        return PLAIT_ERROR;
    return nn_classifier_head(m, "classifier.1", m->classes, NN_LINEAR_NORMAL_SMALL, rng);
}
