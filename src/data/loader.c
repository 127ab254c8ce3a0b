#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

/* Batches prepared ahead of the consumer: it copies a batch out, then the thread may refill the slot,
 * so the thread runs up to LOADER_SLOTS batches ahead while training works on the last one. */
enum { LOADER_SLOTS = 3 };

typedef struct loader_slot {
    float *images;
    int32_t *labels;
    int count;
} loader_slot;

struct plait_loader {
    const plait_dataset *data;
    plait_loader_config config;
    int batches;
    int *order; /* the epoch's sample order */
    float normalized[3][256];
    loader_slot slots[LOADER_SLOTS];

    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t thread;
    bool thread_running, stop, started;
    int epoch;
    int filled;     /* batches [.., filled) are ready (guarded by lock) */
    int taken;      /* the consumer's next batch (guarded by lock) */
};

static uint64_t order_stream(const plait_loader *l, int epoch) {
    return plait_seed_mix(l->config.seed, (uint64_t)(int64_t)epoch, UINT64_MAX); /* samples use 0.. */
}

/* Global positions of this shard's samples in batch b: b * batch_size + shard + k * shards. */
static int shard_sample_count(const plait_loader *l, int batch) {
    int begin = batch * l->config.batch_size;
    int end = begin + l->config.batch_size;
    if (end > l->data->count) end = l->data->count;
    int first = begin + l->config.shard;
    return first < end ? (end - first + l->config.shards - 1) / l->config.shards : 0;
}

/* Random crop after zero padding, then horizontal flip (torchvision's order), then normalization, then
 * cutout (its square may reach past the border, so that corners are cut as often as the middle). */
static void prepare_sample(const plait_loader *l, int index, float *out) {
    const plait_dataset *d = l->data;
    int height = d->height, width = d->width, channels = d->channels;
    const plait_augment *a = &l->config.augment;
    bool plain = a->crop_until_epoch > 0 && l->epoch >= a->crop_until_epoch;
    int padding = plain ? 0 : a->crop_padding;
    plait_rng rng;
    plait_rng_seed(&rng, plait_seed_mix(l->config.seed, (uint64_t)(int64_t)l->epoch, (uint64_t)index));
    int shift_y = 0, shift_x = 0;
    bool flip = false;
    if (padding > 0) {
        shift_y = (int)plait_rng_below(&rng, (uint32_t)(2 * padding + 1)) - padding;
        shift_x = (int)plait_rng_below(&rng, (uint32_t)(2 * padding + 1)) - padding;
    }
    if (l->config.augment.flip) flip = plait_rng_below(&rng, 2) == 1; /* drawn either way: crops stay the same */
    if (l->config.augment.flip && l->config.augment.flip_alternate) {
        plait_rng first;
        plait_rng_seed(&first, plait_seed_mix(l->config.seed, 0xf11b, (uint64_t)index));
        flip = (plait_rng_below(&first, 2) == 1) != ((l->epoch & 1) == 1);
    }
    const uint8_t *image = d->pixels + (size_t)index * (size_t)height * (size_t)width * (size_t)channels;
    for (int y = 0; y < height; y++) {
        int source_y = y + shift_y;
        float *row = out + (size_t)y * (size_t)width * (size_t)channels;
        for (int x = 0; x < width; x++) {
            int source_x = (flip ? width - 1 - x : x) + shift_x;
            bool inside = source_y >= 0 && source_y < height && source_x >= 0 && source_x < width;
            const uint8_t *pixel = image + ((size_t)source_y * (size_t)width + (size_t)source_x) * (size_t)channels;
            for (int c = 0; c < channels; c++) row[x * channels + c] = l->normalized[c][inside ? pixel[c] : 0];
        }
    }
    int side = plain ? 0 : a->cutout;
    if (side > 0) {
        int top = (int)plait_rng_below(&rng, (uint32_t)height) - side / 2;
        int left = (int)plait_rng_below(&rng, (uint32_t)width) - side / 2;
        for (int y = top > 0 ? top : 0; y < top + side && y < height; y++)
            for (int x = left > 0 ? left : 0; x < left + side && x < width; x++) {
                float *cut = out + ((size_t)y * (size_t)width + (size_t)x) * (size_t)channels;
                for (int c = 0; c < channels; c++) cut[c] = 0;
            }
    }
}

