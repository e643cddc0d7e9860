/* fuzz_capi.c: a libFuzzer harness for the public C API of liblivestems (include/livestems.h).
 *
 * Each fuzz input is decoded into a sequence of up to 48 API calls: process() with odd frame
 * counts (0, max_block, max_block + 1, up to 3 x LS_MAX_BLOCK), wrong channel counts, NULL
 * buffer arrays and NULL channel pointers, samples that are NaN / Inf / huge; set_param /
 * get_param with random ids and values (NaN, Inf, FLT_MAX, denormals); MIDI messages of any
 * size; the geometry, name, param_info and stats queries with small or NULL buffers and odd
 * struct sizes; set_offline; wait_ready; create / create_async with garbage configurations
 * and model names; destroy, and every call again on destroyed, NULL and random handles; and
 * a stalled worker (the fuzzer holds the GIL while pushing more audio than the input ring
 * holds, so the input overflows), followed by anything, offline mode included.
 *
 * Creating an engine starts the embedded CPython and builds a model (milliseconds to tens of
 * milliseconds), so one engine (the DSP model "center", 44.1 kHz, max_block 256, stereo) is
 * created once in LLVMFuzzerInitialize and most calls go to it; no input destroys it. Each
 * input may also create a few engines of its own (at most LS_FUZZ_PY_CREATES configurations
 * per input reach Python; configurations that the C side refuses are unlimited and cheap),
 * all destroyed again at the end of the input.
 *
 * Besides "no crash, no sanitizer report", the harness checks what the header promises and
 * traps (a crash libFuzzer saves) when a promise is broken:
 *   - every status is LIVESTEMS_OK or one of the documented negative codes, and on an error
 *     livestems_last_error() is a non-empty string;
 *   - create/create_async leave *out NULL on failure; a configuration the C side must refuse
 *     is refused with the documented code (an independent re-statement of those checks);
 *   - process() on error zeroes every non-NULL output, and on success writes every non-NULL
 *     output; with only finite samples in [-1, 1] ever pushed into a handle, its outputs are
 *     finite;
 *   - set_param clamps (gain to -120..+12 dB, switches to 0 or 1) and get_param reads it back;
 *   - names are NUL-terminated inside the caller's buffer; stats() writes only the prefix of
 *     the caller's struct_size (the buffers are heap blocks of exactly the size the call is
 *     given, so AddressSanitizer sees any write or read past them).
 *
 * Build and run (bridge/Makefile target `fuzz`; tests/reliability/test_fuzz_capi.py):
 *     make -C bridge fuzz
 *     bridge/build/fuzz_capi -detect_leaks=0 -max_total_time=600 CORPUS_DIR bridge/fuzz/corpus
 * Replay one input, printing every call and its status:
 *     FUZZ_CAPI_TRACE=1 bridge/build/fuzz_capi crash-<sha1>
 * Leak detection is off (-detect_leaks=0, and detect_leaks=0 in __asan_default_options below):
 * the embedded CPython keeps its interpreter, modules and interned objects alive until exit on
 * purpose (the library never finalises Python), so LeakSanitizer would report thousands of
 * "leaks" that are not ours. The harness frees what it allocates itself.
 */
#include <Python.h> /* only to hold the GIL in op_stall, as a stalled worker */

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "livestems.h"

#define LS_FUZZ_MAX_STEPS 48     /* API calls decoded from one input */
#define LS_FUZZ_PY_CREATES 2     /* creations per input that reach Python (slow) */
#define LS_FUZZ_MAX_LOCAL 6      /* handles one input may create */
#define LS_FUZZ_MAX_FRAMES 49152 /* 3 x LS_MAX_BLOCK: above every max_block */
#define LS_FUZZ_MAX_PTRS 64      /* entries of the in/out pointer arrays we pass */
#define LS_FUZZ_SENTINEL 0x7fc0deadu /* a quiet-NaN pattern pre-filled into outputs */

/* the library's limits (ls_core.c), restated for the expected-code oracle of create */
#define LIB_MAX_BLOCK 16384
#define LIB_MAX_CHANNELS 8
#define LIB_MODEL_MAX 2048 /* strlen(model) must be below this */
#define LIB_QUALITY_MAX 16

#define FUZZ_ASSERT(cond, ...)                                                               \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_capi: broken API promise at %s:%d: ", __FILE__, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fprintf(stderr, " (last error: %s)\n", livestems_last_error());                  \
            __builtin_trap();                                                                \
        }                                                                                    \
    } while (0)

/* LeakSanitizer off by default (also for a fuzzer run by hand, where ASAN_OPTIONS is not set):
 * the embedded CPython is never finalised, so its interpreter state would be reported as
 * leaks; worse, LSan's stop-the-world pass at exit, with the Python worker threads running,
 * hung or crashed ("Tracer caught signal 11") in our runs. -detect_leaks=0 on libFuzzer's
 * command line only turns off its per-input check; this turns off the one at exit too. */
__attribute__((visibility("default"), used)) const char *__asan_default_options(void) {
    return "detect_leaks=0";
}
__attribute__((visibility("default"), used)) const char *__ubsan_default_options(void) {
    return "print_stacktrace=1:halt_on_error=1";
}

