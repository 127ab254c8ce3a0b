#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipe/pipe_internal.h"
#include "plait/dist.h"
#include "plait/pipe.h"
#include "plait/train.h"
#include "train/train_internal.h"

void plait_train_config_defaults(plait_train_config *c) {
    memset(c, 0, sizeof *c);
    c->model = "resnet20";
    c->dataset = "cifar10";
    c->epochs = 1;
    c->batch_size = 128;
    c->microbatches = 1;
    c->lr = (plait_lr_schedule){.kind = PLAIT_LR_COSINE, .base_lr = 0.1f, .step_size = 1, .gamma = 0.1f,
                                .pct_start = 0.3f, .div_factor = 25.0f, .final_div_factor = 1e4f};
    c->momentum = 0.9f;
    c->weight_decay = 5e-4f;
    c->nesterov = true;
    c->threads = 2;
    c->seed = 1;
    c->augment = true;
    c->shuffle = true;
    c->evaluate_each_epoch = true;
    c->pipeline_schedule = PLAIT_SCHEDULE_1F1B;
}

/* Mirrors each image left to right (NHWC): the second view of flip test-time augmentation. */
static void mirror_images(const plait_tensor *x, float *out) {
    int n = x->shape.n, h = x->shape.h, w = x->shape.w, c = x->shape.c;
    for (long row = 0; row < (long)n * h; row++)
        for (int col = 0; col < w; col++)
            memcpy(out + ((size_t)row * w + col) * c, x->data + ((size_t)row * w + (w - 1 - col)) * c,
                   sizeof(float) * (size_t)c);
}

static plait_eval_score mean_score(double loss_sum, long right, long seen) {
    return seen ? (plait_eval_score){(float)(loss_sum / seen), (float)right / (float)seen} : (plait_eval_score){0, 0};
}

int plait_evaluate_with_flip(plait_model *m, const plait_dataset *d, int batch_size, int limit,
                             plait_eval_score *single, plait_eval_score *flip) {
    int status = PLAIT_ERROR;
    plait_trainer *t = NULL;
    plait_loader *loader = NULL;
    plait_tensor images = {0}, mirrored = {0}, logits_sum = {0};
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)batch_size);
    if (!labels) {
        plait_fail("out of memory");
        goto done;
    }
    if (plait_trainer_create(m, &t) != PLAIT_OK) goto done;
    plait_loader_config lc = {.batch_size = batch_size, .shards = 1};
    if (plait_loader_create(d, &lc, &loader) != PLAIT_OK || plait_loader_start_epoch(loader, 0, 0) != PLAIT_OK)
        goto done;
    double loss_sum = 0, flip_loss_sum = 0;
    long seen = 0, right = 0, flip_right = 0;
    int got;
    while ((got = plait_loader_next(loader, &images, labels)) == 1) {
        int n = images.shape.n;
        if (limit > 0 && seen + n > limit) n = (int)(limit - seen);
        if (n <= 0) break;
        images.shape.n = n;
        const plait_tensor *logits;
        if (plait_trainer_predict(t, &images, &logits) != PLAIT_OK) goto done;
        int c = 0;
        loss_sum += (double)plait_softmax_cross_entropy(n, m->classes, logits->data, labels, 0.0f, NULL, &c) * n;
        right += c;
        if (flip) {
            size_t count = plait_shape_count(logits->shape);
            if (plait_tensor_reserve(&logits_sum, logits->shape) != PLAIT_OK ||
                plait_tensor_reserve(&mirrored, images.shape) != PLAIT_OK)
                goto done;
            memcpy(logits_sum.data, logits->data, sizeof(float) * count);
            mirror_images(&images, mirrored.data);
            if (plait_trainer_predict(t, &mirrored, &logits) != PLAIT_OK) goto done;
            for (size_t i = 0; i < count; i++) logits_sum.data[i] = 0.5f * (logits_sum.data[i] + logits->data[i]);
            c = 0;
            flip_loss_sum +=
                (double)plait_softmax_cross_entropy(n, m->classes, logits_sum.data, labels, 0.0f, NULL, &c) * n;
            flip_right += c;
        }
        seen += n;
    }
    if (got < 0) goto done;
    *single = mean_score(loss_sum, right, seen);
    if (flip) *flip = mean_score(flip_loss_sum, flip_right, seen);
    status = PLAIT_OK;
