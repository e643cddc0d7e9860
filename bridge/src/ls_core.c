/* ls_core.c: the C half of liblivestems.so: handles, lock-free rings, the real-time process().
 *
 * This file is the cffi set_source() text of bridge/build.py (it is #included by the
 * generated _livestems_cffi.c), so the rings live in C memory with C11 atomics and
 * livestems_process() is plain C that never enters Python. The Python half (bridge/host.py,
 * called through the extern "Python" functions ls_py_create / ls_py_destroy) maps the same
 * ring memory with numpy and runs the engine's worker on it.
 *
 * Audio side (livestems_process, one host thread):
 *     input block -> in ring  (the worker reads it hop by hop)
 *                 -> dry ring (pre-filled with `latency` zeros: the fallback path)
 *     outputs     <- wet ring (pre-filled by the worker side with the engine's queue)
 *                    or, when the worker has not delivered in time, the dry input delayed by
 *                    exactly the latency (silence on the stems), spliced without a click.
 * This is the same algorithm, step for step, as Engine.push / Engine.pull_into in
 * stream/core/engine.py, so the C bridge and the Python apps produce the same samples (except
 * after an input overflow, which ls_push repairs and Engine.push does not yet).
 *
 * Ring protocol (SPSC): `w` and `r` count samples ever written / read. The producer copies,
 * then publishes `w` with a release store; the consumer loads `w` with acquire before
 * copying out, then publishes `r` with release. Each counter has one writer.
 */
/* Python.h (included first by the generated code) defines _GNU_SOURCE for RTLD_NOLOAD */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "livestems.h"
#include "ls_buildinfo.h" /* LS_LIBPYTHON, LS_PYTHONHOME, LS_PYVERSION, LS_SITE_PACKAGES */

#define LS_MAGIC 0x4c535431u /* "LST1" */
#define LS_MAX_HANDLES 64
#define LS_MAX_STEMS 16
#define LS_MAX_PARAMS (4 * LS_MAX_STEMS)
#define LS_MAX_BLOCK 16384
#define LS_MAX_CHANNELS 8
#define LS_OFFLINE_TIMEOUT_NS 20000000000LL /* offline wait gives up after 20 s: dry output */

enum { LS_RING_IN = 0, LS_RING_WET = 1, LS_RING_DRY = 2, LS_NRINGS = 3 };
enum { LS_LOADING = 1, LS_READY = 2, LS_FAILED = 3 };

typedef struct ls_ring {
    float *buf; /* rows x cap, row-major */
    uint32_t rows;
    uint64_t cap, mask;
    /* each counter on its own cache line: the producer and consumer cores never share one */
    _Alignas(64) _Atomic uint64_t w;
    _Alignas(64) _Atomic uint64_t r;
} ls_ring;

struct livestems {
    uint32_t magic;
    _Atomic int state;
    int create_status;           /* the creation's result once state != LS_LOADING */
    char error[1024];            /* creation error text (written before state is published) */
    /* configuration, immutable after create */
    char model[2048];
    char quality[16];
    double safety_ms;
    double sample_rate;
    uint32_t max_block, channels, flags;
    /* geometry, set once by ls__configure() from the Python side during creation */
    uint32_t n_stems, n_buses, rows, latency, model_rate, hop;
    char stem_names[LS_MAX_STEMS][32];
    ls_ring ring[LS_NRINGS];
    /* audio side (only the process() thread touches these, except `q`) */
    _Alignas(64) _Atomic uint64_t q; /* output position of the next frame; the worker reads it */
    int wet_mode;
    uint64_t in_pending;            /* input frames dropped, not yet replaced (ls_push) */
    uint32_t xfade_pos, xfade_len;
    double decay;
    double *last, *offset;          /* [rows] */
    float *pull_wet, *pull_fb;      /* [rows][max_block] */
    float *pull_dry;                /* [channels][max_block] */
    _Atomic int offline;
    /* counters */
    _Atomic uint64_t process_calls, frames_processed, deadline_misses, missed_frames,
        input_overflows;
    _Atomic uint64_t hops_processed, hops_skipped, nonfinite; /* published by the worker */
    _Atomic uint64_t last_hop_ns, worst_hop_ns;
    _Atomic int worker_failed;
    /* parameters: float bits in atomics; `param_gen` tells the worker something changed */
    uint32_t n_params;
    _Atomic uint32_t param_bits[LS_MAX_PARAMS];
    _Atomic uint32_t param_gen;
    /* async creation */
    pthread_t loader;
    int loader_joinable;
};

/* ---- errors ---------------------------------------------------------------------------- */

/* initial-exec TLS: a dlopen'ed library's default (dynamic) TLS is allocated lazily on a
 * thread's first access, which would malloc on the audio thread the first time process()
 * reports an error. Two pointers fit in the static TLS surplus glibc reserves for this. */
static __thread const char *ls_tls_error __attribute__((tls_model("initial-exec")));
static __thread char *ls_tls_owned __attribute__((tls_model("initial-exec")));

/* real-time safe: stores a pointer to a string literal */
static int ls_fail(int code, const char *literal) {
    ls_tls_error = literal;
    return code;
}

/* not real-time: formats into a per-thread heap buffer (control-thread calls only) */
static int ls_failf(int code, const char *fmt, ...) {
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    char *copy = strdup(tmp);
    if (copy) {
        free(ls_tls_owned);
        ls_tls_owned = copy;
        ls_tls_error = copy;
    } else {
        ls_tls_error = "out of memory while reporting an error";
    }
    return code;
}

LIVESTEMS_EXPORT const char *livestems_last_error(void) {
    return ls_tls_error ? ls_tls_error : "";
}

