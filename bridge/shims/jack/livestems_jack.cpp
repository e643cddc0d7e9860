// livestems_jack.cpp: a native JACK client over the livestems C API (liblivestems.so).
//
// The same ports as the Python JACK app (stream/io/backends/jack.py), so patches and tests
// work with either:
//     N:in_L, N:in_R                 audio in
//     N:<stem>_L, N:<stem>_R         one pair per stem of the model, in the model's order
//     N:mix_L, N:mix_R               the stem mixer's bus (MIDI-controlled gains, mute, solo)
//     N:karaoke_L, N:karaoke_R       every stem but vocals
//     N:midi_in                      MIDI control: forwarded to livestems_midi() (see livestems.h)
//
// Threads. JACK's process thread runs process(): it reads MIDI events into set_param and
// calls livestems_process() on the port buffers; nothing else (no allocation, lock, log or
// Python: the C API's process is plain C). JACK's notification thread runs the latency,
// buffer-size, xrun and shutdown callbacks: they only set flags or publish numbers. The main
// thread creates the engine handle (Python starts there), rebuilds it when the buffer size
// or rate changes, and writes the stats at exit.
//
// Sample rate: the handle is created at the server's rate; when it is not the model's
// (44.1 kHz for `center`), the engine resamples on its worker thread, and the latency we
// publish includes the resamplers.
//
// Usage: livestems-jack [--name N] [--server S] [--model M] [--quality HQ|LQ]
//                       [--safety-ms MS] [--stats F]
// --safety-ms adds that much latency as headroom for a worker that runs late (a busy or
// virtual machine): fewer deadline misses, later output.
// Runs until SIGINT or SIGTERM; exit 0 after writing --stats (JSON), 1 on a start-up error.

#include <jack/jack.h>
#include <jack/midiport.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "livestems.h"

namespace {

constexpr uint32_t kMaxOutputs = 64;

std::atomic<bool> g_quit{false};

struct Shim {
    jack_client_t *client = nullptr;
    jack_port_t *in[2] = {nullptr, nullptr};
    std::vector<jack_port_t *> outs;
    jack_port_t *midi_in = nullptr;
    std::string model, quality;
    double safety_ms = 0.0;

    // the handle the process thread uses; swapped by the main thread (see rebuild())
    std::atomic<livestems_t *> active{nullptr};
    std::atomic<uint32_t> active_max_block{0};
    std::atomic<uint32_t> latency{0};
    std::atomic<uint64_t> cycles{0};

    // set by JACK's notification thread, acted on by the main thread
    std::atomic<bool> rebuild_needed{false};
    std::atomic<uint32_t> want_block{0}, want_rate{0};
    std::atomic<bool> shutdown{false};

    // counters kept by the process thread
    std::atomic<uint64_t> midi_events{0}, frame_gaps{0}, silent_cycles{0}, errors{0};
    std::atomic<int64_t> first_frame{-1};
    int64_t next_frame = -1;  // process thread only
    std::atomic<uint64_t> xruns{0};