done:
    plait_trainer_free(t);
    plait_loader_free(loader);
    plait_tensor_free(&images);
    plait_tensor_free(&mirrored);
    plait_tensor_free(&logits_sum);
    free(labels);
    return status;
}

int plait_evaluate(plait_model *m, const plait_dataset *d, int batch_size, int limit, float *loss, float *accuracy) {
    plait_eval_score score;
    if (plait_evaluate_with_flip(m, d, batch_size, limit, &score, NULL) != PLAIT_OK) return PLAIT_ERROR;
    *loss = score.loss;
    *accuracy = score.accuracy;
    return PLAIT_OK;
}

static void format_duration(double seconds, char *out, size_t size) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
}

static int validate_config(const plait_train_config *c) {
    if (c->epochs < 1) return plait_fail("--epochs must be at least 1 (got %d)", c->epochs);
    if (c->batch_size < 1) return plait_fail("--batch-size must be at least 1 (got %d)", c->batch_size);
    if (c->microbatches < 1 || c->batch_size % c->microbatches != 0)
        return plait_fail("--microbatches (%d) must divide --batch-size (%d)", c->microbatches, c->batch_size);
    if (!(c->lr.base_lr > 0)) return plait_fail("--lr must be positive");
    if (!(c->lr.min_lr >= 0 && c->lr.min_lr < c->lr.base_lr))
        return plait_fail("--min-lr must be at least 0 and below --lr (got %g and %g)", (double)c->lr.min_lr,
                          (double)c->lr.base_lr);
    if (c->threads < 1) return plait_fail("--threads must be at least 1 (got %d)", c->threads);
    if (c->resume && !c->checkpoint_dir) return plait_fail("--resume needs --checkpoint-dir");
    if (c->label_smoothing < 0 || c->label_smoothing >= 1) return plait_fail("--label-smoothing must be in [0, 1)");
    if (c->cutout < 0) return plait_fail("--cutout must be at least 0 (got %d)", c->cutout);
    if (c->crop_off_epochs < 0 || c->crop_off_epochs >= c->epochs)
        return plait_fail("--crop-off-epochs must be in [0, %d] (got %d)", c->epochs - 1, c->crop_off_epochs);
    if (!(c->sam_rho >= 0 && isfinite(c->sam_rho))) return plait_fail("--sam-rho must be a finite value of at least 0");
    if (c->sam_epochs < 0 || c->sam_epochs > c->epochs)
        return plait_fail("--sam-epochs must be in [0, %d] (got %d)", c->epochs, c->sam_epochs);
    if (c->sam_rho > 0 && pipe_train_wants_executor(c))
        return plait_fail("--sam-rho trains in one process only, not under --parallel, --plan or several ranks");
    if (!(c->ema_decay >= 0 && c->ema_decay < 1)) return plait_fail("--ema must be in [0, 1)");
    if (c->ema_decay > 0 && pipe_train_wants_executor(c))
        return plait_fail("--ema trains in one process only, not under --parallel, --plan or several ranks");
    return PLAIT_OK;
}

static int compare_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Keeps a seeded random `limit` of the samples, in their original order: folders are sorted by
 * class, so the first N would hold only a few classes. */
int plait_dataset_keep_random(plait_dataset *d, int limit, uint64_t seed) {
    if (limit <= 0 || limit >= d->count) return PLAIT_OK;
    int *order = malloc(sizeof(int) * (size_t)d->count);
    if (!order) return plait_fail("out of memory");
    for (int i = 0; i < d->count; i++) order[i] = i;
    plait_rng rng;
    plait_rng_seed(&rng, plait_seed_mix(seed, 0x5b5e7, (uint64_t)limit));
    for (int i = 0; i < limit; i++) {
        int j = i + (int)plait_rng_below(&rng, (uint32_t)(d->count - i));
        int swap = order[i];
        order[i] = order[j];
        order[j] = swap;
    }
    qsort(order, (size_t)limit, sizeof(int), compare_int);
    size_t sample = (size_t)d->height * d->width * d->channels;
    for (int i = 0; i < limit; i++) { /* order[i] >= i, so moving forward never overwrites a kept sample */
        memmove(d->pixels + (size_t)i * sample, d->pixels + (size_t)order[i] * sample, sample);
        d->labels[i] = d->labels[order[i]];
    }
    d->count = limit;
    free(order);
    return PLAIT_OK;
}