LIVESTEMS_EXPORT uint32_t livestems_api_version(void) { return LIVESTEMS_API_VERSION; }

/* ---- the table of live handles ------------------------------------------------------- */

/* A handle is only dereferenced after it is found here, so a NULL, destroyed or random
 * pointer is reported instead of crashing. The scan is 64 relaxed loads: real-time safe. */
static _Atomic(livestems_t *) ls_live[LS_MAX_HANDLES];

static int ls_register(livestems_t *h) {
    for (int i = 0; i < LS_MAX_HANDLES; i++) {
        livestems_t *expected = NULL;
        if (atomic_compare_exchange_strong(&ls_live[i], &expected, h)) return 1;
    }
    return 0;
}

static void ls_unregister(livestems_t *h) {
    for (int i = 0; i < LS_MAX_HANDLES; i++) {
        livestems_t *expected = h;
        if (atomic_compare_exchange_strong(&ls_live[i], &expected, NULL)) return;
    }
}

static int ls_is_live(const livestems_t *h) {
    if (!h) return 0;
    for (int i = 0; i < LS_MAX_HANDLES; i++)
        if (atomic_load_explicit(&ls_live[i], memory_order_acquire) == h) return 1;
    return 0;
}

/* common entry check: 0 if h may be used (and is ready when need_ready) */
static int ls_check(livestems_t *h, int need_ready) {
    if (!h) return ls_fail(LIVESTEMS_ERR_NULL, "livestems: handle is NULL");
    if (!ls_is_live(h) || h->magic != LS_MAGIC)
        return ls_fail(LIVESTEMS_ERR_BAD_HANDLE,
                       "livestems: not a live handle (destroyed, or never created)");
    if (need_ready) {
        int st = atomic_load_explicit(&h->state, memory_order_acquire);
        if (st == LS_LOADING)
            return ls_fail(LIVESTEMS_ERR_NOT_READY,
                           "livestems: the handle is still loading (create_async)");
        if (st != LS_READY)
            return ls_fail(LIVESTEMS_ERR_FAILED,
                           "livestems: this handle's creation failed; destroy it");
    }
    return LIVESTEMS_OK;
}

/* ---- rings --------------------------------------------------------------------------- */

static uint64_t ls_pow2(uint64_t n) {
    uint64_t c = 1;
    while (c < n) c <<= 1;
    return c;
}

static int ls_ring_alloc(ls_ring *rg, uint32_t rows, uint64_t cap) {
    rg->rows = rows;
    rg->cap = ls_pow2(cap);
    rg->mask = rg->cap - 1;
    rg->buf = calloc((size_t)rows * rg->cap, sizeof(float));
    atomic_store(&rg->w, 0);
    atomic_store(&rg->r, 0);
    return rg->buf != NULL;
}

/* producer: copy rows_in[row][0..n) in (rows_in NULL: n frames of silence); returns frames
   written */
static uint64_t ls_ring_write(ls_ring *rg, const float *const *rows_in, uint32_t nrows_in,
                              uint64_t n) {
    uint64_t w = atomic_load_explicit(&rg->w, memory_order_relaxed);
    uint64_t r = atomic_load_explicit(&rg->r, memory_order_acquire);
    uint64_t space = rg->cap - (w - r);
    if (n > space) n = space;
    if (n == 0) return 0;
    uint64_t pos = w & rg->mask, first = rg->cap - pos;
    if (first > n) first = n;
    for (uint32_t c = 0; c < rg->rows; c++) {
        float *dst = rg->buf + (size_t)c * rg->cap;
        if (rows_in == NULL) {
            memset(dst + pos, 0, first * sizeof(float));
            if (n > first) memset(dst, 0, (n - first) * sizeof(float));
            continue;
        }
        const float *src = rows_in[c < nrows_in ? c : nrows_in - 1];
        memcpy(dst + pos, src, first * sizeof(float));
        if (n > first) memcpy(dst, src + first, (n - first) * sizeof(float));
    }
    atomic_store_explicit(&rg->w, w + n, memory_order_release); /* publish after the copy */
    return n;
}

static uint64_t ls_ring_write_zeros(ls_ring *rg, uint64_t n) {
    return ls_ring_write(rg, NULL, 0, n);
}

/* consumer: copy up to n frames into out (rows of stride `stride`, from column `start`) */
static uint64_t ls_ring_read(ls_ring *rg, float *out, uint64_t stride, uint64_t start,
                             uint64_t n) {
    uint64_t r = atomic_load_explicit(&rg->r, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&rg->w, memory_order_acquire);
    if (n > w - r) n = w - r;
    if (n == 0) return 0;
    uint64_t pos = r & rg->mask, first = rg->cap - pos;
    if (first > n) first = n;
    for (uint32_t c = 0; c < rg->rows; c++) {
        const float *src = rg->buf + (size_t)c * rg->cap;
        float *dst = out + (size_t)c * stride + start;
        memcpy(dst, src + pos, first * sizeof(float));
        if (n > first) memcpy(dst + first, src, (n - first) * sizeof(float));
    }
    atomic_store_explicit(&rg->r, r + n, memory_order_release);
    return n;
}

static uint64_t ls_ring_skip(ls_ring *rg, uint64_t n) {
    uint64_t r = atomic_load_explicit(&rg->r, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&rg->w, memory_order_acquire);
    if (n > w - r) n = w - r;
    if (n) atomic_store_explicit(&rg->r, r + n, memory_order_release);
    return n;
}

static uint64_t ls_ring_readable(ls_ring *rg) {
    uint64_t w = atomic_load_explicit(&rg->w, memory_order_acquire);
    return w - atomic_load_explicit(&rg->r, memory_order_relaxed);
}

