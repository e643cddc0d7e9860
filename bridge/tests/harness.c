/* harness.c: a C host for liblivestems.so, used by tests/bridge (pytest builds and runs it).
 *
 *   ls_harness stress  [--seconds S] [--block N] [--rate HZ] [--hold-ms MS] [--gap-ms MS]
 *       An "audio thread" calls livestems_process() at real-time pace (one block per block
 *       period, SCHED_FIFO when allowed) while another thread takes the Python GIL and holds
 *       it for --hold-ms at a time, --gap-ms apart, which stalls the Python worker. Prints
 *       JSON: the worst and percentile process() times (wall clock), and the engine's counters.
 *       The point of the C bridge: process() must not care who holds the GIL.
 *
 *   ls_harness file IN.f32 OUT.f32 [--block N] [--rate HZ] [--model M] [--param ID=V]...
 *       Runs a file (interleaved float32 stereo, raw) through the API in offline mode and
 *       writes every output (planar: output 0's frames, then output 1's, ...), T + latency
 *       frames each. Prints JSON with the latency and the output names.
 *
 *   ls_harness badinput [--model-dir DIR]
 *       Every bad input of the API, one case at a time; prints "PASS name" / "FAIL name: why"
 *       and exits non-zero if any case failed.
 */
#define _GNU_SOURCE
#include <Python.h> /* only for PyGILState_Ensure in the GIL-holding thread */

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "livestems.h"

#define MAX_OUT 64

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *arg_value(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return dflt;
}

static livestems_config_t make_config(double rate, uint32_t block, const char *model) {
    livestems_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.struct_size = sizeof cfg;
    cfg.api_version = LIVESTEMS_API_VERSION;
    cfg.model = model;
    cfg.sample_rate = rate;
    cfg.max_block = block;
    cfg.in_channels = 2;
    return cfg;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---- stress ----------------------------------------------------------------------------- */

static atomic_int g_stop;
static atomic_long g_holds;
static int g_hold_ms, g_gap_ms;

/* Holds the GIL the way a busy Python thread of the host (or a slow model) would: the
 * worker cannot run Python meanwhile. A C busy loop, so the hold is exactly as long as asked. */
static void *gil_holder(void *arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        PyGILState_STATE st = PyGILState_Ensure();
        int64_t until = now_ns() + (int64_t)g_hold_ms * 1000000LL;
        while (now_ns() < until) {
        }
        PyGILState_Release(st);
        atomic_fetch_add(&g_holds, 1);
        struct timespec gap = {g_gap_ms / 1000, (long)(g_gap_ms % 1000) * 1000000L};
        nanosleep(&gap, NULL);
    }
    return NULL;
}

typedef struct {
    livestems_t *h;
    uint32_t block, n_out;
    double rate;
    int64_t n_calls;
    int64_t *times_ns;
    int64_t *cpu_ns;      /* the audio thread's CPU time inside each call */
    long blocked_calls;   /* calls during which the thread blocked (voluntary switch) */
    long preempted_calls; /* calls during which the kernel preempted it (involuntary) */
    int errors;
    int fifo;
} audio_ctx;

