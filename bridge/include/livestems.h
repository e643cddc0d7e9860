/* livestems.h: the C ABI of the livestems real-time stem separation engine.
 *
 * Any C or C++ host (a JACK client, a plugin, a game engine) links liblivestems.so and calls
 * these functions. The library embeds CPython (through cffi): livestems_create() starts the
 * interpreter (once per process, or reuses the host's if the host is Python), loads the model
 * and starts a Python worker thread. livestems_process() is plain C: it copies the host's
 * block into a lock-free ring and copies the stems out of another; it never takes the GIL,
 * never allocates, locks, logs or blocks (except in offline mode, see LIVESTEMS_FLAG_OFFLINE).
 *
 * Conventions
 *   - Every function returns a livestems_status (0 = LIVESTEMS_OK, negative = error) unless
 *     it says otherwise; nothing throws or aborts. livestems_last_error() explains the last
 *     failure on the calling thread.
 *   - Every pointer argument is checked. A handle is checked against the table of live
 *     handles, so a NULL or destroyed handle is reported, not dereferenced.
 *   - Audio is non-interleaved float32 (one pointer per channel), samples in [-1, 1].
 *   - Threads: livestems_process() and livestems_set_param()/livestems_get_param()/
 *     livestems_midi() are real-time safe. create, wait_ready, destroy, stats and info
 *     calls are not (call them from a control thread). One thread at a time may call
 *     livestems_process() on a handle; destroy must not overlap any other call on the
 *     same handle.
 *
 * Outputs of livestems_process(), in this order (the JACK shim names its ports the same way):
 *     <stem>_L, <stem>_R   for each stem of the model, in the model's order
 *     mix_L, mix_R         the stem mixer's bus: gains, mutes and solos set by parameters
 *     karaoke_L, karaoke_R every stem but vocals, at unity gain
 * livestems_output_count() gives their number, livestems_output_name() their names.
 * Every output lags the input by livestems_latency_samples() samples, exactly.
 */
#ifndef LIVESTEMS_H
#define LIVESTEMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LIVESTEMS_API_VERSION 1 /* bumped on any incompatible change of this header */

#if defined(__GNUC__)
#define LIVESTEMS_EXPORT __attribute__((visibility("default")))
#else
#define LIVESTEMS_EXPORT
#endif

typedef struct livestems livestems_t; /* opaque handle */

typedef enum livestems_status {
    LIVESTEMS_OK = 0,
    LIVESTEMS_ERR_NULL = -1,            /* a required pointer argument is NULL */
    LIVESTEMS_ERR_BAD_HANDLE = -2,      /* not a live handle (destroyed, or never created) */
    LIVESTEMS_ERR_NOT_READY = -3,       /* the handle is still loading (livestems_create_async) */
    LIVESTEMS_ERR_BLOCK_TOO_LARGE = -4, /* nframes > the max_block given to create */
    LIVESTEMS_ERR_CHANNELS = -5,        /* wrong number of input or output channels */
    LIVESTEMS_ERR_PARAM = -6,           /* unknown parameter id, or a value that is NaN */
    LIVESTEMS_ERR_MODEL = -7,           /* the model cannot be loaded (missing, broken) */
    LIVESTEMS_ERR_PYTHON = -8,          /* the embedded Python could not start or failed */
    LIVESTEMS_ERR_CONFIG = -9,          /* a bad value in livestems_config */
    LIVESTEMS_ERR_NOMEM = -10,          /* allocation failed (at create only) */
    LIVESTEMS_ERR_FAILED = -11,         /* the handle's creation failed earlier */
    LIVESTEMS_ERR_TIMEOUT = -12,        /* livestems_wait_ready() timed out */
    LIVESTEMS_ERR_TOO_MANY = -13        /* too many live handles in this process */
} livestems_status;