/* ---- process(): push, then pull (a port of Engine.push / Engine.pull_into) -------------- */

/* add a per-row offset decaying exponentially to rows of buf[:, start:start+n] */
static void ls_splice(livestems_t *h, float *buf, uint32_t start, uint32_t n) {
    for (uint32_t k = 0; k < h->rows; k++) {
        double d = h->offset[k];
        if (d == 0.0) continue;
        float *row = buf + (size_t)k * h->max_block;
        for (uint32_t i = start; i < start + n; i++) {
            d *= h->decay;
            row[i] += (float)d;
        }
        if (fabs(d) < 1e-9) d = 0.0;
        h->offset[k] = d;
    }
}

/* crossfade rows of pull_wet from pull_fb over xfade_len frames, xfade_pos already done */
static void ls_fade_in(livestems_t *h, uint32_t a, uint32_t b) {
    if (h->xfade_pos >= h->xfade_len) return;
    ls_splice(h, h->pull_fb, a, b - a);
    for (uint32_t i = 0; i < b - a; i++) {
        uint32_t k = h->xfade_pos + i;
        if (k >= h->xfade_len) break;
        float g = (float)((k + 1.0) / h->xfade_len);
        for (uint32_t r = 0; r < h->rows; r++) {
            size_t j = (size_t)r * h->max_block + a + i;
            h->pull_wet[j] = g * h->pull_wet[j] + (1.0f - g) * h->pull_fb[j];
        }
    }
    h->xfade_pos += b - a;
    if (h->xfade_pos >= h->xfade_len)
        for (uint32_t r = 0; r < h->rows; r++) h->offset[r] = 0.0;
}

static int64_t ls_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Drop the wet frames for output positions before q: played dry already (the pull skips them
 * too). While process() waits in offline mode, this keeps room in the wet ring for the
 * worker, which otherwise stops when the ring is full of frames no one will read. */
static void ls_skip_late(livestems_t *h, uint64_t q) {
    ls_ring *wr = &h->ring[LS_RING_WET];
    uint64_t r = atomic_load_explicit(&wr->r, memory_order_relaxed);
    if (q > r) ls_ring_skip(wr, q - r);
}

/* offline mode only: wait until the worker has written this block's output */
static void ls_wait_for_model(livestems_t *h, uint64_t q, uint32_t n, int64_t deadline) {
    ls_ring *wet = &h->ring[LS_RING_WET];
    struct timespec nap = {0, 50000};
    while (atomic_load_explicit(&wet->w, memory_order_acquire) < q + n &&
           !atomic_load_explicit(&h->worker_failed, memory_order_acquire) &&
           ls_now_ns() < deadline) {
        ls_skip_late(h, q);
        nanosleep(&nap, NULL);
    }
}

/* Push a block into the in ring. The worker maps the k-th frame it reads from the ring to
 * output position k + queue, so the ring must get exactly one frame per frame pushed. Frames
 * it has no room for (the worker stalled for longer than the ring holds) are dropped and
 * counted, and replaced by as many zeros, ahead of any later input, as soon as there is room.
 * Without that, every later hop maps to an output position already played, is skipped as
 * late, and the outputs stay on the dry fallback for good (and in offline mode every
 * process() waits its full timeout). In offline mode (deadline != 0), wait for room until
 * the deadline instead of dropping. */
static void ls_push(livestems_t *h, const float *const *in, uint32_t c, uint32_t nframes,
                    uint64_t q, int64_t deadline) {
    ls_ring *rg = &h->ring[LS_RING_IN];
    const float *rows[LS_MAX_CHANNELS];
    uint32_t done = 0;
    struct timespec nap = {0, 50000};
    for (;;) {
        if (h->in_pending) h->in_pending -= ls_ring_write_zeros(rg, h->in_pending);
        if (!h->in_pending && done < nframes) {
            for (uint32_t i = 0; i < c; i++) rows[i] = in[i] + done;
            done += (uint32_t)ls_ring_write(rg, rows, c, nframes - done);
        }
        if (done == nframes || !deadline || ls_now_ns() >= deadline ||
            atomic_load_explicit(&h->worker_failed, memory_order_acquire))
            break;
        ls_skip_late(h, q);
        nanosleep(&nap, NULL);
    }
    if (done < nframes) {
        atomic_fetch_add_explicit(&h->input_overflows, nframes - done, memory_order_relaxed);
        h->in_pending += nframes - done;
    }
}

static void ls_zero_outputs(float *const *out, uint32_t n_out, uint32_t nframes) {
    if (!out) return;
    for (uint32_t i = 0; i < n_out; i++)
        if (out[i]) memset(out[i], 0, (size_t)nframes * sizeof(float));
}