static void *audio_thread(void *arg) {
    audio_ctx *a = arg;
    struct sched_param sp = {.sched_priority = 70};
    a->fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    /* buffers allocated and touched before the loop: no page faults inside it */
    float *in_buf = calloc(2 * a->block, sizeof(float));
    float *out_buf = calloc((size_t)a->n_out * a->block, sizeof(float));
    const float *in[2] = {in_buf, in_buf + a->block};
    float *out[MAX_OUT];
    for (uint32_t i = 0; i < a->n_out; i++) out[i] = out_buf + (size_t)i * a->block;
    double phase = 0.0;
    int64_t period_ns = (int64_t)llround(1e9 * a->block / a->rate);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint32_t rng = 12345;
    for (int64_t k = 0; k < a->n_calls; k++) {
        /* a sung-like tone in the centre plus noise on the sides: work for both stems */
        for (uint32_t i = 0; i < a->block; i++) {
            rng = rng * 1664525u + 1013904223u;
            float noise = ((int32_t)rng >> 8) * (1.0f / 8388608.0f) * 0.1f;
            float tone = 0.3f * (float)sin(phase);
            phase += 2.0 * M_PI * 220.0 / a->rate;
            in_buf[i] = tone + noise;
            in_buf[a->block + i] = tone - noise;
        }
        next.tv_nsec += period_ns;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        struct rusage ru0, ru1;
        struct timespec c0, c1;
        getrusage(RUSAGE_THREAD, &ru0);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        int64_t t0 = now_ns();
        int rc = livestems_process(a->h, in, 2, out, a->n_out, a->block);
        a->times_ns[k] = now_ns() - t0;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        getrusage(RUSAGE_THREAD, &ru1);
        a->cpu_ns[k] = (c1.tv_sec - c0.tv_sec) * 1000000000LL + (c1.tv_nsec - c0.tv_nsec);
        a->blocked_calls += ru1.ru_nvcsw != ru0.ru_nvcsw;
        a->preempted_calls += ru1.ru_nivcsw != ru0.ru_nivcsw;
        if (rc != LIVESTEMS_OK) a->errors++;
    }
    free(in_buf);
    free(out_buf);
    return NULL;
}

static int cmd_stress(int argc, char **argv) {
    double seconds = atof(arg_value(argc, argv, "--seconds", "3"));
    uint32_t block = (uint32_t)atoi(arg_value(argc, argv, "--block", "256"));
    double rate = atof(arg_value(argc, argv, "--rate", "44100"));
    g_hold_ms = atoi(arg_value(argc, argv, "--hold-ms", "50"));
    g_gap_ms = atoi(arg_value(argc, argv, "--gap-ms", "10"));
    const char *model = arg_value(argc, argv, "--model", NULL);
    int locked = mlockall(MCL_CURRENT | MCL_FUTURE) == 0;

    livestems_config_t cfg = make_config(rate, block, model);
    livestems_t *h = NULL;
    if (livestems_create(&cfg, &h) != LIVESTEMS_OK) {
        fprintf(stderr, "create failed: %s\n", livestems_last_error());
        return 1;
    }
    audio_ctx a = {.h = h, .block = block, .rate = rate};
    livestems_output_count(h, &a.n_out);
    a.n_calls = (int64_t)(seconds * rate / block);
    a.times_ns = calloc((size_t)a.n_calls, sizeof(int64_t));
    a.cpu_ns = calloc((size_t)a.n_calls, sizeof(int64_t));

    pthread_t holder, audio;
    if (g_hold_ms > 0) pthread_create(&holder, NULL, gil_holder, NULL);
    pthread_create(&audio, NULL, audio_thread, &a);
    pthread_join(audio, NULL);
    atomic_store(&g_stop, 1);
    if (g_hold_ms > 0) pthread_join(holder, NULL);

    livestems_stats_t st = {.struct_size = sizeof st};
    livestems_stats(h, &st);
    /* the first calls touch the library's pages for the first time: reported apart */
    int64_t first = a.times_ns[0];
    int64_t n = a.n_calls - 1;
    qsort(a.times_ns + 1, (size_t)n, sizeof(int64_t), cmp_i64);
    int64_t *t = a.times_ns + 1;
    qsort(a.cpu_ns + 1, (size_t)n, sizeof(int64_t), cmp_i64);
    int64_t *c = a.cpu_ns + 1;
    printf("{\"calls\": %lld, \"block\": %u, \"rate\": %g, \"sched_fifo\": %s, "
           "\"mlockall\": %s, \"gil_holds\": %ld, \"hold_ms\": %d, \"gap_ms\": %d, "
           "\"first_call_us\": %.3f, \"worst_us\": %.3f, \"p999_us\": %.3f, \"p99_us\": %.3f, "
           "\"median_us\": %.3f, \"errors\": %d, \"deadline_misses\": %llu, "
           "\"missed_frames\": %llu, \"hops_processed\": %llu, \"hops_skipped\": %llu, "
           "\"input_overflows\": %llu, \"latency_samples\": %u, \"worst_cpu_us\": %.3f, "
           "\"p99_cpu_us\": %.3f, \"blocked_calls\": %ld, \"preempted_calls\": %ld}\n",
           (long long)a.n_calls, block, rate, a.fifo ? "true" : "false",
           locked ? "true" : "false", atomic_load(&g_holds), g_hold_ms, g_gap_ms,
           first / 1e3, t[n - 1] / 1e3, t[(int64_t)(n * 0.999)] / 1e3, t[(int64_t)(n * 0.99)] / 1e3,
           t[n / 2] / 1e3, a.errors, (unsigned long long)st.deadline_misses,
           (unsigned long long)st.missed_frames, (unsigned long long)st.hops_processed,
           (unsigned long long)st.hops_skipped, (unsigned long long)st.input_overflows,
           st.latency_samples, c[n - 1] / 1e3, c[(int64_t)(n * 0.99)] / 1e3, a.blocked_calls,
           a.preempted_calls);
    livestems_destroy(h);
    free(a.times_ns);
    free(a.cpu_ns);
    return 0;
}