/* ---- reading the fuzz input ------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n;
} src_t;

static uint8_t u8(src_t *s) {
    if (!s->n) return 0;
    s->n--;
    return *s->p++;
}
/* little-endian; one read per statement (the order of operands in an expression is unspecified) */
static uint16_t u16(src_t *s) {
    uint16_t lo = u8(s);
    return (uint16_t)(lo | (uint16_t)u8(s) << 8);
}
static uint32_t u32(src_t *s) {
    uint32_t lo = u16(s);
    return lo | (uint32_t)u16(s) << 16;
}
static uint64_t u64(src_t *s) {
    uint64_t lo = u32(s);
    return lo | (uint64_t)u32(s) << 32;
}

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float fuzz_float(src_t *s) {
    static const float special[] = {0.0f, -0.0f, 0.5f, 1.0f, -1.0f, 0.49999997f, -120.0f,
                                    -121.0f, 12.0f, 12.000001f, 1e30f, -1e30f, FLT_MAX,
                                    -FLT_MAX, FLT_MIN, 1e-45f, INFINITY, -INFINITY, NAN, -NAN};
    uint8_t k = u8(s);
    if (k < 160) return special[k % (sizeof special / sizeof special[0])];
    return bits_f(u32(s)); /* any bit pattern, signalling NaNs included */
}

static double fuzz_rate(src_t *s) {
    static const double rates[] = {44100, 48000, 22050, 96000, 8000, 1000, 768000, 999.999,
                                   768000.5, 44100.5, 0, -44100, 1e300, NAN, INFINITY, 11025};
    uint8_t k = u8(s);
    if (k < 200) return rates[k % (sizeof rates / sizeof rates[0])];
    uint64_t b = u64(s);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

/* libFuzzer's -timeout is a process-wide SIGALRM whose handler does nothing unless it runs on
 * the fuzzing thread; a signal delivered to one of the engine's threads is lost, and a hung
 * input is never reported. Threads inherit the signal mask of the thread that starts them,
 * so SIGALRM is blocked around every create (the loader thread, the Python worker) and
 * only the fuzzing thread receives it. */
static void alarm_blocked(int on) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    pthread_sigmask(on ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/* ---- state --------------------------------------------------------------------------- */

static livestems_config_t base_config(void) {
    livestems_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.struct_size = sizeof cfg;
    cfg.api_version = LIVESTEMS_API_VERSION;
    cfg.model = "center";
    cfg.sample_rate = 44100;
    cfg.max_block = 256;
    cfg.in_channels = 2;
    return cfg;
}

typedef struct {
    livestems_t *h;
    int live;        /* 0 once destroyed (the pointer is kept: use-after-destroy is fuzzed) */
    int clean;       /* only finite samples in [-1, 1] were ever pushed into it */
    int offline;     /* process() waits for the worker: never call it holding the GIL */
    uint32_t max_block;
    int py_expect;   /* async: what wait_ready must answer (as op_create's py_expect) */
} slot_t;

static livestems_t *g_engine;    /* created once; no input destroys it (at_exit does) */
static uint32_t g_outputs, g_stems, g_latency;
static int g_clean = 1;          /* sticky: once dirty, the finiteness oracle is off for it */
static int g_offline;
static int g_trace;              /* FUZZ_CAPI_TRACE=1: print every call and its status */
static char g_dir[256];          /* scratch folder with model files */
static char g_model_path[16][512];
static unsigned char g_not_a_handle[256]; /* a valid address that is not a handle */

enum { M_MISSING, M_BROKEN, M_WRONGARGS, M_BADHOP, M_DIR, M_PICKLE, M_TEXT, M_GOOD, M_COUNT };

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        abort();
    }
    fputs(text, f);
    fclose(f);
}

/* at exit: stop the shared engine's worker thread before the process tears down the
 * libraries that thread runs in, then remove the scratch folder */