LIVESTEMS_EXPORT int livestems_process(livestems_t *h, const float *const *in, uint32_t n_in,
                                       float *const *out, uint32_t n_out, uint32_t nframes) {
    int rc = ls_check(h, 0);
    if (rc) {
        /* no live handle: max_block is unknown, but the host's buffers hold nframes */
        ls_zero_outputs(out, n_out, nframes);
        return rc;
    }
    if (nframes > h->max_block) {
        ls_zero_outputs(out, n_out, nframes);
        return ls_fail(LIVESTEMS_ERR_BLOCK_TOO_LARGE,
                       "livestems_process: nframes exceeds the max_block given to create");
    }
    if ((rc = ls_check(h, 1))) {
        ls_zero_outputs(out, n_out, nframes);
        return rc;
    }
    uint32_t c = h->channels, rows = h->rows;
    if (n_out != rows) {
        ls_zero_outputs(out, n_out, nframes);
        return ls_fail(LIVESTEMS_ERR_CHANNELS,
                       "livestems_process: n_out must equal livestems_output_count()");
    }
    if (!in || !out) {
        ls_zero_outputs(out, n_out, nframes);
        return ls_fail(LIVESTEMS_ERR_NULL, "livestems_process: in or out is NULL");
    }
    if (n_in != c) {
        ls_zero_outputs(out, n_out, nframes);
        return ls_fail(LIVESTEMS_ERR_CHANNELS,
                       "livestems_process: n_in must equal the in_channels given to create");
    }
    for (uint32_t i = 0; i < c; i++)
        if (!in[i]) {
            ls_zero_outputs(out, n_out, nframes);
            return ls_fail(LIVESTEMS_ERR_NULL, "livestems_process: an input pointer is NULL");
        }
    atomic_fetch_add_explicit(&h->process_calls, 1, memory_order_relaxed);
    if (nframes == 0) return LIVESTEMS_OK;

    /* push */
    /* offline: one deadline for the wait for room and the wait for the model */
    int64_t deadline = atomic_load_explicit(&h->offline, memory_order_relaxed)
                           ? ls_now_ns() + LS_OFFLINE_TIMEOUT_NS : 0;
    uint64_t q = atomic_load_explicit(&h->q, memory_order_relaxed);
    ls_push(h, in, c, nframes, q, deadline);
    ls_ring_write(&h->ring[LS_RING_DRY], in, c, nframes);
    if (deadline) ls_wait_for_model(h, q, nframes, deadline);

    /* pull */
    uint32_t n = nframes, mb = h->max_block;
    float *wet = h->pull_wet, *fb = h->pull_fb, *dry = h->pull_dry;
    ls_ring_read(&h->ring[LS_RING_DRY], dry, mb, 0, n); /* always: keeps the dry path aligned */
    uint32_t stem0 = c, bus0 = c + h->n_stems * c;
    for (uint32_t k = 0; k < rows; k++) {
        float *dst = fb + (size_t)k * mb;
        if (k >= stem0 && k < bus0) memset(dst, 0, n * sizeof(float)); /* stems: silence */
        else memcpy(dst, dry + (size_t)(k % c) * mb, n * sizeof(float)); /* mix, buses: dry */
    }
    ls_ring *wr = &h->ring[LS_RING_WET];
    uint64_t rc_wet = atomic_load_explicit(&wr->r, memory_order_relaxed);
    if (q > rc_wet) { /* the worker delivered these too late: they were played dry */
        ls_ring_skip(wr, q - rc_wet);
        rc_wet = atomic_load_explicit(&wr->r, memory_order_relaxed);
    }
    uint64_t avail = rc_wet == q ? ls_ring_readable(wr) : 0;
    if (avail >= n) {
        ls_ring_read(wr, wet, mb, 0, n);
        if (!h->wet_mode) { /* the model caught up: crossfade from the fallback */
            h->wet_mode = 1;
            h->xfade_pos = 0;
        }
        ls_fade_in(h, 0, n);
    } else {
        uint32_t m = h->wet_mode ? (uint32_t)avail : 0;
        if (m) {
            ls_ring_read(wr, wet, mb, 0, m);
            ls_fade_in(h, 0, m);
        }
        if (h->wet_mode) { /* switching to the fallback at frame m: start from here */
            for (uint32_t k = 0; k < rows; k++) {
                double prev = m ? wet[(size_t)k * mb + m - 1] : h->last[k];
                h->offset[k] = prev - fb[(size_t)k * mb + m];
            }
            h->wet_mode = 0;
        }
        ls_splice(h, fb, m, n - m);
        for (uint32_t k = 0; k < rows; k++)
            memcpy(wet + (size_t)k * mb + m, fb + (size_t)k * mb + m, (n - m) * sizeof(float));
        atomic_fetch_add_explicit(&h->deadline_misses, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->missed_frames, n - m, memory_order_relaxed);
    }
    atomic_store_explicit(&h->q, q + n, memory_order_release);
    for (uint32_t k = 0; k < rows; k++) h->last[k] = wet[(size_t)k * mb + n - 1];

    /* wet rows are [mix | stems | buses]; outputs are [stems | mix | buses] */
    uint32_t sc = h->n_stems * c;
    for (uint32_t i = 0; i < rows; i++) {
        if (!out[i]) continue;
        uint32_t row = i < sc ? c + i : (i < sc + c ? i - sc : i);
        memcpy(out[i], wet + (size_t)row * mb, n * sizeof(float));
    }
    atomic_fetch_add_explicit(&h->frames_processed, n, memory_order_relaxed);
    return LIVESTEMS_OK;
}

/* ---- parameters ---------------------------------------------------------------------- */

static uint32_t ls_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float ls_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static int ls_param_ok(livestems_t *h, uint32_t id) {
    return (id & 3u) != 3u && id / 4u < h->n_stems;
}