static bool checkpoint_exists(const char *dir) {
    char **paths;
    int count;
    if (plait_checkpoint_find_parts(dir, &paths, &count) != PLAIT_OK) return false;
    plait_checkpoint_free_parts(paths, count);
    return true;
}

/* Saves the run's checkpoint: one file from one process; under a plan, the first replica of each
 * stage writes its part, and once all are written rank 0 removes parts of other layouts. */
static int save_checkpoint(plait_model *model, const char *dir, plait_executor *executor, const plait_plan *plan,
                           const plait_train_position *position) {
    if (!executor || plan->stage_count == 1) {
        int status = PLAIT_OK;
        if (plait_dist_rank() == 0) status = pipe_save_checkpoint(model, dir, -1, 0, model->unit_count, position);
        if (executor && plait_dist_size() > 1 && plait_dist_barrier(0) != PLAIT_OK) return PLAIT_ERROR;
        if (status == PLAIT_OK && plait_dist_rank() == 0) pipe_remove_stale_parts(dir, 0);
        return status;
    }
    int stage = plait_executor_stage(executor), status = PLAIT_OK;
    if (plait_executor_replica(executor) == 0)
        status = pipe_save_checkpoint(model, dir, stage, plan->stages[stage].first_unit,
                                      plan->stages[stage].last_unit, position);
    if (plait_dist_size() > 1 && plait_dist_barrier(0) != PLAIT_OK) return PLAIT_ERROR;
    if (status == PLAIT_OK && plait_dist_rank() == 0) pipe_remove_stale_parts(dir, plan->stage_count);
    return status;
}