static void at_exit(void) {
    if (g_engine) livestems_destroy(g_engine);
    g_engine = NULL;
    static const char *files[] = {"broken.json", "wrongargs.json", "badhop.json", "evil.pt",
                                  "notjson.txt", "good.json"};
    char p[600];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/dir.json", g_dir);
    rmdir(p);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/lsfuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(at_exit);
    static const char *names[M_COUNT] = {"missing.json", "broken.json", "wrongargs.json",
                                         "badhop.json", "dir.json", "evil.pt", "notjson.txt",
                                         "good.json"};
    for (int i = 0; i < M_COUNT; i++)
        snprintf(g_model_path[i], sizeof g_model_path[i], "%s/%s", g_dir, names[i]);
    write_file(g_model_path[M_BROKEN], "{\"class\": \"CenterCancel\", \"args\": {");
    write_file(g_model_path[M_WRONGARGS], "{\"class\": \"CenterCancel\", \"args\": {\"x\": 1}}");
    write_file(g_model_path[M_BADHOP], "{\"class\": \"CenterCancel\", \"args\": {\"hop\": 300}}");
    write_file(g_model_path[M_PICKLE], "\x80\x02}q\x00.");
    write_file(g_model_path[M_TEXT], "not a model\n");
    /* a valid model of another geometry than the default: hop 128, 1024-point FFT */
    write_file(g_model_path[M_GOOD], "{\"class\": \"CenterCancel\", \"args\": "
                                     "{\"n_fft\": 1024, \"hop\": 128, \"synthesis_len\": 256}}");
    mkdir(g_model_path[M_DIR], 0700);

    const char *trace = getenv("FUZZ_CAPI_TRACE");
    g_trace = trace && *trace && *trace != '0';
    alarm_blocked(1);
    livestems_config_t cfg = base_config();
    /* base_config() names "center", the DSP model: cheap to build and to run under the
     * sanitizers, whatever the library's default model is */
    if (livestems_create(&cfg, &g_engine) != LIVESTEMS_OK) {
        fprintf(stderr, "fuzz_capi: cannot create the shared engine: %s\n",
                livestems_last_error());
        abort();
    }
    if (livestems_output_count(g_engine, &g_outputs) || livestems_stem_count(g_engine, &g_stems) ||
        livestems_latency_samples(g_engine, &g_latency)) {
        fprintf(stderr, "fuzz_capi: geometry queries failed: %s\n", livestems_last_error());
        abort();
    }
    /* A model named by path imports the model-file machinery (torch) once, which takes
     * seconds: do it here, not inside the first input that names a file. */
    livestems_t *h = NULL;
    cfg.model = g_model_path[M_MISSING];
    int rc = livestems_create(&cfg, &h);
    if (rc != LIVESTEMS_ERR_MODEL || h) {
        fprintf(stderr, "fuzz_capi: a missing model gave %d: %s\n", rc, livestems_last_error());
        abort();
    }
    alarm_blocked(0);
    fprintf(stderr, "fuzz_capi: shared engine ready: %u outputs, %u stems, latency %u\n",
            g_outputs, g_stems, g_latency);
    return 0;
}

/* ---- checks common to every call ----------------------------------------------------- */

static int check_rc(int rc, const char *call) {
    if (g_trace) fprintf(stderr, "  %s -> %d %s\n", call, rc, rc ? livestems_last_error() : "");
    FUZZ_ASSERT(rc <= 0 && rc >= LIVESTEMS_ERR_TOO_MANY, "%s returned %d", call, rc);
    const char *e = livestems_last_error();
    FUZZ_ASSERT(e != NULL, "%s: last_error() is NULL", call);
    if (rc != LIVESTEMS_OK) FUZZ_ASSERT(strlen(e) > 0, "%s failed (%d) with no message", call, rc);
    return rc;
}

/* which handle a call gets: mostly the shared engine, else a local one (live or destroyed),
 * NULL, a pointer to memory that is not a handle, or any integer */
static livestems_t *pick_handle(src_t *s, slot_t *slots, int n, slot_t **which) {
    uint8_t k = u8(s);
    *which = NULL;
    switch (k % 10) {
    case 0: return NULL;
    case 1: return (livestems_t *)(void *)g_not_a_handle;
    case 2: { /* any integer: never dereferenced, the table is checked first */
        livestems_t *h = (livestems_t *)(uintptr_t)u64(s);
        /* but not a live handle's address (libFuzzer learns the values the handle table is
         * compared with): calls through it would bypass the state this harness tracks */
        for (int i = 0; i < n; i++)
            if (h == slots[i].h) return (livestems_t *)(void *)g_not_a_handle;
        return h == g_engine ? (livestems_t *)(void *)g_not_a_handle : h;
    }
    case 3: case 4:
        if (n) {
            *which = &slots[(k / 10) % n];
            return (*which)->h;
        }
        /* fall through */
    default: return g_engine;
    }
}

static int *clean_flag(livestems_t *h, slot_t *which) {
    if (which) return &which->clean;
    return h == g_engine ? &g_clean : NULL;
}

/* ---- process ------------------------------------------------------------------------- */

static void fill_input(src_t *s, float *x, uint32_t n, int *clean) {
    uint8_t mode = u8(s) % 6;
    float a = fuzz_float(s);
    for (uint32_t i = 0; i < n; i++) {
        float v;
        switch (mode) {
        case 0: v = 0.0f; break;
        case 1: v = 0.5f * sinf(0.05f * (float)i); break;
        case 2: v = a; break; /* a constant, possibly NaN / Inf / huge */
        case 3: v = (i & 1) ? a : -a; break;
        case 4: v = (float)(int8_t)(i * 37u + (uint32_t)f_bits(a)) / 128.0f; break;
        default: v = i < 64 ? fuzz_float(s) : 0.25f; break;
        }
        /* never the sentinel's NaN payload, so an output holding it was not written */
        if (isnan(v) && ((f_bits(v) ^ LS_FUZZ_SENTINEL) & 0x003fffffu) == 0) v = NAN;
        if (!(fabsf(v) <= 1.0f)) *clean = 0;
        x[i] = v;
    }
}