LIVESTEMS_EXPORT int livestems_set_param(livestems_t *h, uint32_t id, float value) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!ls_param_ok(h, id))
        return ls_fail(LIVESTEMS_ERR_PARAM, "livestems_set_param: unknown parameter id");
    if (value != value) return ls_fail(LIVESTEMS_ERR_PARAM, "livestems_set_param: value is NaN");
    switch (id & 3u) {
    case 0: value = value < -120.f ? -120.f : (value > 12.f ? 12.f : value); break;
    default: value = value >= 0.5f ? 1.f : 0.f; break;
    }
    atomic_store_explicit(&h->param_bits[id], ls_f2u(value), memory_order_relaxed);
    atomic_fetch_add_explicit(&h->param_gen, 1, memory_order_release);
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_get_param(livestems_t *h, uint32_t id, float *value) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!value) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_get_param: value is NULL");
    if (!ls_param_ok(h, id))
        return ls_fail(LIVESTEMS_ERR_PARAM, "livestems_get_param: unknown parameter id");
    *value = ls_u2f(atomic_load_explicit(&h->param_bits[id], memory_order_relaxed));
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_param_count(livestems_t *h, uint32_t *out) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!out) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_param_count: out is NULL");
    *out = 3 * h->n_stems;
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_param_info(livestems_t *h, uint32_t index,
                                          livestems_param_info_t *info) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!info) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_param_info: info is NULL");
    if (index >= 3 * h->n_stems)
        return ls_fail(LIVESTEMS_ERR_PARAM, "livestems_param_info: index >= param_count");
    uint32_t s = index / 3, kind = index % 3;
    static const char *const what[3] = {"gain", "mute", "solo"};
    memset(info, 0, sizeof *info);
    info->id = 4 * s + kind;
    snprintf(info->name, sizeof info->name, "%s %s", h->stem_names[s], what[kind]);
    if (kind == 0) {
        strcpy(info->unit, "dB");
        info->min_value = -120.f;
        info->max_value = 12.f;
    } else {
        info->max_value = 1.f;
        info->is_toggle = 1;
    }
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_midi(livestems_t *h, const uint8_t *msg, uint32_t size) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!msg) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_midi: msg is NULL");
    if (size < 3 || (msg[0] & 0xF0) != 0xB0) return LIVESTEMS_OK; /* only control changes */
    uint32_t stem = msg[0] & 0x0F, cc = msg[1] & 0x7F, v = msg[2] & 0x7F;
    if (stem >= h->n_stems) return LIVESTEMS_OK;
    switch (cc) {
    case 7: return livestems_set_param(h, LIVESTEMS_PARAM_STEM_GAIN_DB(stem),
                                       v == 0 ? -120.f : ((float)v - 100.f) * 0.5f);
    case 20: return livestems_set_param(h, LIVESTEMS_PARAM_STEM_MUTE(stem), v >= 64 ? 1.f : 0.f);
    case 21: return livestems_set_param(h, LIVESTEMS_PARAM_STEM_SOLO(stem), v >= 64 ? 1.f : 0.f);
    default: return LIVESTEMS_OK;
    }
}

/* ---- geometry and stats ------------------------------------------------------------- */

LIVESTEMS_EXPORT int livestems_set_offline(livestems_t *h, int32_t on) {
    int rc = ls_check(h, 0);
    if (rc) return rc;
    atomic_store_explicit(&h->offline, on != 0, memory_order_relaxed);
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_latency_samples(livestems_t *h, uint32_t *out) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!out) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_latency_samples: out is NULL");
    *out = h->latency;
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_output_count(livestems_t *h, uint32_t *out) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!out) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_output_count: out is NULL");
    *out = h->rows;
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_stem_count(livestems_t *h, uint32_t *out) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!out) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_stem_count: out is NULL");
    *out = h->n_stems;
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_stem_name(livestems_t *h, uint32_t stem, char *buf,
                                         size_t size) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!buf || size == 0) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_stem_name: no buffer");
    if (stem >= h->n_stems)
        return ls_fail(LIVESTEMS_ERR_PARAM, "livestems_stem_name: stem >= stem_count");
    snprintf(buf, size, "%s", h->stem_names[stem]);
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_output_name(livestems_t *h, uint32_t index, char *buf,
                                           size_t size) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!buf || size == 0)
        return ls_fail(LIVESTEMS_ERR_NULL, "livestems_output_name: no buffer");
    if (index >= h->rows)
        return ls_fail(LIVESTEMS_ERR_CHANNELS, "livestems_output_name: index >= output_count");
    uint32_t c = h->channels, sc = h->n_stems * c;
    const char *base = index < sc ? h->stem_names[index / c] : (index < sc + c ? "mix" : "karaoke");
    static const char *const sides2[2] = {"L", "R"};
    if (c == 2) snprintf(buf, size, "%s_%s", base, sides2[index % 2]);
    else snprintf(buf, size, "%s_%u", base, (unsigned)(index % c + 1));
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_stats(livestems_t *h, livestems_stats_t *out) {
    int rc = ls_check(h, 1);
    if (rc) return rc;
    if (!out) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_stats: out is NULL");
    uint32_t size = out->struct_size;
    if (size < offsetof(livestems_stats_t, latency_samples) + sizeof(uint32_t))
        return ls_fail(LIVESTEMS_ERR_CONFIG, "livestems_stats: set struct_size first");
    livestems_stats_t s;
    memset(&s, 0, sizeof s);
    s.struct_size = size < sizeof s ? size : (uint32_t)sizeof s;
    s.latency_samples = h->latency;
    s.sample_rate = h->sample_rate;
    s.model_rate = h->model_rate;
    s.hop = h->hop;
    s.process_calls = atomic_load(&h->process_calls);
    s.frames_processed = atomic_load(&h->frames_processed);
    s.deadline_misses = atomic_load(&h->deadline_misses);
    s.missed_frames = atomic_load(&h->missed_frames);
    s.input_overflows = atomic_load(&h->input_overflows);
    s.hops_processed = atomic_load(&h->hops_processed);
    s.hops_skipped = atomic_load(&h->hops_skipped);
    s.nonfinite_samples = atomic_load(&h->nonfinite);
    s.last_hop_ms = atomic_load(&h->last_hop_ns) * 1e-6;
    s.worst_hop_ms = atomic_load(&h->worst_hop_ns) * 1e-6;
    s.worker_failed = atomic_load(&h->worker_failed);
    memcpy(out, &s, s.struct_size); /* an older, smaller struct gets its prefix */
    return LIVESTEMS_OK;
}