int plait_train(const plait_train_config *config, plait_train_result *result) {
    plait_train_config effective = *config;
    plait_train_config *c = &effective;
    if (validate_config(c) != PLAIT_OK || plait_train_use_tuning_file() != PLAIT_OK) return PLAIT_ERROR;
    plait_set_threads(c->threads);
    memset(result, 0, sizeof *result);
    result->test_loss = result->test_accuracy = result->test_flip_accuracy = -1;
    result->ema_test_accuracy = result->ema_test_flip_accuracy = -1;

    int status = PLAIT_ERROR;
    plait_dataset train = {0}, test = {0};
    plait_model *model = NULL;
    plait_trainer *t = NULL;
    plait_weight_average average = {0};
    plait_executor *executor = NULL;
    plait_plan plan = {0};
    bool parallel = pipe_train_wants_executor(c);
    bool leader = plait_dist_rank() == 0; /* metrics, progress and evaluation */
    plait_loader *loader = NULL;
    plait_tensor images = {0};
    int32_t *labels = NULL;
    FILE *metrics = NULL;
    char checkpoint_path[4096] = "", average_path[4096] = "";

    if (plait_dataset_open(c->dataset, c->data_path, c->image_size, c->seed, &train, &test) != PLAIT_OK) goto done;
    if (plait_dataset_keep_random(&train, c->train_limit, c->seed) != PLAIT_OK ||
        plait_dataset_keep_random(&test, c->test_limit, c->seed + 1) != PLAIT_OK)
        goto done;
    if (train.count < c->batch_size)
        plait_fail("the training set has %d images, fewer than one batch of %d", train.count, c->batch_size);
    if (train.count < c->batch_size) goto done;
    plait_shape input = {1, train.height, train.width, train.channels};
    if (plait_model_create(c->model, input, train.classes, c->seed, &model) != PLAIT_OK) goto done;
    if (c->zero_init_residual) plait_model_zero_init_residual(model);
    if (plait_trainer_create(model, &t) != PLAIT_OK) goto done;
    if (parallel) {
        if (pipe_train_plan(c, model, &plan) != PLAIT_OK) goto done;
        if (leader && c->progress && plan.batch_size != c->batch_size)
            fprintf(stderr, "plan %s: batch size %d (not --batch-size %d)\n", c->plan_path, plan.batch_size,
                    c->batch_size);
        c->batch_size = plan.batch_size;
        c->microbatches = plan.micro_batches;
        if (train.count < c->batch_size) {
            plait_fail("the training set has %d images, fewer than one batch of %d", train.count, c->batch_size);
            goto done;
        }
        if (plait_executor_create(model, &plan, c->trace_path != NULL, &executor) != PLAIT_OK) goto done;
        if (c->progress && leader) {
            fprintf(stderr, "plan: %d stages, batch %d in %d micro-batches, %s:", plan.stage_count, plan.batch_size,
                    plan.micro_batches, plait_schedule_name(plan.schedule));
            for (int s = 0; s < plan.stage_count; s++)
                fprintf(stderr, " [units %d-%d on %d rank%s]", plan.stages[s].first_unit, plan.stages[s].last_unit - 1,
                        plan.stages[s].replica_count, plan.stages[s].replica_count > 1 ? "s" : "");
            fputc('\n', stderr);
        }
    }

    plait_train_position position = {0};
    if (c->checkpoint_dir) {
        if (mkdir(c->checkpoint_dir, 0755) != 0 && access(c->checkpoint_dir, W_OK) != 0) {
            plait_fail("cannot use checkpoint directory %s", c->checkpoint_dir);
            goto done;
        }
        snprintf(checkpoint_path, sizeof checkpoint_path, "%s/last.safetensors", c->checkpoint_dir);
        if (c->ema_decay > 0)
            snprintf(average_path, sizeof average_path, "%s/ema.safetensors", c->checkpoint_dir);
    }
    if (c->resume) {
        if (pipe_load_checkpoint(model, c->checkpoint_dir, &position) != PLAIT_OK) goto done;
    } else if (c->init_path) {
        if (plait_train_load_weights(model, c->init_path) != PLAIT_OK) goto done;
    }
    if (c->ema_decay > 0) {
        if (plait_weight_average_create(model, c->ema_decay, &average) != PLAIT_OK) goto done;
        if (c->resume) {
            if (access(average_path, R_OK) != 0) {
                plait_fail("--ema with --resume needs %s (was the run started without --ema?)", average_path);
                goto done;
            }
            if (plait_train_load_average(average.model, average_path, position.step) != PLAIT_OK) goto done;
        }
    }

    plait_loader_config lc = {.batch_size = c->batch_size,
                              .shuffle = c->shuffle,
                              .drop_last = true,
                              .augment = {.crop_padding = c->augment ? (train.height >= 64 ? 0 : 4) : 0,
                                          .flip = c->augment,
                                          .flip_alternate = c->flip_alternate,
                                          .cutout = c->cutout,
                                          .crop_until_epoch = c->crop_off_epochs > 0 ? c->epochs - c->crop_off_epochs : 0},
                              .seed = c->seed,
                              .shards = 1};
    if (plait_loader_create(&train, &lc, &loader) != PLAIT_OK) goto done;
    long per_epoch = plait_loader_batches_per_epoch(loader);
    long total_steps = per_epoch * c->epochs;
    if (c->max_steps > 0 && c->max_steps < total_steps) total_steps = c->max_steps;
    plait_lr_schedule schedule = c->lr;
    if (schedule.total_steps <= 0) schedule.total_steps = per_epoch * c->epochs;
    labels = malloc(sizeof(int32_t) * (size_t)c->batch_size);
    if (!labels) {
        plait_fail("out of memory");
        goto done;
    }

    const char *metrics_path = c->metrics_path;
    char default_metrics[4200];
    if (!metrics_path && c->checkpoint_dir) {
        snprintf(default_metrics, sizeof default_metrics, "%s/metrics.jsonl", c->checkpoint_dir);
        metrics_path = default_metrics;
    }
    if (leader && metrics_path && !(metrics = fopen(metrics_path, c->resume ? "a" : "w"))) {
        plait_fail("cannot write metrics file %s", metrics_path);
        goto done;
    }

    bool interactive = leader && c->progress && isatty(STDERR_FILENO);
    long trace_until = position.step + (c->trace_steps > 0 ? c->trace_steps : 20);
    double start = plait_now();
    long step = position.step, steps_this_run = 0;
    double images_this_run = 0;
    int epoch = position.epoch;
    long first_batch = position.batch;
    for (; epoch < c->epochs && step < total_steps; epoch++, first_batch = 0) {
        if (plait_loader_start_epoch(loader, epoch, (int)first_batch) != PLAIT_OK) goto done;
        double epoch_start = plait_now(), loss_sum = 0;
        long batch = first_batch, epoch_images = 0, epoch_right = 0, epoch_batches = 0;
        int got;
        while (step < total_steps && (got = plait_loader_next(loader, &images, labels)) == 1) {
            plait_step_options options = {.microbatches = c->microbatches,
                                           .lr = plait_lr_at(&schedule, step),
                                           .momentum = c->momentum,
                                           .weight_decay = c->weight_decay,
                                           .label_smoothing = c->label_smoothing,
                                           .nesterov = c->nesterov,
                                           .sam_rho = c->sam_epochs == 0 || epoch >= c->epochs - c->sam_epochs
                                                          ? c->sam_rho
                                                          : 0.0f};
            float lr = options.lr, loss;
            int right;
            if (executor) {
                if (step >= trace_until) plait_executor_trace_pause(executor);
                if (plait_executor_step(executor, &options, &images, labels, &loss, &right) != PLAIT_OK) {
                    if (plait_dist_size() > 1) plait_dist_abort(plait_last_error()); /* peers cannot go on */
                    goto done;
                }
            } else if (plait_trainer_step(t, &options, &images, labels, &loss, &right) != PLAIT_OK) {
                goto done;
            }
            if (!isfinite(loss)) {
                if (interactive) fputc('\n', stderr);
                plait_fail("loss became %f at epoch %d step %ld; stopped without saving (%s)", (double)loss,
                           epoch + 1, step + 1,
                           c->checkpoint_dir && checkpoint_exists(c->checkpoint_dir) ? "last good checkpoint kept"
                                                                                     : "no checkpoint written");
                goto done;
            }
            if (executor) {
                plait_executor_stats stats;
                plait_executor_stats_get(executor, &stats);
                result->allreduce_hidden_seconds += stats.mean_allreduce_hidden;
                result->allreduce_exposed_seconds += stats.mean_allreduce_exposed;
            }
            step++, batch++, steps_this_run++, epoch_batches++;
            if (average.model) plait_weight_average_update(&average, step);
            epoch_images += images.shape.n, epoch_right += right;
            images_this_run += images.shape.n;
            loss_sum += loss;
            result->last_loss = loss;
            double elapsed = plait_now() - start;
            double rate = images_this_run / elapsed;
            if (metrics && (step % 20 == 0 || step == total_steps)) {
                json_t *line = json_pack("{s:s, s:i, s:I, s:f, s:f, s:f, s:f}", "event", "train", "epoch", epoch + 1,
                                         "step", (json_int_t)step, "loss", (double)loss, "accuracy",
                                         (double)right / images.shape.n, "lr", (double)lr, "images_per_second", rate);
                if (executor) {
                    plait_executor_stats stats;
                    plait_executor_stats_get(executor, &stats);
                    json_object_set_new(line, "allreduce_hidden_seconds", json_real(stats.mean_allreduce_hidden));
                    json_object_set_new(line, "allreduce_exposed_seconds", json_real(stats.mean_allreduce_exposed));
                }
                json_dumpf(line, metrics, JSON_COMPACT | JSON_REAL_PRECISION(6));
                fputc('\n', metrics);
                fflush(metrics);
                json_decref(line);
            }
            if (interactive) {
                char left[32];
                format_duration(elapsed / steps_this_run * (double)(total_steps - step), left, sizeof left);
                fprintf(stderr, "\repoch %d/%d  step %ld/%ld  %.1f img/s  loss %.4f  acc %.3f  left %s   ", epoch + 1,
                        c->epochs, step, total_steps, rate, loss_sum / epoch_batches,
                        (double)epoch_right / epoch_images, left);
            }
        }
        if (got < 0) goto done;
        bool epoch_done = batch >= per_epoch;
        result->train_accuracy = epoch_images ? (float)epoch_right / epoch_images : 0;
        if (interactive) fputc('\n', stderr);
        if (epoch_done && c->evaluate_each_epoch && test.count > 0) {
            if (executor && plait_executor_gather_model(executor) != PLAIT_OK) goto done;
            plait_eval_score single, flip;
            if (leader) {
                if (plait_evaluate_with_flip(model, &test, 256, 0, &single, c->test_flip ? &flip : NULL) != PLAIT_OK)
                    goto done;
                result->test_loss = single.loss;
                result->test_accuracy = single.accuracy;
                if (c->test_flip) result->test_flip_accuracy = flip.accuracy;
            }
            if (average.model) {
                if (plait_evaluate_with_flip(average.model, &test, 256, 0, &single, c->test_flip ? &flip : NULL) !=
                    PLAIT_OK)
                    goto done;
                result->ema_test_accuracy = single.accuracy;
                if (c->test_flip) result->ema_test_flip_accuracy = flip.accuracy;
            }
        }
        if (c->progress && leader) {
            fprintf(stderr, "epoch %d/%d: train loss %.4f acc %.4f, %.1f img/s", epoch + 1, c->epochs,
                    epoch_batches ? loss_sum / epoch_batches : 0.0, (double)result->train_accuracy,
                    epoch_images / (plait_now() - epoch_start));
            if (epoch_done && result->test_accuracy >= 0)
                fprintf(stderr, ", test loss %.4f acc %.4f", (double)result->test_loss,
                        (double)result->test_accuracy);
            if (epoch_done && result->test_flip_accuracy >= 0)
                fprintf(stderr, " (with flip %.4f)", (double)result->test_flip_accuracy);
            if (epoch_done && result->ema_test_accuracy >= 0)
                fprintf(stderr, ", EMA acc %.4f", (double)result->ema_test_accuracy);
            if (epoch_done && result->ema_test_flip_accuracy >= 0)
                fprintf(stderr, " (with flip %.4f)", (double)result->ema_test_flip_accuracy);
            fputc('\n', stderr);
        }
        if (metrics && epoch_done) {
            json_t *line = json_pack("{s:s, s:i, s:I, s:f, s:f, s:f, s:f}", "event", "epoch", "epoch", epoch + 1,
                                     "step", (json_int_t)step, "train_loss",
                                     epoch_batches ? loss_sum / epoch_batches : 0.0, "train_accuracy",
                                     (double)result->train_accuracy, "test_loss", (double)result->test_loss,
                                     "test_accuracy", (double)result->test_accuracy);
            if (result->test_flip_accuracy >= 0)
                json_object_set_new(line, "test_flip_accuracy", json_real(result->test_flip_accuracy));
            if (result->ema_test_accuracy >= 0)
                json_object_set_new(line, "ema_test_accuracy", json_real(result->ema_test_accuracy));
            if (result->ema_test_flip_accuracy >= 0)
                json_object_set_new(line, "ema_test_flip_accuracy", json_real(result->ema_test_flip_accuracy));
            json_dumpf(line, metrics, JSON_COMPACT | JSON_REAL_PRECISION(6));
            fputc('\n', metrics);
            fflush(metrics);
            json_decref(line);
        }
        position = (plait_train_position){.epoch = epoch_done ? epoch + 1 : epoch,
                                          .batch = epoch_done ? 0 : batch,
                                          .step = step};
        /* The average first: a stop between the two files leaves it ahead of last.safetensors, which
         * --resume refuses rather than continuing from an inconsistent pair. */
        if (average_path[0] && plait_train_save_checkpoint(average.model, average_path, &position) != PLAIT_OK)
            goto done;
        if (checkpoint_path[0] && save_checkpoint(model, c->checkpoint_dir, executor, &plan, &position) != PLAIT_OK)
            goto done;
        if (epoch_done) result->epochs_done = epoch + 1;
        if (!epoch_done) break;
    }
    if (executor && c->trace_path && plait_executor_write_trace(executor, c->trace_path) != PLAIT_OK) goto done;
    result->steps = step;
    result->seconds = plait_now() - start;
    result->images_per_second = result->seconds > 0 ? images_this_run / result->seconds : 0;
    status = PLAIT_OK;
done:
    if (metrics) fclose(metrics);
    free(labels);
    plait_tensor_free(&images);
    plait_loader_free(loader);
    plait_executor_free(executor);
    plait_plan_free(&plan);
    plait_trainer_free(t);
    plait_weight_average_free(&average);
    plait_model_free(model);
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    return status;
}