static void op_process(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint8_t k = u8(s);
    uint32_t nframes;
    switch (k % 8) {
    case 0: nframes = 0; break;
    case 1: nframes = 256; break;                 /* the shared engine's max_block */
    case 2: nframes = 257; break;
    case 3: nframes = 1 + u8(s); break;
    case 4: nframes = u16(s) % (LS_FUZZ_MAX_FRAMES + 1); break;
    case 5: nframes = 1 + u16(s) % 1024; break;
    default: nframes = 64 << (u8(s) % 3); break; /* 64, 128, 256 */
    }
    uint8_t shape = u8(s);
    uint32_t n_in = 2, n_out = g_outputs;
    if (shape & 1) n_in = u8(s) % 12;            /* wrong channel counts, 0 included */
    if (shape & 2) n_out = u8(s) % (LS_FUZZ_MAX_PTRS + 1);
    int in_null = (shape & 0x1c) == 0x1c, out_null = (shape & 0xe0) == 0xe0;
    if (in_null && (shape & 0x20)) n_in = u32(s); /* any count with a NULL array */
    if (out_null && (shape & 0x04)) n_out = u32(s);

    static const float *in[LS_FUZZ_MAX_PTRS];
    static float *out[LS_FUZZ_MAX_PTRS];
    size_t bytes = (size_t)(nframes ? nframes : 1) * sizeof(float);
    uint8_t null_mask = u8(s); /* a few NULL channel pointers, in and out */
    int clean = 1;
    uint32_t nin_ptrs = in_null ? 0 : (n_in < LS_FUZZ_MAX_PTRS ? n_in : LS_FUZZ_MAX_PTRS);
    uint32_t nout_ptrs = out_null ? 0 : (n_out < LS_FUZZ_MAX_PTRS ? n_out : LS_FUZZ_MAX_PTRS);
    for (uint32_t i = 0; i < nin_ptrs; i++) {
        if ((null_mask & 0x0f) == (i & 0x0f) + 1 && (null_mask & 0x10)) {
            in[i] = NULL;
            continue;
        }
        float *x = malloc(bytes);
        fill_input(s, x, nframes, &clean);
        in[i] = x;
    }
    for (uint32_t i = 0; i < nout_ptrs; i++) {
        if (((null_mask >> 5) + i) % 5 == 0 && (null_mask & 0x80)) {
            out[i] = NULL; /* allowed: the host skips this output */
            continue;
        }
        out[i] = malloc(bytes);
        for (uint32_t j = 0; j < nframes; j++) out[i][j] = bits_f(LS_FUZZ_SENTINEL);
    }
    int *cf = clean_flag(h, which);
    int rc = check_rc(livestems_process(h, in_null ? NULL : in, n_in, out_null ? NULL : out,
                                        n_out, nframes),
                      "livestems_process");
    if (rc == LIVESTEMS_OK && cf && !clean) *cf = 0; /* these samples reached the engine */
    if (!out_null) {
        for (uint32_t i = 0; i < nout_ptrs; i++) {
            if (!out[i]) continue;
            for (uint32_t j = 0; j < nframes; j++) {
                uint32_t b = f_bits(out[i][j]);
                if (rc != LIVESTEMS_OK)
                    FUZZ_ASSERT(b == 0, "process failed (%d) but output %u[%u] is not zero", rc,
                                i, j);
                else {
                    FUZZ_ASSERT(b != LS_FUZZ_SENTINEL, "process OK but output %u[%u] unwritten",
                                i, j);
                    if (cf && *cf)
                        FUZZ_ASSERT(isfinite(out[i][j]),
                                    "non-finite output %u[%u] from finite input in [-1, 1]", i,
                                    j);
                }
            }
        }
    }
    /* what must have failed, and how */
    if (h == g_engine) {
        if (nframes > 256) FUZZ_ASSERT(rc == LIVESTEMS_ERR_BLOCK_TOO_LARGE, "rc %d", rc);
        else if (n_out != g_outputs || n_in != 2) FUZZ_ASSERT(rc != LIVESTEMS_OK, "accepted");
    }
    if (!h) FUZZ_ASSERT(rc == LIVESTEMS_ERR_NULL, "NULL handle gave %d", rc);
    for (uint32_t i = 0; i < nin_ptrs; i++) free((void *)in[i]);
    for (uint32_t i = 0; i < nout_ptrs; i++) free(out[i]);
}

/* Input frames the worker has not consumed yet (the in ring, and input dropped on overflow
 * that the worker still has to skip through), from the counters of stats(). */
static double backlog_frames(const livestems_stats_t *st) {
    if (!st->model_rate) return 0;
    double consumed = (double)(st->hops_processed + st->hops_skipped) * st->hop *
                      st->sample_rate / st->model_rate;
    return (double)st->frames_processed - consumed;
}

/* A stalled worker: hold the GIL (the worker needs it for every hop; process() never takes
 * it) while pushing 5 s of audio, more than the input ring holds (2 s, rounded up to a power
 * of two), so the input overflows; then let the worker go again.
 * The fuzzer pushes audio hundreds of times faster than real time, so stall after stall
 * would pile up hours of input for the worker to skip through (the shared engine lives as
 * long as the run) and then make every offline-mode process() wait for all of it. So a
 * handle gets another overflow only once its worker is within a few seconds of the input;
 * and an offline handle never gets one (process() waits for the model there: nothing to
 * overflow, and 5 s of audio through the model is slow). */