/* ---- starting Python ---------------------------------------------------------------- */

int ls_py_create(livestems_t *h);  /* extern "Python", defined by the cffi-generated code */
int ls_py_destroy(livestems_t *h); /* extern "Python" */

static pthread_mutex_t ls_py_lock = PTHREAD_MUTEX_INITIALIZER;

/* Put the venv's site-packages on sys.path right after start-up (GIL held), before cffi's
 * own initialisation imports _cffi_backend, which a venv may hold and the base Python not.
 * $LIVESTEMS_SITE_PACKAGES (':'-separated) replaces the folders baked in at build time.
 * site.addsitedir also runs their .pth files: that is how an editable install is found.
 * A failure here is left for the import in ls_py_create to report with a clear message. */
static void ls_add_site_dirs(void) {
    const char *dirs = getenv("LIVESTEMS_SITE_PACKAGES");
    if (!dirs || !*dirs) dirs = LS_SITE_PACKAGES;
    PyObject *site = PyImport_ImportModule("site");
    if (!site) {
        PyErr_Clear();
        return;
    }
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dirs);
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        PyObject *r = PyObject_CallMethod(site, "addsitedir", "s", d);
        if (!r) PyErr_Clear();
        Py_XDECREF(r);
    }
    Py_DECREF(site);
}

/* Start the interpreter ourselves (unless the host already runs one) instead of letting
 * cffi do it, so that a Python that cannot start is an error code, not an abort():
 * Py_InitializeFromConfig returns a status, where cffi's Py_InitializeEx calls
 * Py_FatalError (killing the host) when e.g. the standard library is missing. */
static int ls_start_python(char *err, size_t errsize) {
    int rc = LIVESTEMS_OK;
    pthread_mutex_lock(&ls_py_lock);
    if (Py_IsInitialized()) goto done;
    /* The Debian PyExc_* trap: a plugin host dlopen()s us with RTLD_LOCAL, so libpython
     * (our DT_NEEDED) lands in a local scope. Extension modules (numpy's .so files, Python's
     * own lib-dynload modules) are not linked against libpython; they expect its symbols
     * (PyExc_ValueError, ...) to be global and fail with "undefined symbol" otherwise.
     * Re-opening it RTLD_GLOBAL | RTLD_NOLOAD promotes the copy already loaded. */
    if (!getenv("LIVESTEMS_NO_GLOBAL_LIBPYTHON")) {
        void *lib = dlopen(LS_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
        if (!lib) lib = dlopen(LS_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL);
        if (!lib) {
            snprintf(err, errsize, "cannot load %s RTLD_GLOBAL: %s", LS_LIBPYTHON, dlerror());
            rc = LIVESTEMS_ERR_PYTHON;
            goto done;
        }
    }
    const char *home = getenv("LIVESTEMS_PYTHONHOME");
    if (!home || !*home) home = LS_PYTHONHOME;
    char probe[4096];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/lib/python%s/os.py", home, LS_PYVERSION);
    if (stat(probe, &st) != 0) {
        snprintf(err, errsize,
                 "the Python %s standard library is not at %.300s (no %.400s); set "
                 "LIVESTEMS_PYTHONHOME to the prefix of the Python liblivestems was built with",
                 LS_PYVERSION, home, probe);
        rc = LIVESTEMS_ERR_PYTHON;
        goto done;
    }
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* the host owns signals */
    config.parse_argv = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, home);
    if (!PyStatus_Exception(status))
        status = PyConfig_SetBytesString(&config, &config.program_name, "livestems");
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        snprintf(err, errsize, "Python did not start: %s%s%s",
                 status.func ? status.func : "", status.func ? ": " : "",
                 status.err_msg ? status.err_msg : "(no message)");
        rc = LIVESTEMS_ERR_PYTHON;
        goto done;
    }
    ls_add_site_dirs();
    PyEval_SaveThread(); /* release the GIL: the worker and other threads take it as needed */
done:
    pthread_mutex_unlock(&ls_py_lock);
    return rc;
}

/* runs the whole creation on the calling thread; publishes the state at the end */
static void ls_load(livestems_t *h) {
    int rc = ls_start_python(h->error, sizeof h->error);
    if (rc == LIVESTEMS_OK) {
        rc = ls_py_create(h); /* first call into Python: cffi runs its init code here */
        if (rc == 0 && h->rows == 0) { /* cffi could not run the Python side at all */
            rc = LIVESTEMS_ERR_PYTHON;
            if (!h->error[0])
                snprintf(h->error, sizeof h->error, "the embedded Python module did not start");
        }
    }
    h->create_status = rc;
    atomic_store_explicit(&h->state, rc == LIVESTEMS_OK ? LS_READY : LS_FAILED,
                          memory_order_release);
}

static void *ls_loader_main(void *arg) {
    ls_load((livestems_t *)arg);
    return NULL;
}