static void prepare_batch(plait_loader *l, int batch, loader_slot *slot) {
    const plait_dataset *d = l->data;
    size_t sample_floats = (size_t)d->height * (size_t)d->width * (size_t)d->channels;
    int count = shard_sample_count(l, batch);
    for (int k = 0; k < count; k++) {
        int position = batch * l->config.batch_size + l->config.shard + k * l->config.shards;
        int index = l->order[position];
        prepare_sample(l, index, slot->images + (size_t)k * sample_floats);
        slot->labels[k] = d->labels[index];
    }
    slot->count = count;
}

static void *loader_thread(void *argument) {
    plait_loader *l = argument;
    pthread_mutex_lock(&l->lock);
    int batch = l->filled;
    while (batch < l->batches) {
        while (!l->stop && batch - l->taken >= LOADER_SLOTS) pthread_cond_wait(&l->changed, &l->lock);
        if (l->stop) break;
        pthread_mutex_unlock(&l->lock);
        /* The slot is ours: the consumer reads it only after `filled` passes it. */
        prepare_batch(l, batch, &l->slots[batch % LOADER_SLOTS]);
        pthread_mutex_lock(&l->lock);
        l->filled = ++batch;
        pthread_cond_broadcast(&l->changed);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static void loader_stop_thread(plait_loader *l) {
    if (!l->thread_running) return;
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    l->thread_running = false;
    l->stop = false;
}

int plait_loader_create(const plait_dataset *d, const plait_loader_config *config, plait_loader **out) {
    if (!d || !config || !out) return plait_fail("loader: missing data set, configuration or output");
    if (d->count <= 0 || !d->pixels || !d->labels) return plait_fail("loader: data set '%s' is empty", d->name);
    if (d->channels < 1 || d->channels > 3)
        return plait_fail("loader: data set '%s' has %d channels; 1 to 3 are supported", d->name, d->channels);
    const plait_loader_config *c = config;
    if (c->batch_size < 1) return plait_fail("loader: batch size %d must be at least 1", c->batch_size);
    if (c->shards < 1 || c->shard < 0 || c->shard >= c->shards)
        return plait_fail("loader: shard %d of %d does not exist", c->shard, c->shards);
    if (c->batch_size % c->shards != 0)
        return plait_fail("loader: batch size %d does not divide into %d shards", c->batch_size, c->shards);
    if (c->augment.crop_padding < 0 || c->augment.crop_padding > d->height || c->augment.crop_padding > d->width)
        return plait_fail("loader: crop padding %d must be in [0, %d]", c->augment.crop_padding,
                          d->height < d->width ? d->height : d->width);
    if (c->augment.crop_until_epoch < 0)
        return plait_fail("loader: crop_until_epoch %d must be at least 0", c->augment.crop_until_epoch);
    if (c->augment.cutout < 0 || c->augment.cutout > d->height || c->augment.cutout > d->width)
        return plait_fail("loader: cutout %d must be in [0, %d]", c->augment.cutout,
                          d->height < d->width ? d->height : d->width);
    for (int ch = 0; ch < d->channels; ch++)
        if (!(d->std[ch] > 0.0f))
            return plait_fail("loader: data set '%s' has std %g in channel %d", d->name, d->std[ch], ch);

    plait_loader *l = calloc(1, sizeof *l);
    if (!l) return plait_fail("out of memory creating a loader");
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->changed, NULL);
    l->data = d;
    l->config = *c;
    int full = d->count / c->batch_size, remainder = d->count % c->batch_size;
    /* A last partial batch too small to give every shard a sample is dropped, so no replica gets none. */
    l->batches = full + (!c->drop_last && remainder >= c->shards ? 1 : 0);
    if (l->batches == 0) {
        plait_loader_free(l);
        return plait_fail("loader: %d samples make no batch of %d (drop_last)", d->count, c->batch_size);
    }
    l->order = malloc((size_t)d->count * sizeof *l->order);
    int per_shard = c->batch_size / c->shards;
    size_t sample_floats = (size_t)d->height * (size_t)d->width * (size_t)d->channels;
    bool ok = l->order != NULL;
    for (int s = 0; s < LOADER_SLOTS && ok; s++) {
        l->slots[s].images = plait_alloc((size_t)per_shard * sample_floats * sizeof(float));
        l->slots[s].labels = plait_alloc((size_t)per_shard * sizeof(int32_t));
        ok = l->slots[s].images && l->slots[s].labels;
    }
    if (!ok) {
        plait_loader_free(l);
        return plait_fail("out of memory creating a loader for batches of %d", c->batch_size);
    }
    for (int ch = 0; ch < d->channels; ch++)
        for (int v = 0; v < 256; v++) l->normalized[ch][v] = ((float)v / 255.0f - d->mean[ch]) / d->std[ch];
    *out = l;
    return PLAIT_OK;
}

void plait_loader_free(plait_loader *l) {
    if (!l) return;
    loader_stop_thread(l);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->changed);
    for (int s = 0; s < LOADER_SLOTS; s++) {
        plait_free(l->slots[s].images);
        plait_free(l->slots[s].labels);
    }
    free(l->order);
    free(l);
}