static void op_stall(src_t *s, slot_t *slots, int n) {
    enum { MAXB = 16384, NOUT = 64 };
    static float in_buf[2][MAXB], out_buf[NOUT][MAXB];
    static int ready;
    if (!ready) {
        for (int i = 0; i < MAXB; i++) in_buf[0][i] = in_buf[1][i] = 0.25f * sinf(0.01f * i);
        ready = 1;
    }
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint32_t max_block = which ? which->max_block : 256, n_out = 8;
    int offline = which ? which->offline : (h == g_engine ? g_offline : 0);
    int known = which ? which->live : h == g_engine;
    livestems_stats_t st = {.struct_size = sizeof st};
    if (known && livestems_stats(h, &st) == LIVESTEMS_OK) livestems_output_count(h, &n_out);
    else st.sample_rate = 44100;
    if (n_out > NOUT) n_out = NOUT;
    uint8_t k = u8(s);
    uint32_t nframes = max_block > MAXB ? MAXB : (max_block ? max_block : 1);
    int overflow = (k & 3) && known && !offline && backlog_frames(&st) < 6.0 * st.sample_rate;
    double frames = overflow ? 5.0 * st.sample_rate : 16.0 * nframes;
    uint32_t calls = (uint32_t)(frames / nframes) + 1;
    if (calls > 8192) calls = 8192;
    const float *in[2] = {in_buf[0], in_buf[1]};
    float *out[NOUT];
    for (uint32_t i = 0; i < NOUT; i++) out[i] = out_buf[i];
    /* an offline handle waits for the worker in process(): holding the GIL would make each
     * call wait its full 20 s timeout (a deadlock of our making, not the library's) */
    int hold = known && !offline && (k & 4);
    PyGILState_STATE gil = 0;
    if (hold) gil = PyGILState_Ensure();
    for (uint32_t i = 0; i < calls; i++)
        if (check_rc(livestems_process(h, in, 2, out, n_out, nframes), "livestems_process")) break;
    if (hold) PyGILState_Release(gil);
}

/* ---- parameters, MIDI ------------------------------------------------------------------ */

static uint32_t fuzz_param_id(src_t *s) {
    uint8_t k = u8(s);
    if (k < 200) return k % 72; /* around the valid ids (0..7 for 2 stems) and the 64 limit */
    return u32(s);
}

static void op_set_param(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint32_t id = fuzz_param_id(s);
    float v = fuzz_float(s);
    int rc = check_rc(livestems_set_param(h, id, v), "livestems_set_param");
    if (isnan(v)) FUZZ_ASSERT(rc != LIVESTEMS_OK, "set_param accepted NaN");
    if (h == g_engine && ((id & 3) == 3 || id / 4 >= g_stems))
        FUZZ_ASSERT(rc == LIVESTEMS_ERR_PARAM, "set_param(id %u) gave %d", id, rc);
    if (rc != LIVESTEMS_OK) return;
    float got = NAN;
    rc = check_rc(livestems_get_param(h, id, &got), "livestems_get_param");
    FUZZ_ASSERT(rc == LIVESTEMS_OK, "get_param after set_param gave %d", rc);
    if ((id & 3) == 0) {
        float want = v < -120.f ? -120.f : (v > 12.f ? 12.f : v);
        FUZZ_ASSERT(got == want, "gain %g read back as %g", (double)v, (double)got);
    } else {
        FUZZ_ASSERT(got == (v >= 0.5f ? 1.f : 0.f), "switch %g read back as %g", (double)v,
                    (double)got);
    }
}

static void op_get_param(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint32_t id = fuzz_param_id(s);
    float *v = malloc(sizeof *v);
    int rc = check_rc(livestems_get_param(h, id, (u8(s) & 7) ? v : NULL), "livestems_get_param");
    if (rc == LIVESTEMS_OK) {
        if ((id & 3) == 0) FUZZ_ASSERT(*v >= -120.f && *v <= 12.f, "gain %g", (double)*v);
        else FUZZ_ASSERT(*v == 0.f || *v == 1.f, "switch %g", (double)*v);
    }
    free(v);
}

static void op_midi(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint8_t k = u8(s);
    uint32_t size = k % 8;
    uint8_t *msg = malloc(size ? size : 1);
    for (uint32_t i = 0; i < size; i++) msg[i] = u8(s);
    if (size >= 1 && (k & 8)) msg[0] = 0xB0 | (msg[0] & 0x0f); /* mostly control changes */
    if (size >= 2 && (k & 16)) msg[1] = (uint8_t[]){7, 20, 21}[msg[1] % 3];
    int null_msg = (k & 0xe0) == 0xe0;
    if (null_msg && (k & 8)) size = u32(s);
    check_rc(livestems_midi(h, null_msg ? NULL : msg, size), "livestems_midi");
    free(msg);
}

/* ---- queries --------------------------------------------------------------------------- */

static void op_geometry(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint8_t k = u8(s);
    uint32_t *v = malloc(sizeof *v);
    uint32_t *p = (k & 0x38) == 0x38 ? NULL : v;
    int rc;
    switch (k % 5) {
    case 0:
        rc = check_rc(livestems_latency_samples(h, p), "livestems_latency_samples");
        if (rc == LIVESTEMS_OK && h == g_engine) FUZZ_ASSERT(*v == g_latency, "latency moved");
        break;
    case 1:
        rc = check_rc(livestems_output_count(h, p), "livestems_output_count");
        if (rc == LIVESTEMS_OK && h == g_engine) FUZZ_ASSERT(*v == g_outputs, "outputs moved");
        break;
    case 2:
        rc = check_rc(livestems_stem_count(h, p), "livestems_stem_count");
        if (rc == LIVESTEMS_OK) FUZZ_ASSERT(*v >= 1 && *v <= 16, "%u stems", *v);
        break;
    case 3:
        rc = check_rc(livestems_param_count(h, p), "livestems_param_count");
        if (rc == LIVESTEMS_OK && h == g_engine) FUZZ_ASSERT(*v == 3 * g_stems, "%u params", *v);
        break;
    default: {
        int32_t on = (int32_t)u32(s);
        rc = check_rc(livestems_set_offline(h, on), "livestems_set_offline");
        if (rc == LIVESTEMS_OK && which) which->offline = on != 0;
        if (rc == LIVESTEMS_OK && h == g_engine) g_offline = on != 0;
        break;
    }
    }
    if (!p && h == g_engine && k % 5 != 4) FUZZ_ASSERT(rc == LIVESTEMS_ERR_NULL, "NULL out: %d", rc);
    free(v);
}