static int ls_new_handle(const livestems_config_t *cfg, livestems_t **out) {
    if (!out) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_create: out is NULL");
    *out = NULL;
    if (!cfg) return ls_fail(LIVESTEMS_ERR_NULL, "livestems_create: config is NULL");
    if (cfg->struct_size < offsetof(livestems_config_t, flags) + sizeof(uint32_t))
        return ls_failf(LIVESTEMS_ERR_CONFIG,
                        "livestems_create: config.struct_size is %u; set it to "
                        "sizeof(livestems_config_t)", (unsigned)cfg->struct_size);
    if (cfg->api_version != LIVESTEMS_API_VERSION)
        return ls_failf(LIVESTEMS_ERR_CONFIG,
                        "livestems_create: host compiled against API version %u, library is %u",
                        (unsigned)cfg->api_version, (unsigned)LIVESTEMS_API_VERSION);
    if (!(cfg->sample_rate >= 1000.0 && cfg->sample_rate <= 768000.0) ||
        cfg->sample_rate != floor(cfg->sample_rate))
        return ls_failf(LIVESTEMS_ERR_CONFIG,
                        "livestems_create: sample_rate must be a whole number of Hz in "
                        "1000..768000, got %g", cfg->sample_rate);
    if (cfg->max_block < 1 || cfg->max_block > LS_MAX_BLOCK)
        return ls_failf(LIVESTEMS_ERR_CONFIG,
                        "livestems_create: max_block must be 1..%d frames, got %u",
                        LS_MAX_BLOCK, (unsigned)cfg->max_block);
    if (cfg->in_channels < 1 || cfg->in_channels > LS_MAX_CHANNELS)
        return ls_failf(LIVESTEMS_ERR_CHANNELS,
                        "livestems_create: in_channels must be 1..%d, got %u", LS_MAX_CHANNELS,
                        (unsigned)cfg->in_channels);
    const char *model = cfg->model ? cfg->model : "";
    const char *quality = "HQ";
    if (cfg->struct_size >= offsetof(livestems_config_t, resample_quality) + sizeof(char *) &&
        cfg->resample_quality && cfg->resample_quality[0])
        quality = cfg->resample_quality;
    double safety_ms = 0.0;
    if (cfg->struct_size >= offsetof(livestems_config_t, safety_ms) + sizeof(double)) {
        safety_ms = cfg->safety_ms;
        if (!(safety_ms >= 0.0 && safety_ms <= LIVESTEMS_SAFETY_MS_MAX))
            return ls_failf(LIVESTEMS_ERR_CONFIG,
                            "livestems_create: safety_ms must be 0..%g ms, got %g",
                            LIVESTEMS_SAFETY_MS_MAX, safety_ms);
    }
    livestems_t *h = calloc(1, sizeof *h);
    if (!h) return ls_fail(LIVESTEMS_ERR_NOMEM, "livestems_create: out of memory");
    if (strlen(model) >= sizeof h->model || strlen(quality) >= sizeof h->quality) {
        free(h);
        return ls_fail(LIVESTEMS_ERR_CONFIG, "livestems_create: model path or quality too long");
    }
    h->magic = LS_MAGIC;
    strcpy(h->model, model);
    strcpy(h->quality, quality);
    h->safety_ms = safety_ms;
    h->sample_rate = cfg->sample_rate;
    h->max_block = cfg->max_block;
    h->channels = cfg->in_channels;
    h->flags = cfg->flags;
    atomic_store(&h->offline, (cfg->flags & LIVESTEMS_FLAG_OFFLINE) != 0);
    atomic_store(&h->state, LS_LOADING);
    if (!ls_register(h)) {
        free(h);
        return ls_failf(LIVESTEMS_ERR_TOO_MANY, "livestems_create: more than %d live handles",
                        LS_MAX_HANDLES);
    }
    *out = h;
    return LIVESTEMS_OK;
}

static void ls_free(livestems_t *h) {
    for (int i = 0; i < LS_NRINGS; i++) free(h->ring[i].buf);
    free(h->last);
    free(h->offset);
    free(h->pull_wet);
    free(h->pull_fb);
    free(h->pull_dry);
    h->magic = 0;
    free(h);
}

