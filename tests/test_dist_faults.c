/* A rank that dies or falls silent ends the whole job, non-zero, with a clear message, fast. This
 * test launches itself under mpirun as a "victim" program (so the expected failure is the child
 * job's, not this test's) and checks the exit status, the message on stderr and the time taken. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist/dist_internal.h"
#include "plait/dist.h"
#include "testing.h"

static const char *self_path;

/* ---- The victim: runs under mpirun on 2 ranks. -------------------------------------------------- */

static int victim(const char *scenario) {
    if (plait_dist_init(NULL, NULL) != PLAIT_OK || plait_dist_size() != 2) {
        fprintf(stderr, "victim: %s\n", plait_last_error());
        return 2;
    }
    int rank = plait_dist_rank();
    if (strstr(scenario, "in-all-reduce")) {
        static float grad[4096];
        float *grads[1] = {grad};
        size_t counts[1] = {4096};
        plait_grad_sync *sync = NULL;
        if (plait_grad_sync_create(MPI_COMM_WORLD, 1, grads, counts, NULL, &sync) != PLAIT_OK) return 2;
        if (rank == 1 && strcmp(scenario, "slow-in-all-reduce") == 0) {
            usleep(2500000); /* longer than the deadline, but still beating */
        } else if (rank == 1) { /* rank 0 is reducing by now; rank 1 never joins */
            usleep(300000);
            if (strcmp(scenario, "die-in-all-reduce") == 0) _exit(3);
            raise(SIGSTOP); /* frozen: alive to mpirun, silent to its peers */
        }
        plait_grad_sync_mark_ready(sync, 0);
        plait_grad_sync_wait_all(sync, NULL);
        plait_grad_sync_free(sync);
        if (rank == 0 && strcmp(scenario, "slow-in-all-reduce") == 0) usleep(2500000); /* and late to finish */
    } else if (strcmp(scenario, "frozen-in-blocking-call") == 0) {
        if (rank == 1) {
            usleep(300000);
            raise(SIGSTOP);
        }
        static const int peers[2] = {0, 1};
        int watch = dist_watch_begin(peers, 2, plait_dist_timeout(), "in a watched blocking receive");
        float value;
        MPI_Recv(&value, 1, MPI_FLOAT, 1, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        dist_watch_end(watch);
    } else { /* die-in-receive */
        float buffer[16];
        plait_dist_transfer t = {0};
        if (rank == 1) {
            usleep(300000);
            _exit(3);
        }
        if (plait_dist_post_recv(&t, PLAIT_DIST_ACTIVATION, 5, 1, buffer, 16) != PLAIT_OK) return 2;
        plait_dist_wait(&t);
    }
    fprintf(stderr, "victim rank %d: the wait returned\n", rank);
    plait_dist_finalize();
    fflush(NULL);
    _exit(0); /* no exit-time leak check: Open MPI's unloaded components leave allocations behind */
}

/* ---- The test: launches victims and judges how they ended. -------------------------------------- */

typedef struct outcome {
    int exit_status; /* -1 if mpirun did not exit normally */
    double seconds;
    char output[8192];
} outcome;

static outcome launch(const char *scenario, const char *mpirun_options) {
    outcome result = {.exit_status = -1};
    char log[600], command[2048];
    snprintf(log, sizeof log, "%s/%s.log", testing_temp_dir(), scenario);
    snprintf(command, sizeof command,
             "mpirun --allow-run-as-root --oversubscribe %s -np 2 '%s' victim %s > '%s' 2>&1 < /dev/null",
             mpirun_options, self_path, scenario, log);
    double start = plait_now();
    int status = system(command);
    result.seconds = plait_now() - start;
    if (status != -1 && WIFEXITED(status)) result.exit_status = WEXITSTATUS(status);
    FILE *f = fopen(log, "r");
    if (f) {
        size_t n = fread(result.output, 1, sizeof result.output - 1, f);
        result.output[n] = 0;
        fclose(f);
    }
    fprintf(stderr, "  %s: exit %d after %.1f s\n", scenario, result.exit_status, result.seconds);
    return result;
}

/* Open MPI's default: mpirun ends the job as soon as one process exits abnormally. */
static void death_in_all_reduce_ends_job(void) {
    outcome o = launch("die-in-all-reduce", "-x PLAIT_DIST_TIMEOUT=20");
    CHECK(o.exit_status != 0 && o.exit_status != -1);
    CHECKF(o.seconds < 15, "took %.1f s", o.seconds);
    CHECKF(strstr(o.output, "non-zero") != NULL, "%s", o.output);
    CHECK(strstr(o.output, "the wait returned") == NULL);
}

static void death_in_receive_ends_job(void) {
    outcome o = launch("die-in-receive", "-x PLAIT_DIST_TIMEOUT=20");
    CHECK(o.exit_status != 0 && o.exit_status != -1);
    CHECKF(o.seconds < 15, "took %.1f s", o.seconds);
    CHECKF(strstr(o.output, "non-zero") != NULL, "%s", o.output);
    CHECK(strstr(o.output, "the wait returned") == NULL);
}

/* The watchdog ended the job: non-zero, after the 3 s deadline but well within 15 s, with `message`. */
static void expect_watchdog_abort(const char *scenario, const char *options, const char *message) {
    outcome o = launch(scenario, options);
    CHECK(o.exit_status != 0 && o.exit_status != -1);
    CHECKF(o.seconds > 2.9 && o.seconds < 15, "took %.1f s", o.seconds);
    CHECKF(strstr(o.output, message) != NULL, "%s", o.output);
}

/* Without mpirun's help (abort on non-zero status switched off, as other launchers may behave), the
 * survivor would wait forever; the watchdog ends it after the deadline. */
static void watchdog_catches_death_mpirun_ignores(void) {
    expect_watchdog_abort("die-in-receive", "--mca orte_abort_on_non_zero_status 0 -x PLAIT_DIST_TIMEOUT=3",
                          "plait: error: rank 0: no message from rank 1 for 3 s while receiving the activation of "
                          "micro-batch 5 (did it die?)");
}

/* A frozen peer (stopped: alive to mpirun, but it sends nothing, heartbeats included) is caught the
 * same way, here inside a stream thread's all-reduce. */
static void watchdog_catches_frozen_peer(void) {
    expect_watchdog_abort("frozen-in-all-reduce", "-x PLAIT_DIST_TIMEOUT=3",
                          "plait: error: rank 0: no message from rank 1 for 3 s while all-reducing gradient bucket 0");
}

/* A thread blocked inside MPI cannot poll; the heartbeat thread watches it for it (the gradient
 * streams' blocking all-reduce). */
static void watchdog_catches_frozen_peer_in_blocking_call(void) {
    expect_watchdog_abort("frozen-in-blocking-call", "-x PLAIT_DIST_TIMEOUT=3",
                          "plait: error: rank 0: no message from rank 1 for 3 s while in a watched blocking receive "
                          "(did it die?)");
}

/* A slow peer keeps beating: waiting for it longer than the deadline is fine, in an all-reduce (rank 0
 * waits for rank 1) and in plait_dist_finalize (rank 1 waits for rank 0). */
static void watchdog_spares_slow_peer(void) {
    outcome o = launch("slow-in-all-reduce", "-x PLAIT_DIST_TIMEOUT=2");
    CHECKF(o.exit_status == 0, "%s", o.output);
    CHECK(o.seconds > 4.9);
    CHECK(strstr(o.output, "victim rank 0: the wait returned") != NULL);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "victim") == 0) return victim(argv[2]);
    self_path = argv[0];
    if (system("mpirun --version > /dev/null 2>&1") != 0) {
        fprintf(stderr, "mpirun not found on PATH\n");
        return 1;
    }
    testing_run("death_in_all_reduce_ends_job", death_in_all_reduce_ends_job);
    testing_run("death_in_receive_ends_job", death_in_receive_ends_job);
    testing_run("watchdog_catches_death_mpirun_ignores", watchdog_catches_death_mpirun_ignores);
    testing_run("watchdog_catches_frozen_peer", watchdog_catches_frozen_peer);
    testing_run("watchdog_catches_frozen_peer_in_blocking_call", watchdog_catches_frozen_peer_in_blocking_call);
    testing_run("watchdog_spares_slow_peer", watchdog_spares_slow_peer);
    return testing_finish();
}