static void op_names(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint8_t k = u8(s);
    uint32_t index = (k & 0x80) ? u32(s) : u8(s) % 20;
    size_t size = u8(s) % 40; /* 0 included: must be refused, not written */
    char *buf = malloc(size ? size : 1);
    char *p = (k & 0x70) == 0x70 ? NULL : buf;
    int rc = (k & 1) ? livestems_output_name(h, index, p, size)
                     : livestems_stem_name(h, index, p, size);
    check_rc(rc, (k & 1) ? "livestems_output_name" : "livestems_stem_name");
    if (rc == LIVESTEMS_OK) FUZZ_ASSERT(memchr(buf, 0, size) != NULL, "name not terminated");
    if (!p || !size) FUZZ_ASSERT(rc != LIVESTEMS_OK, "no buffer, but OK");
    free(buf);
}

static void op_param_info(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint8_t k = u8(s);
    uint32_t index = (k & 0x80) ? u32(s) : u8(s) % 70;
    livestems_param_info_t *info = malloc(sizeof *info);
    int rc = check_rc(livestems_param_info(h, index, (k & 0x70) == 0x70 ? NULL : info),
                      "livestems_param_info");
    if (rc == LIVESTEMS_OK) {
        FUZZ_ASSERT(memchr(info->name, 0, sizeof info->name) && memchr(info->unit, 0, sizeof info->unit),
                    "param_info strings not terminated");
        FUZZ_ASSERT((info->id & 3) != 3 && info->min_value <= info->max_value, "param_info");
        float v;
        FUZZ_ASSERT(livestems_get_param(h, info->id, &v) == LIVESTEMS_OK,
                    "param_info gave id %u that get_param refuses", info->id);
    }
    free(info);
}

static void op_stats(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    uint8_t k = u8(s);
    uint32_t size;
    switch (k % 4) {
    case 0: size = sizeof(livestems_stats_t); break;
    case 1: size = u8(s) % (sizeof(livestems_stats_t) + 16); break; /* older / newer structs */
    case 2: size = 8; break;
    default: size = u32(s); break;
    }
    /* the caller's struct is struct_size bytes (at least the field itself); a claimed size
     * beyond ours gets ours plus room: the library may write only its own prefix */
    size_t alloc = size < 4 ? 4 : (size > sizeof(livestems_stats_t) + 16 ? sizeof(livestems_stats_t) + 16 : size);
    unsigned char *buf = malloc(alloc);
    memset(buf, 0xA5, alloc);
    memcpy(buf, &size, 4);
    int rc = check_rc(livestems_stats(h, (k & 0x70) == 0x70 ? NULL : (livestems_stats_t *)(void *)buf),
                      "livestems_stats");
    if (rc == LIVESTEMS_OK) {
        size_t wrote = size < sizeof(livestems_stats_t) ? size : sizeof(livestems_stats_t);
        for (size_t i = wrote; i < alloc; i++)
            FUZZ_ASSERT(buf[i] == 0xA5, "stats wrote byte %zu of a %u-byte struct", i, size);
        uint32_t got;
        memcpy(&got, buf, 4);
        FUZZ_ASSERT(got == wrote, "stats struct_size %u, expected %zu", got, wrote);
    } else if (h == g_engine && (k & 0x70) != 0x70) {
        FUZZ_ASSERT(size < 8, "stats refused struct_size %u", size);
    }
    free(buf);
}

static void op_wait_ready(src_t *s, slot_t *slots, int n) {
    slot_t *which;
    livestems_t *h = pick_handle(s, slots, n, &which);
    static const int32_t timeouts[] = {0, 1, 5, -1, INT32_MIN, 50};
    int32_t t = timeouts[u8(s) % 6];
    int rc = check_rc(livestems_wait_ready(h, t), "livestems_wait_ready");
    if (which && which->live && rc != LIVESTEMS_ERR_TIMEOUT) {
        if (which->py_expect != 1)
            FUZZ_ASSERT(rc == which->py_expect, "async creation gave %d, expected %d", rc,
                        which->py_expect);
    }
    if (h == g_engine) FUZZ_ASSERT(rc == LIVESTEMS_OK, "wait_ready on the ready engine: %d", rc);
}

/* ---- create / destroy ------------------------------------------------------------------- */