LIVESTEMS_EXPORT int livestems_create_async(const livestems_config_t *cfg, livestems_t **out) {
    int rc = ls_new_handle(cfg, out);
    if (rc) return rc;
    livestems_t *h = *out;
    if (pthread_create(&h->loader, NULL, ls_loader_main, h) != 0) {
        ls_unregister(h);
        ls_free(h);
        *out = NULL;
        return ls_fail(LIVESTEMS_ERR_NOMEM, "livestems_create_async: cannot start a thread");
    }
    h->loader_joinable = 1;
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_wait_ready(livestems_t *h, int32_t timeout_ms) {
    int rc = ls_check(h, 0);
    if (rc) return rc;
    int64_t deadline = ls_now_ns() + (int64_t)timeout_ms * 1000000LL;
    struct timespec nap = {0, 1000000};
    while (atomic_load_explicit(&h->state, memory_order_acquire) == LS_LOADING) {
        if (timeout_ms >= 0 && ls_now_ns() >= deadline)
            return ls_fail(LIVESTEMS_ERR_TIMEOUT, "livestems_wait_ready: timed out");
        nanosleep(&nap, NULL);
    }
    if (h->loader_joinable) {
        pthread_join(h->loader, NULL);
        h->loader_joinable = 0;
    }
    if (h->create_status != LIVESTEMS_OK) return ls_failf(h->create_status, "%s", h->error);
    return LIVESTEMS_OK;
}

LIVESTEMS_EXPORT int livestems_create(const livestems_config_t *cfg, livestems_t **out) {
    int rc = ls_new_handle(cfg, out);
    if (rc) return rc;
    livestems_t *h = *out;
    /* on the caller's thread: a Python host may hold the GIL here, and PyGILState_Ensure
     * in the cffi call is reentrant for it, where a helper thread would deadlock */
    ls_load(h);
    if (h->create_status != LIVESTEMS_OK) {
        rc = ls_failf(h->create_status, "%s", h->error);
        livestems_destroy(h);
        *out = NULL;
    }
    return rc;
}

LIVESTEMS_EXPORT int livestems_destroy(livestems_t *h) {
    int rc = ls_check(h, 0);
    if (rc) return rc;
    if (h->loader_joinable) { /* an async creation still running: let it finish first */
        pthread_join(h->loader, NULL);
        h->loader_joinable = 0;
    }
    ls_unregister(h); /* from here on every call with h reports BAD_HANDLE */
    if (h->rows) ls_py_destroy(h); /* stops and joins the worker, drops the numpy views */
    ls_free(h);
    return LIVESTEMS_OK;
}

/* ---- called by the Python side (declared in build.py's cdef) ----------------------- */

static const char *ls__cfg_model(livestems_t *h) { return h->model; }
static const char *ls__cfg_quality(livestems_t *h) { return h->quality; }
static double ls__cfg_safety_ms(livestems_t *h) { return h->safety_ms; }
static double ls__cfg_rate(livestems_t *h) { return h->sample_rate; }
static uint32_t ls__cfg_max_block(livestems_t *h) { return h->max_block; }
static uint32_t ls__cfg_channels(livestems_t *h) { return h->channels; }
static uint32_t ls__cfg_flags(livestems_t *h) { return h->flags; }

static void ls__set_error(livestems_t *h, const char *msg) {
    snprintf(h->error, sizeof h->error, "%s", msg);
}

/* Allocate everything process() touches, sized by the engine the Python side built. */
static int ls__configure(livestems_t *h, uint32_t n_stems, uint32_t n_buses, uint64_t cap_in,
                         uint64_t cap_wet, uint64_t cap_dry, uint32_t latency,
                         uint32_t model_rate, uint32_t hop, double decay, uint32_t xfade_len) {
    if (n_stems < 1 || n_stems > LS_MAX_STEMS) {
        snprintf(h->error, sizeof h->error, "a model with %u stems (the bridge takes 1..%d)",
                 (unsigned)n_stems, LS_MAX_STEMS);
        return LIVESTEMS_ERR_MODEL;
    }
    uint32_t c = h->channels, rows = c * (1 + n_stems + n_buses), mb = h->max_block;
    int ok = ls_ring_alloc(&h->ring[LS_RING_IN], c, cap_in) &&
             ls_ring_alloc(&h->ring[LS_RING_WET], rows, cap_wet) &&
             ls_ring_alloc(&h->ring[LS_RING_DRY], c, cap_dry);
    h->last = calloc(rows, sizeof(double));
    h->offset = calloc(rows, sizeof(double));
    h->pull_wet = calloc((size_t)rows * mb, sizeof(float));
    h->pull_fb = calloc((size_t)rows * mb, sizeof(float));
    h->pull_dry = calloc((size_t)c * mb, sizeof(float));
    if (!ok || !h->last || !h->offset || !h->pull_wet || !h->pull_fb || !h->pull_dry) {
        snprintf(h->error, sizeof h->error, "out of memory allocating the rings");
        return LIVESTEMS_ERR_NOMEM;
    }
    h->n_stems = n_stems;
    h->n_buses = n_buses;
    h->latency = latency;
    h->model_rate = model_rate;
    h->hop = hop;
    h->decay = decay;
    h->xfade_len = xfade_len ? xfade_len : 1;
    h->xfade_pos = h->xfade_len;
    h->wet_mode = 1;
    h->n_params = 4 * n_stems;
    for (uint32_t i = 0; i < h->n_params; i++) atomic_store(&h->param_bits[i], ls_f2u(0.f));
    h->rows = rows; /* last: a nonzero rows means "configured" to destroy() */
    return LIVESTEMS_OK;
}

static void ls__set_stem_name(livestems_t *h, uint32_t stem, const char *name) {
    if (stem < LS_MAX_STEMS) snprintf(h->stem_names[stem], sizeof h->stem_names[stem], "%s", name);
}

static float *ls__ring_buffer(livestems_t *h, int ring) { return h->ring[ring].buf; }
static uint32_t ls__ring_rows(livestems_t *h, int ring) { return h->ring[ring].rows; }
static uint64_t ls__ring_capacity(livestems_t *h, int ring) { return h->ring[ring].cap; }

/* which: 0 = write counter, 1 = read counter */
static uint64_t ls__ring_load(livestems_t *h, int ring, int which) {
    return atomic_load_explicit(which ? &h->ring[ring].r : &h->ring[ring].w,
                                memory_order_acquire);
}

static void ls__ring_store(livestems_t *h, int ring, int which, uint64_t value) {
    atomic_store_explicit(which ? &h->ring[ring].r : &h->ring[ring].w, value,
                          memory_order_release);
}

/* only while process() cannot run (during creation) */
static void ls__ring_reset(livestems_t *h, int ring) {
    ls_ring *rg = &h->ring[ring];
    memset(rg->buf, 0, (size_t)rg->rows * rg->cap * sizeof(float));
    atomic_store(&rg->w, 0);
    atomic_store(&rg->r, 0);
}

static uint64_t ls__audio_pos(livestems_t *h) {
    return atomic_load_explicit(&h->q, memory_order_acquire);
}

static uint32_t ls__param_gen(livestems_t *h) {
    return atomic_load_explicit(&h->param_gen, memory_order_acquire);
}

static float ls__param_value(livestems_t *h, uint32_t id) {
    return id < LS_MAX_PARAMS ? ls_u2f(atomic_load(&h->param_bits[id])) : 0.f;
}

static void ls__publish(livestems_t *h, uint64_t hops, uint64_t skipped, uint64_t nonfinite,
                        uint64_t last_ns, uint64_t worst_ns) {
    atomic_store(&h->hops_processed, hops);
    atomic_store(&h->hops_skipped, skipped);
    atomic_store(&h->nonfinite, nonfinite);
    atomic_store(&h->last_hop_ns, last_ns);
    atomic_store(&h->worst_hop_ns, worst_ns);
}

static void ls__set_worker_failed(livestems_t *h) {
    atomic_store_explicit(&h->worker_failed, 1, memory_order_release);
}