/* livestems_config.flags */
#define LIVESTEMS_FLAG_OFFLINE 1u /* process() waits for the model (non-real-time rendering) */
#define LIVESTEMS_FLAG_VERBOSE 2u /* print Python tracebacks to stderr (default: silent) */
#define LIVESTEMS_FLAG_RT_WORKER 4u /* run the worker SCHED_FIFO (priority 5) when allowed:
                                      * its deadline is one host block, like the host's. Set
                                      * it only when the host's audio thread is real-time
                                      * too: a real-time worker holds ordinary threads off
                                      * for a whole hop of compute */

#define LIVESTEMS_SAFETY_MS_MAX 500.0 /* largest livestems_config.safety_ms */

/* Configuration for livestems_create(). Zero-initialise it, set struct_size, fill the rest. */
typedef struct livestems_config {
    uint32_t struct_size;   /* sizeof(livestems_config_t): lets later versions grow the struct */
    uint32_t api_version;   /* LIVESTEMS_API_VERSION the host was compiled against */
    const char *model;      /* built-in model name or path of a JSON model file; NULL = default */
    double sample_rate;     /* host sample rate in Hz (the engine resamples to the model's) */
    uint32_t max_block;     /* largest nframes the host will pass to process() (1..16384) */
    uint32_t in_channels;   /* channels the host will pass to process(): the model's (2) */
    uint32_t flags;         /* LIVESTEMS_FLAG_* */
    const char *resample_quality; /* "HQ" (default, ~40 ms at 48k<->44.1k) or "LQ" (~11 ms) */
    double safety_ms;       /* extra latency, 0..500 ms, that the worker may run late by
                             * without a deadline miss (default 0: one host block) */
} livestems_config_t;

/* What livestems_stats() reports. Set struct_size before the call. */
typedef struct livestems_stats {
    uint32_t struct_size;
    uint32_t latency_samples;   /* at the host rate, exact */
    double sample_rate;         /* host rate, Hz */
    uint32_t model_rate;        /* the model's rate, Hz */
    uint32_t hop;               /* model samples per worker step */
    uint64_t process_calls;
    uint64_t frames_processed;
    uint64_t deadline_misses;   /* process() calls that played (part of) the dry fallback */
    uint64_t missed_frames;     /* frames of dry fallback played */
    uint64_t input_overflows;   /* input frames dropped because the worker stalled too long */
    uint64_t hops_processed;    /* worker: hops through the model */
    uint64_t hops_skipped;      /* worker: hops skipped because they were already played dry */
    uint64_t nonfinite_samples; /* NaN/Inf samples zeroed (input and model output) */
    double last_hop_ms;         /* worker compute time of the latest hop */
    double worst_hop_ms;        /* worst worker compute time of any hop */
    int32_t worker_failed;      /* 1 if the worker stopped on an error (output is dry) */
} livestems_stats_t;

/* One parameter, as livestems_param_info() describes it. */
typedef struct livestems_param_info {
    uint32_t id;
    char name[48];              /* e.g. "vocals gain" */
    char unit[8];               /* "dB", or "" for switches */
    float min_value, max_value, default_value;
    int32_t is_toggle;          /* 1: 0 = off, 1 = on */
} livestems_param_info_t;

/* Parameter ids: per stem s (0-based, in the model's order). */
#define LIVESTEMS_PARAM_STEM_GAIN_DB(s) (4u * (uint32_t)(s) + 0u) /* -120 (silent) .. +12 dB */
#define LIVESTEMS_PARAM_STEM_MUTE(s)    (4u * (uint32_t)(s) + 1u) /* 0 or 1 */
#define LIVESTEMS_PARAM_STEM_SOLO(s)    (4u * (uint32_t)(s) + 2u) /* 0 or 1 */

/* Version of the library actually loaded (compare with LIVESTEMS_API_VERSION). */
LIVESTEMS_EXPORT uint32_t livestems_api_version(void);

/* Message for the last error on the calling thread ("" if none). Valid until the next
 * livestems call on this thread. Never NULL. */