/* An owned copy of a fuzzed model name; NULL for "the default". */
static char *fuzz_model(src_t *s) {
    uint8_t k = u8(s);
    switch (k % 16) {
    case 0: case 1: return NULL;
    case 2: return strdup("");
    case 3: return strdup("center");
    case 4: return strdup(g_model_path[M_GOOD]);
    case 5: { /* too long for the handle's buffer: refused in C */
        size_t len = LIB_MODEL_MAX - 2 + u8(s) % 4;
        char *m = malloc(len + 1);
        memset(m, 'm', len);
        m[len] = 0;
        return m;
    }
    case 6: return strdup("\xff\xfe\x80not-utf8");
    case 7: case 8: { /* arbitrary bytes: one relative file name, so nothing outside the
                       * run's folder (a device, a fifo) can be opened by accident */
        size_t len = u8(s) % 24;
        char *m = malloc(len + 4);
        memcpy(m, "fz-", 3);
        for (size_t i = 0; i < len; i++) {
            uint8_t c = u8(s);
            m[3 + i] = (c == 0 || c == '/') ? '_' : (char)c;
        }
        m[3 + len] = 0;
        return m;
    }
    default: return strdup(g_model_path[k % M_COUNT]);
    }
}

static char *fuzz_quality(src_t *s) {
    static const char *const q[] = {"HQ", "LQ", "VHQ", "MQ", "QQ", "", "BEST", "hq",
                                    "123456789012345", "1234567890123456", "\xff\xfeQ"};
    uint8_t k = u8(s);
    if (k < 40) return NULL;
    return strdup(q[k % 11]);
}

static int quality_ok(const livestems_config_t *c) {
    static const char *const good[] = {"HQ", "LQ", "VHQ", "MQ", "QQ"};
    if (c->struct_size < offsetof(livestems_config_t, resample_quality) + sizeof(char *) ||
        !c->resample_quality || !c->resample_quality[0])
        return 1; /* not given: "HQ" */
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!strcmp(c->resample_quality, good[i])) return 1;
    return 0;
}

/* the code the C side must refuse a configuration with; 0 if it goes on to Python */
static int expected_c_refusal(const livestems_config_t *c, int null_cfg, int null_out) {
    if (null_out || null_cfg) return LIVESTEMS_ERR_NULL;
    if (c->struct_size < offsetof(livestems_config_t, flags) + sizeof(uint32_t))
        return LIVESTEMS_ERR_CONFIG;
    if (c->api_version != LIVESTEMS_API_VERSION) return LIVESTEMS_ERR_CONFIG;
    if (!(c->sample_rate >= 1000.0 && c->sample_rate <= 768000.0) ||
        c->sample_rate != floor(c->sample_rate))
        return LIVESTEMS_ERR_CONFIG;
    if (c->max_block < 1 || c->max_block > LIB_MAX_BLOCK) return LIVESTEMS_ERR_CONFIG;
    if (c->in_channels < 1 || c->in_channels > LIB_MAX_CHANNELS) return LIVESTEMS_ERR_CHANNELS;
    const char *q = NULL;
    if (c->struct_size >= offsetof(livestems_config_t, resample_quality) + sizeof(char *) &&
        c->resample_quality && c->resample_quality[0])
        q = c->resample_quality;
    if ((c->model && strlen(c->model) >= LIB_MODEL_MAX) || (q && strlen(q) >= LIB_QUALITY_MAX))
        return LIVESTEMS_ERR_CONFIG;
    return 0;
}