    // stats of handles already destroyed by a rebuild, so the totals cover the whole run
    uint64_t misses_before = 0, hops_before = 0;
};

// ---- JACK process thread: real-time, only copies ------------------------------------------

int process(jack_nframes_t nframes, void *arg) {
    Shim *s = static_cast<Shim *>(arg);
    jack_nframes_t t = jack_last_frame_time(s->client);
    if (s->next_frame >= 0 && static_cast<int64_t>(t) != s->next_frame)
        s->frame_gaps.fetch_add(1, std::memory_order_relaxed);  // JACK skipped us
    s->next_frame = static_cast<int64_t>(t) + nframes;
    if (s->first_frame.load(std::memory_order_relaxed) < 0)
        s->first_frame.store(t, std::memory_order_relaxed);

    float *out[kMaxOutputs];
    const uint32_t n_out = static_cast<uint32_t>(s->outs.size());
    for (uint32_t i = 0; i < n_out; i++)
        out[i] = static_cast<float *>(jack_port_get_buffer(s->outs[i], nframes));
    const float *in[2] = {static_cast<float *>(jack_port_get_buffer(s->in[0], nframes)),
                          static_cast<float *>(jack_port_get_buffer(s->in[1], nframes))};

    livestems_t *h = s->active.load(std::memory_order_acquire);
    if (h) {
        void *mb = jack_port_get_buffer(s->midi_in, nframes);
        uint32_t count = jack_midi_get_event_count(mb);
        for (uint32_t i = 0; i < count; i++) {
            jack_midi_event_t ev;
            if (jack_midi_event_get(&ev, mb, i) == 0) {
                livestems_midi(h, ev.buffer, static_cast<uint32_t>(ev.size));
                s->midi_events.fetch_add(1, std::memory_order_relaxed);
            }
        }
    }
    // no handle yet, or one built for a smaller block (a rebuild is pending): silence.
    // livestems_process zeroes the outputs itself on every error, NULL handle included.
    if (!h || nframes > s->active_max_block.load(std::memory_order_relaxed))
        s->silent_cycles.fetch_add(1, std::memory_order_relaxed);
    if (livestems_process(h, in, 2, out, n_out, nframes) != LIVESTEMS_OK)
        s->errors.fetch_add(1, std::memory_order_relaxed);
    s->cycles.fetch_add(1, std::memory_order_release);
    return 0;
}

// ---- JACK notification thread: flags and latency only ----------------------------------

void on_latency(jack_latency_callback_mode_t mode, void *arg) {
    Shim *s = static_cast<Shim *>(arg);
    const uint32_t ours = s->latency.load();
    jack_latency_range_t range{UINT32_MAX, 0}, r;
    if (mode == JackCaptureLatency) {
        // outputs lag what reached our inputs by `ours`
        for (jack_port_t *p : s->in) {
            jack_port_get_latency_range(p, JackCaptureLatency, &r);
            if (r.min < range.min) range.min = r.min;
            if (r.max > range.max) range.max = r.max;
        }
        range.min += ours;
        range.max += ours;
        for (jack_port_t *p : s->outs) jack_port_set_latency_range(p, JackCaptureLatency, &range);
    } else {
        for (jack_port_t *p : s->outs) {
            jack_port_get_latency_range(p, JackPlaybackLatency, &r);
            if (r.min < range.min) range.min = r.min;
            if (r.max > range.max) range.max = r.max;
        }
        range.min += ours;
        range.max += ours;
        for (jack_port_t *p : s->in) jack_port_set_latency_range(p, JackPlaybackLatency, &range);
    }
}

int on_buffer_size(jack_nframes_t n, void *arg) {
    Shim *s = static_cast<Shim *>(arg);
    if (n != s->want_block.load()) {
        s->want_block.store(n);
        s->rebuild_needed.store(true);
    }
    return 0;
}

int on_sample_rate(jack_nframes_t rate, void *arg) {
    Shim *s = static_cast<Shim *>(arg);
    if (rate != s->want_rate.load()) {
        s->want_rate.store(rate);
        s->rebuild_needed.store(true);
    }
    return 0;
}

int on_xrun(void *arg) {
    static_cast<Shim *>(arg)->xruns.fetch_add(1);
    return 0;
}

void on_shutdown(void *arg) {
    static_cast<Shim *>(arg)->shutdown.store(true);
    g_quit.store(true);
}

void on_signal(int) { g_quit.store(true); }

// ---- main thread ---------------------------------------------------------------------

livestems_t *make_handle(Shim *s, uint32_t rate, uint32_t block) {
    livestems_config_t cfg{};
    cfg.struct_size = sizeof cfg;
    cfg.api_version = LIVESTEMS_API_VERSION;
    cfg.model = s->model.empty() ? nullptr : s->model.c_str();
    cfg.sample_rate = rate;
    cfg.max_block = block;
    cfg.in_channels = 2;
    // The worker's deadline is a period, so it runs SCHED_FIFO (priority 5, under JACK's own
    // threads) beside a real-time server; never beside `jackd --no-realtime`, whose threads
    // are ordinary ones that a real-time worker would hold off for a hop of compute.
    cfg.flags = jack_is_realtime(s->client) ? LIVESTEMS_FLAG_RT_WORKER : 0u;
    cfg.resample_quality = s->quality.empty() ? nullptr : s->quality.c_str();
    cfg.safety_ms = s->safety_ms;
    livestems_t *h = nullptr;
    if (livestems_create(&cfg, &h) != LIVESTEMS_OK) {
        std::fprintf(stderr, "livestems-jack: %s\n", livestems_last_error());
        return nullptr;
    }
    return h;
}

// A new handle for the server's current rate and block, swapped in while JACK runs; the old
// one is destroyed only after the process thread has finished a cycle with the new one.
bool rebuild(Shim *s) {
    s->rebuild_needed.store(false);
    livestems_t *h = make_handle(s, s->want_rate.load(), s->want_block.load());
    if (!h) return false;
    uint32_t lat = 0;
    livestems_latency_samples(h, &lat);
    livestems_t *old = s->active.load();
    s->active_max_block.store(s->want_block.load());
    s->active.store(h, std::memory_order_release);
    s->latency.store(lat);
    if (old) {
        uint64_t c = s->cycles.load(std::memory_order_acquire);
        while (s->cycles.load(std::memory_order_acquire) < c + 2 && !g_quit.load())
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        livestems_stats_t st{};
        st.struct_size = sizeof st;
        if (livestems_stats(old, &st) == LIVESTEMS_OK) {
            s->misses_before += st.deadline_misses;
            s->hops_before += st.hops_processed;
        }
        livestems_destroy(old);
    }
    jack_recompute_total_latencies(s->client);
    return true;
}

bool write_stats(Shim *s, const char *path) {
    livestems_t *h = s->active.load();
    livestems_stats_t st{};
    st.struct_size = sizeof st;
    if (!h || livestems_stats(h, &st) != LIVESTEMS_OK) return false;
    std::string tmp = std::string(path) + ".tmp";
    FILE *f = std::fopen(tmp.c_str(), "w");
    if (!f) return false;
    std::fprintf(f,
                 "{\"latency_samples\": %u, \"sample_rate\": %.0f, \"model_rate\": %u, "
                 "\"block_size\": %u, \"deadline_misses\": %llu, \"missed_frames\": %llu, "
                 "\"hops_processed\": %llu, \"hops_skipped\": %llu, \"input_overflows\": %llu, "
                 "\"worker_error\": %s, \"frame_gaps\": %llu, \"first_frame\": %lld, "
                 "\"xruns\": %llu, \"midi_events\": %llu, \"silent_cycles\": %llu, "
                 "\"process_errors\": %llu, \"worst_hop_ms\": %.4f}\n",
                 st.latency_samples, st.sample_rate, st.model_rate,
                 s->active_max_block.load(),
                 static_cast<unsigned long long>(st.deadline_misses + s->misses_before),
                 static_cast<unsigned long long>(st.missed_frames),
                 static_cast<unsigned long long>(st.hops_processed + s->hops_before),
                 static_cast<unsigned long long>(st.hops_skipped),
                 static_cast<unsigned long long>(st.input_overflows),
                 st.worker_failed ? "\"the worker stopped on an error\"" : "null",
                 static_cast<unsigned long long>(s->frame_gaps.load()),
                 static_cast<long long>(s->first_frame.load()),
                 static_cast<unsigned long long>(s->xruns.load()),
                 static_cast<unsigned long long>(s->midi_events.load()),
                 static_cast<unsigned long long>(s->silent_cycles.load()),
                 static_cast<unsigned long long>(s->errors.load()), st.worst_hop_ms);
    std::fclose(f);
    return std::rename(tmp.c_str(), path) == 0;  // readers never see half a file
}

const char *opt(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (!std::strcmp(argv[i], name)) return argv[i + 1];
    return dflt;
}

}  // namespace

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
            std::printf("usage: livestems-jack [--name N] [--server S] [--model M] "
                        "[--quality HQ|LQ] [--safety-ms MS] [--stats FILE]\n"
                        "  --safety-ms MS  extra latency (0..500 ms, default 0) the model's "
                        "worker may\n"
                        "                  run late by without a deadline miss\n");
            return 0;
        }
    Shim s;
    const char *name = opt(argc, argv, "--name", "livestems");
    const char *server = opt(argc, argv, "--server", nullptr);
    const char *stats_path = opt(argc, argv, "--stats", nullptr);
    s.model = opt(argc, argv, "--model", "");
    s.quality = opt(argc, argv, "--quality", "");
    {
        const char *text = opt(argc, argv, "--safety-ms", "0");
        char *end = nullptr;
        s.safety_ms = std::strtod(text, &end);
        if (end == text || *end != '\0') {
            std::fprintf(stderr, "livestems-jack: --safety-ms takes milliseconds (0..500), "
                         "got '%s'\n", text);
            return 2;
        }
    }

    jack_status_t status;
    int options = JackNoStartServer | (server ? JackServerName : 0);
    s.client = jack_client_open(name, static_cast<jack_options_t>(options), &status, server);
    if (!s.client) {
        std::fprintf(stderr, "livestems-jack: cannot connect to JACK server %s (status 0x%x); "
                     "start one, e.g. `jackd -d dummy -r 48000 -p 256`\n",
                     server ? server : "(default)", static_cast<unsigned>(status));
        return 1;
    }
    s.want_rate.store(jack_get_sample_rate(s.client));
    s.want_block.store(jack_get_buffer_size(s.client));

    // the handle first: its stems name the ports (Python starts here, seconds at most)
    if (!rebuild(&s)) {
        jack_client_close(s.client);
        return 1;
    }
    livestems_t *h = s.active.load();
    uint32_t n_out = 0;
    livestems_output_count(h, &n_out);
    if (n_out > kMaxOutputs) {
        std::fprintf(stderr, "livestems-jack: %u outputs, at most %u\n", n_out, kMaxOutputs);
        return 1;
    }
    s.in[0] = jack_port_register(s.client, "in_L", JACK_DEFAULT_AUDIO_TYPE, JackPortIsInput, 0);
    s.in[1] = jack_port_register(s.client, "in_R", JACK_DEFAULT_AUDIO_TYPE, JackPortIsInput, 0);
    for (uint32_t i = 0; i < n_out; i++) {
        char pname[64];
        livestems_output_name(h, i, pname, sizeof pname);
        s.outs.push_back(
            jack_port_register(s.client, pname, JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0));
    }
    s.midi_in = jack_port_register(s.client, "midi_in", JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
    for (jack_port_t *p : s.outs)
        if (!p) {
            std::fprintf(stderr, "livestems-jack: cannot register ports\n");
            return 1;
        }
    if (!s.in[0] || !s.in[1] || !s.midi_in) {
        std::fprintf(stderr, "livestems-jack: cannot register ports\n");
        return 1;
    }
    jack_set_process_callback(s.client, process, &s);
    jack_set_latency_callback(s.client, on_latency, &s);
    jack_set_buffer_size_callback(s.client, on_buffer_size, &s);
    jack_set_sample_rate_callback(s.client, on_sample_rate, &s);
    jack_set_xrun_callback(s.client, on_xrun, &s);
    jack_on_shutdown(s.client, on_shutdown, &s);

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    if (jack_activate(s.client)) {
        std::fprintf(stderr, "livestems-jack: cannot activate the client\n");
        return 1;
    }
    jack_recompute_total_latencies(s.client);
    std::printf("livestems-jack: %s, latency %u samples at %u Hz\n", jack_get_client_name(s.client),
                s.latency.load(), s.want_rate.load());
    std::fflush(stdout);

    while (!g_quit.load()) {
        if (s.rebuild_needed.load() && !rebuild(&s)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    int rc = 0;
    if (s.shutdown.load()) {
        std::fprintf(stderr, "livestems-jack: the JACK server shut down\n");
        rc = 6;
    } else {
        jack_deactivate(s.client);
    }
    if (stats_path && !write_stats(&s, stats_path)) {
        std::fprintf(stderr, "livestems-jack: cannot write %s\n", stats_path);
        rc = rc ? rc : 1;
    }
    if (!s.shutdown.load()) jack_client_close(s.client);
    livestems_destroy(s.active.exchange(nullptr));
    return rc;
}