int plait_loader_batches_per_epoch(const plait_loader *l) { return l->batches; }

int plait_loader_start_epoch(plait_loader *l, int epoch, int first_batch) {
    if (first_batch < 0 || first_batch > l->batches)
        return plait_fail("loader: first batch %d is not in [0, %d]", first_batch, l->batches);
    loader_stop_thread(l);
    int count = l->data->count;
    for (int i = 0; i < count; i++) l->order[i] = i;
    if (l->config.shuffle) {
        plait_rng rng;
        plait_rng_seed(&rng, order_stream(l, epoch));
        for (int i = count - 1; i > 0; i--) {
            int j = (int)plait_rng_below(&rng, (uint32_t)(i + 1));
            int t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    l->epoch = epoch;
    l->filled = l->taken = first_batch;
    l->started = true;
    if (first_batch == l->batches) return PLAIT_OK;
    int error = pthread_create(&l->thread, NULL, loader_thread, l);
    if (error != 0) {
        l->started = false;
        return plait_fail("loader: cannot start its thread: %s", strerror(error));
    }
    l->thread_running = true;
    return PLAIT_OK;
}

int plait_loader_next(plait_loader *l, plait_tensor *images, int32_t *labels) {
    if (!l->started) return plait_fail("loader: plait_loader_next called before plait_loader_start_epoch");
    pthread_mutex_lock(&l->lock);
    int batch = l->taken;
    if (batch >= l->batches) {
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    while (l->filled <= batch) pthread_cond_wait(&l->changed, &l->lock);
    pthread_mutex_unlock(&l->lock);
    const plait_dataset *d = l->data;
    const loader_slot *slot = &l->slots[batch % LOADER_SLOTS];
    plait_shape shape = {slot->count, d->height, d->width, d->channels};
    int status = plait_tensor_reserve(images, shape);
    if (status == PLAIT_OK) {
        memcpy(images->data, slot->images, plait_shape_count(shape) * sizeof(float));
        memcpy(labels, slot->labels, (size_t)slot->count * sizeof(int32_t));
    }
    pthread_mutex_lock(&l->lock);
    l->taken = batch + 1; /* on failure the batch is lost; the caller is out of memory anyway */
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    return status == PLAIT_OK ? 1 : PLAIT_ERROR;
}