/* ---- file ------------------------------------------------------------------------------- */

static int cmd_file(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: ls_harness file IN.f32 OUT.f32 [options]\n");
        return 2;
    }
    const char *in_path = argv[2], *out_path = argv[3];
    uint32_t block = (uint32_t)atoi(arg_value(argc, argv, "--block", "256"));
    double rate = atof(arg_value(argc, argv, "--rate", "44100"));
    const char *model = arg_value(argc, argv, "--model", NULL);

    FILE *f = fopen(in_path, "rb");
    if (!f) {
        perror(in_path);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t total = (size_t)bytes / (2 * sizeof(float));
    float *x = malloc((size_t)bytes);
    if (fread(x, 1, (size_t)bytes, f) != (size_t)bytes) {
        perror("read");
        return 2;
    }
    fclose(f);

    livestems_config_t cfg = make_config(rate, block, model);
    cfg.flags = LIVESTEMS_FLAG_OFFLINE; /* wait for the model: every sample is the model's */
    livestems_t *h = NULL;
    if (livestems_create(&cfg, &h) != LIVESTEMS_OK) {
        fprintf(stderr, "create failed: %s\n", livestems_last_error());
        return 1;
    }
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--param")) continue;
        unsigned id;
        float v;
        if (sscanf(argv[i + 1], "%u=%f", &id, &v) != 2 ||
            livestems_set_param(h, id, v) != LIVESTEMS_OK) {
            fprintf(stderr, "bad --param %s: %s\n", argv[i + 1], livestems_last_error());
            return 2;
        }
    }
    uint32_t n_out, lat;
    livestems_output_count(h, &n_out);
    livestems_latency_samples(h, &lat);
    size_t frames = total + lat;
    float *y = calloc((size_t)n_out * frames, sizeof(float));
    float *inl = calloc(block, sizeof(float)), *inr = calloc(block, sizeof(float));
    const float *in[2] = {inl, inr};
    float *out[MAX_OUT];
    for (size_t a = 0; a < frames; a += block) {
        uint32_t n = (uint32_t)(frames - a < block ? frames - a : block);
        for (uint32_t i = 0; i < n; i++) {
            size_t j = a + i;
            inl[i] = j < total ? x[2 * j] : 0.0f;
            inr[i] = j < total ? x[2 * j + 1] : 0.0f;
        }
        for (uint32_t o = 0; o < n_out; o++) out[o] = y + (size_t)o * frames + a;
        if (livestems_process(h, in, 2, out, n_out, n) != LIVESTEMS_OK) {
            fprintf(stderr, "process failed: %s\n", livestems_last_error());
            return 1;
        }
    }
    f = fopen(out_path, "wb");
    fwrite(y, sizeof(float), (size_t)n_out * frames, f);
    fclose(f);
    livestems_stats_t st = {.struct_size = sizeof st};
    livestems_stats(h, &st);
    printf("{\"latency_samples\": %u, \"frames\": %zu, \"deadline_misses\": %llu, "
           "\"hops_processed\": %llu, \"outputs\": [",
           lat, frames, (unsigned long long)st.deadline_misses,
           (unsigned long long)st.hops_processed);
    for (uint32_t o = 0; o < n_out; o++) {
        char name[64];
        livestems_output_name(h, o, name, sizeof name);
        printf("%s\"%s\"", o ? ", " : "", name);
    }
    printf("]}\n");
    livestems_destroy(h);
    return 0;
}

