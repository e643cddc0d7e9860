/* clap_host.c: a minimal headless CLAP host, to test livestems.clap (no CLAP host ships in
 * Debian). It loads the plugin, reads its audio ports, parameters and latency, switches
 * "Offline render" on through a parameter event, renders a file and writes the main output.
 *
 *   clap_host PLUGIN.clap IN.f32 OUT.f32 RATE BLOCK
 *       IN: interleaved float32 stereo; OUT: the main pair, planar (L frames, then R frames),
 *       as many frames as IN. Prints JSON: latency, output port channel counts, parameters.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clap/entry.h"
#include "clap/events.h"
#include "clap/ext/audio-ports.h"
#include "clap/ext/latency.h"
#include "clap/ext/params.h"
#include "clap/host.h"
#include "clap/plugin-factory.h"
#include "clap/process.h"

#define MAX_PORTS 16

static void host_noop(const clap_host_t *h) {}
/* DPF's CLAP wrapper tells the host about latency changes through this extension (and
 * does not check for its absence); the host reads the new value with latency->get. */
static const clap_host_latency_t host_latency = {host_noop};
static const void *host_get_extension(const clap_host_t *h, const char *id) {
    return strcmp(id, CLAP_EXT_LATENCY) == 0 ? &host_latency : NULL;
}

static clap_event_param_value_t g_event;
static uint32_t g_event_count;
static uint32_t in_size(const clap_input_events_t *l) { return g_event_count; }
static const clap_event_header_t *in_get(const clap_input_events_t *l, uint32_t i) {
    return &g_event.header;
}
static bool out_push(const clap_output_events_t *l, const clap_event_header_t *e) { return true; }

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: clap_host PLUGIN.clap IN.f32 OUT.f32 RATE BLOCK\n");
        return 2;
    }
    double rate = atof(argv[4]);
    uint32_t block = (uint32_t)atoi(argv[5]);
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL); /* as DAWs load plugins */
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    const clap_plugin_entry_t *entry = dlsym(lib, "clap_entry");
    if (!entry || !entry->init(argv[1])) {
        fprintf(stderr, "no clap_entry or init failed\n");
        return 1;
    }
    const clap_plugin_factory_t *factory = entry->get_factory(CLAP_PLUGIN_FACTORY_ID);
    const clap_plugin_descriptor_t *desc = factory->get_plugin_descriptor(factory, 0);
    clap_host_t host = {CLAP_VERSION, NULL, "ls-clap-host", "livestems", "", "1",
                        host_get_extension, host_noop, host_noop, host_noop};
    const clap_plugin_t *plugin = factory->create_plugin(factory, &host, desc->id);
    if (!plugin || !plugin->init(plugin)) {
        fprintf(stderr, "create_plugin/init failed\n");
        return 1;
    }
    const clap_plugin_audio_ports_t *ports = plugin->get_extension(plugin, CLAP_EXT_AUDIO_PORTS);
    const clap_plugin_params_t *params = plugin->get_extension(plugin, CLAP_EXT_PARAMS);
    const clap_plugin_latency_t *latency = plugin->get_extension(plugin, CLAP_EXT_LATENCY);
    if (!ports || !params || !latency) {
        fprintf(stderr, "missing audio-ports, params or latency extension\n");
        return 1;
    }
    uint32_t n_out_ports = ports->count(plugin, false);
    uint32_t out_ch[MAX_PORTS];
    for (uint32_t i = 0; i < n_out_ports && i < MAX_PORTS; i++) {
        clap_audio_port_info_t info;
        ports->get(plugin, i, false, &info);
        out_ch[i] = info.channel_count;
    }
    /* "Offline render" on, as the first event of the first block */
    uint32_t n_params = params->count(plugin);
    clap_id offline_id = CLAP_INVALID_ID;
    void *offline_cookie = NULL; /* DPF reads the parameter through the cookie it gave */
    printf("{\"parameters\": [");
    for (uint32_t i = 0; i < n_params; i++) {
        clap_param_info_t info;
        params->get_info(plugin, i, &info);
        printf("%s\"%s\"", i ? ", " : "", info.name);
        if (!strcmp(info.name, "Offline render")) {
            offline_id = info.id;
            offline_cookie = info.cookie;
        }
    }
    printf("], ");
    memset(&g_event, 0, sizeof g_event);
    g_event.header = (clap_event_header_t){sizeof g_event, 0, CLAP_CORE_EVENT_SPACE_ID,
                                           CLAP_EVENT_PARAM_VALUE, 0};
    g_event.param_id = offline_id;
    g_event.cookie = offline_cookie;
    g_event.note_id = -1;
    g_event.port_index = g_event.channel = g_event.key = -1;
    g_event.value = 1.0;
    g_event_count = offline_id != CLAP_INVALID_ID;

    if (!plugin->activate(plugin, rate, 1, block) || !plugin->start_processing(plugin)) {
        fprintf(stderr, "activate/start_processing failed\n");
        return 1;
    }
    uint32_t lat = latency->get(plugin);

    FILE *f = fopen(argv[2], "rb");
    fseek(f, 0, SEEK_END);
    size_t total = (size_t)ftell(f) / (2 * sizeof(float));
    fseek(f, 0, SEEK_SET);
    float *x = malloc(total * 2 * sizeof(float));
    if (fread(x, sizeof(float), 2 * total, f) != 2 * total) return 1;
    fclose(f);
    float *y = calloc(2 * total, sizeof(float));

    float inl[block], inr[block];
    float *in_ptrs[2] = {inl, inr};
    float out_bufs[MAX_PORTS][2][block];
    float *out_ptrs[MAX_PORTS][2];
    clap_audio_buffer_t in_buf = {in_ptrs, NULL, 2, 0, 0}, out_buf[MAX_PORTS];
    for (uint32_t i = 0; i < n_out_ports; i++) {
        out_ptrs[i][0] = out_bufs[i][0];
        out_ptrs[i][1] = out_bufs[i][1];
        out_buf[i] = (clap_audio_buffer_t){out_ptrs[i], NULL, out_ch[i], 0, 0};
    }
    clap_input_events_t in_ev = {NULL, in_size, in_get};
    clap_output_events_t out_ev = {NULL, out_push};
    for (size_t a = 0; a < total; a += block) {
        uint32_t n = (uint32_t)(total - a < block ? total - a : block);
        for (uint32_t i = 0; i < n; i++) {
            inl[i] = x[2 * (a + i)];
            inr[i] = x[2 * (a + i) + 1];
        }
        clap_process_t p = {(int64_t)a, n, NULL, &in_buf, out_buf, 1, n_out_ports, &in_ev, &out_ev};
        plugin->process(plugin, &p);
        g_event_count = 0; /* the event is sent once */
        memcpy(y + a, out_bufs[0][0], n * sizeof(float));
        memcpy(y + total + a, out_bufs[0][1], n * sizeof(float));
    }
    plugin->stop_processing(plugin);
    plugin->deactivate(plugin);
    plugin->destroy(plugin);
    entry->deinit();
    f = fopen(argv[3], "wb");
    fwrite(y, sizeof(float), 2 * total, f);
    fclose(f);
    printf("\"latency\": %u, \"output_ports\": [", lat);
    for (uint32_t i = 0; i < n_out_ports; i++) printf("%s%u", i ? ", " : "", out_ch[i]);
    printf("]}\n");
    return 0;
}