static void op_create(src_t *s, slot_t *slots, int *n, int *py_budget) {
    uint8_t k = u8(s);
    livestems_config_t c = base_config();
    uint8_t what = u8(s);
    /* mostly valid fields, each made odd with some probability */
    if (what & 0x01) c.sample_rate = fuzz_rate(s);
    if (what & 0x02) {
        uint8_t b = u8(s);
        c.max_block = b < 128 ? 1 + b : (b < 200 ? 16383 + b % 3 : u32(s));
    }
    if (what & 0x04) c.in_channels = u8(s) % 11;
    if (what & 0x08) c.api_version = u8(s) < 200 ? 2 : u32(s);
    if (what & 0x10) {
        uint8_t b = u8(s);
        c.struct_size = b < 100 ? b : (b < 200 ? (uint32_t)sizeof c + b % 16 : u32(s));
    }
    c.flags = (what & 0x20) ? (u32(s) & ~(LIVESTEMS_FLAG_VERBOSE | LIVESTEMS_FLAG_RT_WORKER))
                            : 0;
    /* VERBOSE only prints Python tracebacks (noise in the log); RT_WORKER would run the
     * worker SCHED_FIFO, which on a machine where that is allowed can starve the fuzzer */
    char *model = fuzz_model(s);
    char *quality = fuzz_quality(s);
    c.model = model;
    c.resample_quality = quality;
    int null_cfg = (k & 0x0e) == 0x0e, null_out = (k & 0x70) == 0x70;
    int expect = expected_c_refusal(&c, null_cfg, null_out);
    int async = k & 1;
    int py_expect = 1; /* what Python must answer: 0 = OK, < 0 = that code, 1 = either */
    if (!expect) { /* this one reaches Python */
        if (*py_budget <= 0 || *n >= LS_FUZZ_MAX_LOCAL) goto done;
        (*py_budget)--;
        /* the default model may be a neural network (seconds to build, and a lot of code
         * under ASan): past the C checks, "no model" means the cheap DSP model "center" */
        if (!model || !model[0]) {
            free(model);
            c.model = model = strdup("center");
        }
        /* Python checks the quality first (ERR_CONFIG); a loadable stereo model with a
         * valid configuration must then be created: every rate of 1000..768000 Hz and every
         * max_block of 1..16384 is documented as valid */
        if (!quality_ok(&c)) py_expect = LIVESTEMS_ERR_CONFIG;
        else if (c.in_channels == 2 &&
                 (!strcmp(model, "center") || !strcmp(model, g_model_path[M_GOOD])))
            py_expect = LIVESTEMS_OK;
    }
    /* an older (smaller) struct is passed as exactly that many bytes */
    size_t alloc = c.struct_size < sizeof c ? (c.struct_size < 4 ? 4 : c.struct_size) : sizeof c;
    livestems_config_t *pc = malloc(sizeof c);
    memcpy(pc, &c, sizeof c);
    pc = realloc(pc, alloc);
    livestems_t *h = (livestems_t *)(void *)g_not_a_handle; /* must become NULL on failure */
    alarm_blocked(1);
    int rc = async ? livestems_create_async(null_cfg ? NULL : pc, null_out ? NULL : &h)
                   : livestems_create(null_cfg ? NULL : pc, null_out ? NULL : &h);
    alarm_blocked(0);
    check_rc(rc, async ? "livestems_create_async" : "livestems_create");
    free(pc);
    if (expect) FUZZ_ASSERT(rc == expect, "create refused with %d, expected %d", rc, expect);
    else if (async) FUZZ_ASSERT(rc == LIVESTEMS_OK, "create_async refused with %d", rc);
    else if (py_expect != 1)
        FUZZ_ASSERT(rc == py_expect, "create (model %s, %g Hz, max_block %u, quality %s) gave "
                    "%d, expected %d", model, c.sample_rate, (unsigned)c.max_block,
                    quality ? quality : "NULL", rc, py_expect);
    if (null_out) goto done;
    if (rc != LIVESTEMS_OK) {
        FUZZ_ASSERT(h == NULL, "failed create left *out = %p", (void *)h);
        goto done;
    }
    FUZZ_ASSERT(h != NULL, "create OK but no handle");
    slots[*n].h = h;
    slots[*n].live = 1;
    slots[*n].clean = 1;
    slots[*n].offline = (c.flags & LIVESTEMS_FLAG_OFFLINE) != 0;
    slots[*n].max_block = c.max_block;
    slots[*n].py_expect = async ? py_expect : 1;
    (*n)++;
done:
    free(model);
    free(quality);
}

static void op_destroy(src_t *s, slot_t *slots, int n) {
    uint8_t k = u8(s);
    slot_t *which = NULL;
    livestems_t *h;
    if (n && (k & 3)) {
        which = &slots[(k >> 2) % n];
        h = which->h;
    } else {
        h = (k & 4) ? NULL : (livestems_t *)(void *)g_not_a_handle;
    }
    int rc = check_rc(livestems_destroy(h), "livestems_destroy");
    if (which) {
        FUZZ_ASSERT(rc == (which->live ? LIVESTEMS_OK : LIVESTEMS_ERR_BAD_HANDLE),
                    "destroy of a %s handle gave %d", which->live ? "live" : "destroyed", rc);
        which->live = 0;
    } else {
        FUZZ_ASSERT(rc == (h ? LIVESTEMS_ERR_BAD_HANDLE : LIVESTEMS_ERR_NULL), "destroy: %d", rc);
    }
}

/* ---- the entry point ---------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    src_t s = {data, size};
    slot_t slots[LS_FUZZ_MAX_LOCAL];
    int n = 0, py_budget = LS_FUZZ_PY_CREATES;
    for (int step = 0; step < LS_FUZZ_MAX_STEPS && s.n; step++) {
        uint8_t op = u8(&s);
        switch (op % 16) {
        case 0: case 1: case 2: case 3: op_process(&s, slots, n); break;
        case 4: op_set_param(&s, slots, n); break;
        case 5: if (op & 0x10) op_set_param(&s, slots, n); else op_stall(&s, slots, n); break;
        case 6: op_get_param(&s, slots, n); break;
        case 7: op_midi(&s, slots, n); break;
        case 8: op_geometry(&s, slots, n); break;
        case 9: op_names(&s, slots, n); break;
        case 10: op_param_info(&s, slots, n); break;
        case 11: op_stats(&s, slots, n); break;
        case 12: op_wait_ready(&s, slots, n); break;
        case 13: case 14: op_create(&s, slots, &n, &py_budget); break;
        default: op_destroy(&s, slots, n); break;
        }
        FUZZ_ASSERT(livestems_api_version() == LIVESTEMS_API_VERSION, "api_version");
    }
    /* leave nothing behind: destroy this input's handles (a loading one is joined first),
     * and put the shared engine back to real-time mode and its default parameters */
    for (int i = 0; i < n; i++)
        if (slots[i].live)
            FUZZ_ASSERT(livestems_destroy(slots[i].h) == LIVESTEMS_OK, "final destroy");
    livestems_set_offline(g_engine, 0);
    g_offline = 0;
    for (uint32_t st = 0; st < g_stems; st++)
        for (uint32_t j = 0; j < 3; j++) livestems_set_param(g_engine, 4 * st + j, 0.0f);
    return 0;
}