LIVESTEMS_EXPORT const char *livestems_last_error(void);

/* Start Python (first call in the process), load the model, start the worker. Blocks until
 * ready (seconds the first time). On success *out is the handle; on failure *out is NULL and
 * livestems_last_error() says why. Not real-time safe. */
LIVESTEMS_EXPORT int livestems_create(const livestems_config_t *config, livestems_t **out);

/* Like livestems_create, but returns at once with a handle that is loading on a background
 * thread. process() on it outputs silence and returns LIVESTEMS_ERR_NOT_READY until it is
 * ready. Do not wait for it on a thread that holds the Python GIL. */
LIVESTEMS_EXPORT int livestems_create_async(const livestems_config_t *config, livestems_t **out);

/* Wait until an async handle is ready (timeout_ms < 0: forever). Returns LIVESTEMS_OK, the
 * creation's error code (the handle must still be destroyed), or LIVESTEMS_ERR_TIMEOUT. */
LIVESTEMS_EXPORT int livestems_wait_ready(livestems_t *h, int32_t timeout_ms);

/* Stop the worker and free the handle. Afterwards h is invalid (calls report BAD_HANDLE). */
LIVESTEMS_EXPORT int livestems_destroy(livestems_t *h);

/* Real-time: push nframes of input and fill the outputs for the same nframes.
 *   in:  in_channels pointers (must be the in_channels given to create), none NULL
 *   out: n_out pointers (must be livestems_output_count()); an entry may be NULL to skip it
 * Always writes every non-NULL output (zeros on error), so a host can ignore the status on
 * its audio thread. In offline mode it waits until the model has produced this block. */
LIVESTEMS_EXPORT int livestems_process(livestems_t *h, const float *const *in,
                                       uint32_t n_in, float *const *out, uint32_t n_out,
                                       uint32_t nframes);

/* Real-time: offline mode on/off (LIVESTEMS_FLAG_OFFLINE), e.g. when a host freewheels. */
LIVESTEMS_EXPORT int livestems_set_offline(livestems_t *h, int32_t on);

/* Geometry (valid once ready). */
LIVESTEMS_EXPORT int livestems_latency_samples(livestems_t *h, uint32_t *out);
LIVESTEMS_EXPORT int livestems_output_count(livestems_t *h, uint32_t *out);
LIVESTEMS_EXPORT int livestems_output_name(livestems_t *h, uint32_t index, char *buf,
                                           size_t size);
LIVESTEMS_EXPORT int livestems_stem_count(livestems_t *h, uint32_t *out);
LIVESTEMS_EXPORT int livestems_stem_name(livestems_t *h, uint32_t stem, char *buf, size_t size);

/* Parameters (real-time safe: an atomic store / load; the worker applies them per hop,
 * with the mixer's gain smoothing). */
LIVESTEMS_EXPORT int livestems_param_count(livestems_t *h, uint32_t *out);
LIVESTEMS_EXPORT int livestems_param_info(livestems_t *h, uint32_t index,
                                          livestems_param_info_t *info);
LIVESTEMS_EXPORT int livestems_set_param(livestems_t *h, uint32_t id, float value);
LIVESTEMS_EXPORT int livestems_get_param(livestems_t *h, uint32_t id, float *value);

/* Real-time: apply one MIDI message (status byte first). MIDI channel k (1-based) controls
 * stem k-1: CC 7 -> gain (value 0 = silent, else (value - 100) / 2 dB), CC 20 -> mute
 * (value >= 64 = on), CC 21 -> solo. Other messages are ignored (LIVESTEMS_OK). */
LIVESTEMS_EXPORT int livestems_midi(livestems_t *h, const uint8_t *msg, uint32_t size);

/* Counters: reads only atomics, but call it from a control thread (not part of the
 * real-time contract, so later versions may do more here). */
LIVESTEMS_EXPORT int livestems_stats(livestems_t *h, livestems_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* LIVESTEMS_H */