/* ---- bad input -------------------------------------------------------------------------- */

static int g_failed;

static void check(const char *name, int ok, const char *detail) {
    if (ok) printf("PASS %s\n", name);
    else {
        printf("FAIL %s: %s (last error: %s)\n", name, detail, livestems_last_error());
        g_failed++;
    }
    fflush(stdout);
}

static int all_zero(float *const *out, uint32_t n_out, uint32_t n) {
    for (uint32_t o = 0; o < n_out; o++)
        for (uint32_t i = 0; i < n; i++)
            if (out[o][i] != 0.0f) return 0;
    return 1;
}

static void fill(float *const *out, uint32_t n_out, uint32_t n, float v) {
    for (uint32_t o = 0; o < n_out; o++)
        for (uint32_t i = 0; i < n; i++) out[o][i] = v;
}

static int cmd_badinput(int argc, char **argv) {
    const char *dir = arg_value(argc, argv, "--model-dir", "/tmp");
    enum { B = 256 };
    static float inbuf[2][2 * B], outbuf[MAX_OUT][2 * B];
    const float *in[2] = {inbuf[0], inbuf[1]};
    float *out[MAX_OUT];
    for (int i = 0; i < MAX_OUT; i++) out[i] = outbuf[i];
    char msg[256];
    int rc;

    /* 1. process before create has finished: first, while Python is still starting */
    livestems_config_t cfg = make_config(44100, B, NULL);
    livestems_t *h = NULL;
    rc = livestems_create_async(&cfg, &h);
    check("create_async returns a handle at once", rc == LIVESTEMS_OK && h, "no handle");
    fill(out, 8, B, 1.0f);
    rc = livestems_process(h, in, 2, out, 8, B);
    check("process before create finished -> NOT_READY, silent outputs",
          rc == LIVESTEMS_ERR_NOT_READY && all_zero(out, 8, B), "wrong code or outputs");
    uint32_t lat = 0;
    rc = livestems_latency_samples(h, &lat);
    check("latency before create finished -> NOT_READY", rc == LIVESTEMS_ERR_NOT_READY,
          "wrong code");
    rc = livestems_wait_ready(h, 60000);
    check("wait_ready -> OK", rc == LIVESTEMS_OK, "not ready");
    uint32_t n_out = 0;
    livestems_output_count(h, &n_out);
    check("8 outputs for the default model (2 stems + mix + karaoke, stereo)", n_out == 8,
          "wrong output count");

    /* 2. NULL and freed handles */
    rc = livestems_process(NULL, in, 2, out, n_out, B);
    check("process(NULL handle) -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    livestems_t *fake = (livestems_t *)(void *)inbuf; /* a pointer that is not a handle */
    fill(out, n_out, B, 1.0f);
    rc = livestems_process(fake, in, 2, out, n_out, B);
    check("process(random pointer) -> BAD_HANDLE, silent outputs",
          rc == LIVESTEMS_ERR_BAD_HANDLE && all_zero(out, n_out, B), "wrong code");
    float v;
    check("get_param(NULL handle) -> ERR_NULL",
          livestems_get_param(NULL, 0, &v) == LIVESTEMS_ERR_NULL, "wrong code");

    /* 3. nframes above max_block, wrong channel counts, NULL buffers */
    fill(out, n_out, 2 * B, 1.0f);
    rc = livestems_process(h, in, 2, out, n_out, B + 1);
    check("nframes > max_block -> BLOCK_TOO_LARGE, silent outputs",
          rc == LIVESTEMS_ERR_BLOCK_TOO_LARGE && all_zero(out, n_out, B + 1), "wrong code");
    rc = livestems_process(h, in, 1, out, n_out, B);
    check("1 input channel for a 2-channel handle -> ERR_CHANNELS",
          rc == LIVESTEMS_ERR_CHANNELS, "wrong code");
    rc = livestems_process(h, in, 2, out, n_out - 2, B);
    check("too few outputs -> ERR_CHANNELS", rc == LIVESTEMS_ERR_CHANNELS, "wrong code");
    rc = livestems_process(h, NULL, 2, out, n_out, B);
    check("in == NULL -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    const float *in_null[2] = {inbuf[0], NULL};
    rc = livestems_process(h, in_null, 2, out, n_out, B);
    check("in[1] == NULL -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    rc = livestems_process(h, in, 2, NULL, n_out, B);
    check("out == NULL -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    float *some_null[MAX_OUT];
    memcpy(some_null, out, sizeof some_null);
    some_null[0] = NULL; /* allowed: the host does not want vocals_L */
    rc = livestems_process(h, in, 2, some_null, n_out, B);
    check("an out[i] == NULL is skipped -> OK", rc == LIVESTEMS_OK, "wrong code");
    rc = livestems_process(h, in, 2, out, n_out, 0);
    check("nframes == 0 -> OK", rc == LIVESTEMS_OK, "wrong code");

    /* 4. parameters */
    rc = livestems_set_param(h, 999, 0.0f);
    check("set_param(unknown id 999) -> ERR_PARAM", rc == LIVESTEMS_ERR_PARAM, "wrong code");
    rc = livestems_set_param(h, 3, 0.0f);
    check("set_param(id 3: a hole in the id space) -> ERR_PARAM", rc == LIVESTEMS_ERR_PARAM,
          "wrong code");
    rc = livestems_get_param(h, 8, &v);
    check("get_param(id of a third stem on a 2-stem model) -> ERR_PARAM",
          rc == LIVESTEMS_ERR_PARAM, "wrong code");
    rc = livestems_set_param(h, LIVESTEMS_PARAM_STEM_GAIN_DB(0), NAN);
    check("set_param(NaN) -> ERR_PARAM", rc == LIVESTEMS_ERR_PARAM, "wrong code");
    rc = livestems_set_param(h, LIVESTEMS_PARAM_STEM_GAIN_DB(0), 99.0f);
    livestems_get_param(h, LIVESTEMS_PARAM_STEM_GAIN_DB(0), &v);
    check("gain is clamped to +12 dB", rc == LIVESTEMS_OK && v == 12.0f, "not clamped");
    rc = livestems_get_param(h, 0, NULL);
    check("get_param(value NULL) -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    livestems_param_info_t info;
    rc = livestems_param_info(h, 6, &info);
    check("param_info(index == count) -> ERR_PARAM", rc == LIVESTEMS_ERR_PARAM, "wrong code");
    rc = livestems_param_info(h, 4, &info);
    snprintf(msg, sizeof msg, "got id %u name '%s'", info.id, info.name);
    check("param_info(4) is 'accompaniment mute', id 5",
          rc == LIVESTEMS_OK && info.id == 5 && !strcmp(info.name, "accompaniment mute"), msg);
    const uint8_t cc_mute[3] = {0xB1, 20, 127}; /* channel 2 = stem 1: mute on */
    rc = livestems_midi(h, cc_mute, 3);
    livestems_get_param(h, LIVESTEMS_PARAM_STEM_MUTE(1), &v);
    check("MIDI CC20 on channel 2 mutes stem 1", rc == LIVESTEMS_OK && v == 1.0f, "not muted");
    rc = livestems_midi(h, NULL, 3);
    check("midi(NULL) -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    char name[8];
    rc = livestems_output_name(h, 99, name, sizeof name);
    check("output_name(99) -> ERR_CHANNELS", rc == LIVESTEMS_ERR_CHANNELS, "wrong code");
    rc = livestems_stats(h, NULL);
    check("stats(NULL) -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");

    /* 5. destroy, then use */
    rc = livestems_destroy(h);
    check("destroy -> OK", rc == LIVESTEMS_OK, "wrong code");
    fill(out, n_out, B, 1.0f);
    rc = livestems_process(h, in, 2, out, n_out, B);
    check("process(destroyed handle) -> BAD_HANDLE, silent outputs",
          rc == LIVESTEMS_ERR_BAD_HANDLE && all_zero(out, n_out, B), "wrong code");
    rc = livestems_set_param(h, 0, 0.0f);
    check("set_param(destroyed handle) -> BAD_HANDLE", rc == LIVESTEMS_ERR_BAD_HANDLE,
          "wrong code");
    rc = livestems_destroy(h);
    check("destroy twice -> BAD_HANDLE", rc == LIVESTEMS_ERR_BAD_HANDLE, "wrong code");

    /* 6. bad configurations */
    h = (livestems_t *)(void *)inbuf;
    rc = livestems_create(NULL, &h);
    check("create(NULL config) -> ERR_NULL, *out = NULL", rc == LIVESTEMS_ERR_NULL && !h,
          "wrong code");
    cfg = make_config(44100, B, NULL);
    rc = livestems_create(&cfg, NULL);
    check("create(out NULL) -> ERR_NULL", rc == LIVESTEMS_ERR_NULL, "wrong code");
    cfg.struct_size = 4;
    rc = livestems_create(&cfg, &h);
    check("create(struct_size unset) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG, "wrong code");
    cfg = make_config(44100, B, NULL);
    cfg.api_version = 999;
    rc = livestems_create(&cfg, &h);
    check("create(api_version 999) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG, "wrong code");
    cfg = make_config(0, B, NULL);
    rc = livestems_create(&cfg, &h);
    check("create(sample_rate 0) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG, "wrong code");
    cfg = make_config(44100.5, B, NULL);
    rc = livestems_create(&cfg, &h);
    check("create(sample_rate 44100.5) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG, "wrong code");
    cfg = make_config(44100, 0, NULL);
    rc = livestems_create(&cfg, &h);
    check("create(max_block 0) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG, "wrong code");
    cfg = make_config(44100, B, NULL);
    cfg.in_channels = 1;
    rc = livestems_create(&cfg, &h);
    check("create(1 channel for a stereo model) -> ERR_CHANNELS, *out = NULL",
          rc == LIVESTEMS_ERR_CHANNELS && !h && strstr(livestems_last_error(), "2 input"),
          "wrong code or message");
    cfg = make_config(44100, B, NULL);
    cfg.resample_quality = "BEST";
    rc = livestems_create(&cfg, &h);
    check("create(resample_quality BEST) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG,
          "wrong code");
    cfg = make_config(44100, B, NULL);
    cfg.safety_ms = -1.0;
    rc = livestems_create(&cfg, &h);
    check("create(safety_ms -1) -> ERR_CONFIG naming safety_ms",
          rc == LIVESTEMS_ERR_CONFIG && !h && strstr(livestems_last_error(), "safety_ms"),
          "wrong code or message");
    cfg.safety_ms = NAN;
    rc = livestems_create(&cfg, &h);
    check("create(safety_ms NaN) -> ERR_CONFIG", rc == LIVESTEMS_ERR_CONFIG && !h,
          "wrong code");

    /* 7. missing and broken model files: an error string, no crash, nothing on stderr */
    char path[1024];
    snprintf(path, sizeof path, "%s/no-such-model.json", dir);
    cfg = make_config(44100, B, path);
    rc = livestems_create(&cfg, &h);
    check("create(missing model file) -> ERR_MODEL naming the file",
          rc == LIVESTEMS_ERR_MODEL && !h && strstr(livestems_last_error(), "no-such-model"),
          "wrong code or message");
    snprintf(path, sizeof path, "%s/broken.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"class\": \"CenterCancel\", \"args\": {", f); /* truncated JSON */
    fclose(f);
    cfg = make_config(44100, B, path);
    rc = livestems_create(&cfg, &h);
    check("create(broken model file) -> ERR_MODEL", rc == LIVESTEMS_ERR_MODEL && !h,
          "wrong code");
    snprintf(path, sizeof path, "%s/wrongargs.json", dir);
    f = fopen(path, "w");
    fputs("{\"class\": \"CenterCancel\", \"args\": {\"no_such_arg\": 1}}", f);
    fclose(f);
    cfg = make_config(44100, B, path);
    rc = livestems_create(&cfg, &h);
    check("create(model file with bad arguments) -> ERR_MODEL", rc == LIVESTEMS_ERR_MODEL,
          "wrong code");
    cfg = make_config(44100, B, "no-such-builtin");
    rc = livestems_create_async(&cfg, &h);
    int rc2 = livestems_wait_ready(h, 60000);
    fill(out, n_out, B, 1.0f);
    int rc3 = livestems_process(h, in, 2, out, n_out, B);
    check("async create of a missing model: wait_ready -> ERR_MODEL, process -> FAILED",
          rc == LIVESTEMS_OK && rc2 == LIVESTEMS_ERR_MODEL && rc3 == LIVESTEMS_ERR_FAILED &&
              all_zero(out, n_out, B),
          "wrong codes");
    check("destroying a failed handle -> OK", livestems_destroy(h) == LIVESTEMS_OK,
          "wrong code");

    /* 8. a good handle still works after all that */
    cfg = make_config(48000, B, NULL);
    rc = livestems_create(&cfg, &h);
    uint32_t lat48 = 0;
    livestems_latency_samples(h, &lat48);
    rc2 = livestems_process(h, in, 2, out, n_out, B);
    snprintf(msg, sizeof msg, "create %d, process %d, latency %u", rc, rc2, lat48);
    check("a 48 kHz handle (resampling) creates and processes", rc == 0 && rc2 == 0 && lat48 > 0,
          msg);
    livestems_destroy(h);
    /* the safety margin adds exactly its length to the latency (10 ms = 480 at 48 kHz); a
       host compiled before the field existed (smaller struct_size) gets none */
    cfg = make_config(48000, B, NULL);
    cfg.safety_ms = 10.0;
    rc = livestems_create(&cfg, &h);
    uint32_t lat_safe = 0;
    livestems_latency_samples(h, &lat_safe);
    livestems_destroy(h);
    cfg = make_config(48000, B, NULL);
    cfg.safety_ms = 10.0;
    cfg.struct_size = offsetof(livestems_config_t, safety_ms);
    rc2 = livestems_create(&cfg, &h);
    uint32_t lat_old = 0;
    livestems_latency_samples(h, &lat_old);
    livestems_destroy(h);
    snprintf(msg, sizeof msg, "create %d/%d, latency %u with 10 ms, %u old struct, %u none",
             rc, rc2, lat_safe, lat_old, lat48);
    check("safety_ms 10 adds 480 samples at 48 kHz; an older struct_size adds none",
          rc == 0 && rc2 == 0 && lat_safe == lat48 + 480 && lat_old == lat48, msg);
    printf("%d failed\n", g_failed);
    return g_failed ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ls_harness stress|file|badinput [options]\n");
        return 2;
    }
    if (!strcmp(argv[1], "stress")) return cmd_stress(argc, argv);
    if (!strcmp(argv[1], "file")) return cmd_file(argc, argv);
    if (!strcmp(argv[1], "badinput")) return cmd_badinput(argc, argv);
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
