// LivestemsPlugin.cpp: the livestems stem separator as a DPF plugin (LV2, VST3, CLAP).
//
// Stereo in. Out (see DistrhoPluginInfo.h): a main pair chosen by the "output" parameter
// (mix, karaoke or one stem), the karaoke pair, and one pair per stem slot. Parameters: the
// output selector, "offline" (wait for the model: for bouncing/exporting faster than real
// time), and gain/mute/solo per stem slot. The latency (the engine's: model + hop + host
// block, plus the resamplers when the host rate is not the model's) is reported with
// setLatency for delay compensation, and again whenever the rate or block size changes.
// State: the parameters, which every host saves with the project and restores. The model is
// $LIVESTEMS_MODEL (a built-in name or a JSON model path) or the default. It is not a DPF
// state string on purpose: in LV2, DPF implements host-visible state with the worker
// extension and atom ports, which the headless hosts (lv2file, lv2apply) do not provide:
// lv2file crashes on instantiation and lv2apply refuses the atom port.
//
// Threads (DPF's contract): run() is the real-time audio thread: it only calls
// livestems_process (plain C: never the GIL, no allocation, lock or log) and copies. The
// constructor and activate() run on a host thread that is not the audio thread, while the
// plugin is not processing; they build engine handles (Python starts on the first). setParameterValue may come from any thread: it only does atomic stores.

#include "DistrhoPlugin.hpp"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "livestems.h"

START_NAMESPACE_DISTRHO

namespace {

constexpr uint32_t kSlots = LS_PLUGIN_STEM_SLOTS;
enum : uint32_t {
    kParamOutput = 0,  // 0 mix, 1 karaoke, 2.. stem slot 1..
    kParamOffline,
    kParamStem0,  // then gain, mute, solo for each slot
    kParamCount = kParamStem0 + 3 * kSlots
};
enum : uint32_t { kOutMainL = 0, kOutKaraokeL = 2, kOutStem0L = 4 };
enum : uint32_t { kGroupMain = 0, kGroupKaraoke, kGroupStem0 };

}  // namespace

class LivestemsPlugin : public Plugin {
public:
    LivestemsPlugin() : Plugin(kParamCount, 0, 0) {
        fValues[kParamOutput] = 0.0f;
        fValues[kParamOffline] = 0.0f;
        for (uint32_t i = kParamStem0; i < kParamCount; i++) fValues[i] = 0.0f;
        // DPF also instantiates a "dummy" plugin to read its description (the LV2 ttl
        // generator, VST3/CLAP factories): that one must not start Python
        if (!isDummyInstance()) rebuild();
    }

    ~LivestemsPlugin() override {
        livestems_destroy(fHandle.exchange(nullptr));
    }

protected:
    // ---- description ----------------------------------------------------------------
    const char* getLabel() const override { return "livestems"; }
    const char* getDescription() const override {
        return "Real-time music source separation: stems, mix and karaoke, live.";
    }
    const char* getMaker() const override { return "livestems"; }
    const char* getHomePage() const override { return "https://github.com/livestems/livestems"; }
    const char* getLicense() const override { return "MIT"; }
    uint32_t getVersion() const override { return d_version(0, 1, 0); }
    int64_t getUniqueId() const override { return d_cconst('L', 's', 't', 'm'); }

    void initAudioPort(bool input, uint32_t index, AudioPort& port) override {
        const char* side = index % 2 ? "R" : "L";
        if (input) {
            port.groupId = kPortGroupStereo;
            port.name = index ? "In R" : "In L";
            port.symbol = index ? "in_r" : "in_l";
            return;
        }
        char name[32], symbol[32];
        if (index < kOutKaraokeL) {
            port.groupId = kGroupMain;
            std::snprintf(name, sizeof name, "Main %s", side);
            std::snprintf(symbol, sizeof symbol, "main_%c", index % 2 ? 'r' : 'l');
        } else if (index < kOutStem0L) {
            port.groupId = kGroupKaraoke;
            std::snprintf(name, sizeof name, "Karaoke %s", side);
            std::snprintf(symbol, sizeof symbol, "karaoke_%c", index % 2 ? 'r' : 'l');
        } else {
            const uint32_t slot = (index - kOutStem0L) / 2;
            port.groupId = kGroupStem0 + slot;
            std::snprintf(name, sizeof name, "Stem %u %s", slot + 1, side);
            std::snprintf(symbol, sizeof symbol, "stem%u_%c", slot + 1, index % 2 ? 'r' : 'l');
        }
        port.name = name;
        port.symbol = symbol;
    }

    // one port group per stereo pair; the first is the main bus (VST3, CLAP), the others
    // are auxiliary outputs a host can enable
    void initPortGroup(uint32_t groupId, PortGroup& group) override {
        char name[32], symbol[32];
        if (groupId == kGroupMain) {
            group.name = "Main";
            group.symbol = "main";
            return;
        }
        if (groupId == kGroupKaraoke) {
            group.name = "Karaoke";
            group.symbol = "karaoke";
            return;
        }
        std::snprintf(name, sizeof name, "Stem %u", groupId - kGroupStem0 + 1);
        std::snprintf(symbol, sizeof symbol, "stem%u", groupId - kGroupStem0 + 1);
        group.name = name;
        group.symbol = symbol;
    }

    void initParameter(uint32_t index, Parameter& p) override {
        p.hints = kParameterIsAutomatable;
        if (index == kParamOutput) {
            p.name = "Output";
            p.symbol = "output";
            p.hints |= kParameterIsInteger;
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = 1.0f + kSlots;
            ParameterEnumerationValue* v = new ParameterEnumerationValue[2 + kSlots];
            v[0].value = 0.0f;
            v[0].label = "Mix";
            v[1].value = 1.0f;
            v[1].label = "Karaoke";
            for (uint32_t s = 0; s < kSlots; s++) {
                char label[16];
                std::snprintf(label, sizeof label, "Stem %u", s + 1);
                v[2 + s].value = 2.0f + s;
                v[2 + s].label = label;
            }
            p.enumValues.count = 2 + kSlots;
            p.enumValues.restrictedMode = true;
            p.enumValues.values = v;
            return;
        }
        if (index == kParamOffline) {
            p.name = "Offline render";
            p.symbol = "offline";
            // automatable only because LV2's "not automatable" is a kxstudio extension that
            // lv2_validate does not know; hosts have no reason to automate it
            p.hints |= kParameterIsBoolean | kParameterIsInteger;
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = 1.0f;
            return;
        }
        const uint32_t slot = (index - kParamStem0) / 3, kind = (index - kParamStem0) % 3;
        char name[32], symbol[32];
        static const char* const kKind[3] = {"gain", "mute", "solo"};
        std::snprintf(name, sizeof name, "Stem %u %s", slot + 1, kKind[kind]);
        std::snprintf(symbol, sizeof symbol, "stem%u_%s", slot + 1, kKind[kind]);
        p.name = name;
        p.symbol = symbol;
        if (kind == 0) {
            p.unit = "dB";
            p.ranges.def = 0.0f;
            p.ranges.min = -120.0f;
            p.ranges.max = 12.0f;
        } else {
            p.hints |= kParameterIsBoolean | kParameterIsInteger;
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = 1.0f;
        }
    }

    // ---- parameters: any thread, atomic stores only ----------------------------------
    float getParameterValue(uint32_t index) const override {
        return index < kParamCount ? fValues[index].load(std::memory_order_relaxed) : 0.0f;
    }

    void setParameterValue(uint32_t index, float value) override {
        if (index >= kParamCount) return;
        fValues[index].store(value, std::memory_order_relaxed);
        apply(fHandle.load(std::memory_order_acquire), index, value);
    }

    // ---- configuration: not the audio thread, and never while run() is running ----
    // Hosts announce the rate and the block size one after the other (and some several
    // times): the handle is rebuilt once, when processing starts, if either changed.
    void activate() override {
        if (getSampleRate() != fBuiltRate || getBufferSize() != fBuiltBlock) rebuild();
    }

    // ---- the audio thread ---------------------------------------------------------
    void run(const float** inputs, float** outputs, uint32_t frames) override {
        livestems_t* h = fHandle.load(std::memory_order_acquire);
        const uint32_t nstems = fStems.load(std::memory_order_relaxed);
        // the engine writes into our own buffers, not the host's: hosts may hand the same
        // scratch buffer for every inactive output (DPF's VST3 does for auxiliary buses), so
        // a host buffer cannot hold one output while another is written
        const uint32_t n = 2 * nstems + 4;  // the API's order: stems, mix, karaoke
        float* out[2 * kSlots + 4];
        for (uint32_t i = 0; i < n; i++) out[i] = fScratch[i].data();
        if (frames > fMaxBlock || livestems_process(h, inputs, 2, out, n, frames) != LIVESTEMS_OK) {
            for (uint32_t i = 0; i < DISTRHO_PLUGIN_NUM_OUTPUTS; i++)
                std::memset(outputs[i], 0, frames * sizeof(float));
            return;  // no handle (the model failed to load) or a host bug: silence
        }
        const size_t bytes = frames * sizeof(float);
        for (uint32_t s = 0; s < kSlots; s++)
            for (uint32_t c = 0; c < 2; c++) {
                float* dst = outputs[kOutStem0L + 2 * s + c];
                if (s < nstems) std::memcpy(dst, out[2 * s + c], bytes);
                else std::memset(dst, 0, bytes);  // slots this model does not fill
            }
        std::memcpy(outputs[kOutKaraokeL], out[n - 2], bytes);
        std::memcpy(outputs[kOutKaraokeL + 1], out[n - 1], bytes);
        // the main pair last: 0 mix, 1 karaoke, 2.. a stem slot (an empty slot is silent)
        const uint32_t sel = static_cast<uint32_t>(fValues[kParamOutput].load() + 0.5f);
        for (uint32_t c = 0; c < 2; c++) {
            if (sel == 0) std::memcpy(outputs[kOutMainL + c], out[n - 4 + c], bytes);
            else if (sel == 1) std::memcpy(outputs[kOutMainL + c], out[n - 2 + c], bytes);
            else if (sel - 2 < nstems) std::memcpy(outputs[kOutMainL + c], out[2 * (sel - 2) + c], bytes);
            else std::memset(outputs[kOutMainL + c], 0, bytes);
        }
    }

private:
    static void apply(livestems_t* h, uint32_t index, float value) {
        if (!h) return;
        if (index == kParamOffline) {
            livestems_set_offline(h, value >= 0.5f);
        } else if (index >= kParamStem0) {
            const uint32_t slot = (index - kParamStem0) / 3, kind = (index - kParamStem0) % 3;
            livestems_set_param(h, 4 * slot + kind, value);  // unknown slots: ERR_PARAM, ignored
        }
    }

    // A handle for the current rate, block size and model, replacing the old one. Called
    // only from the constructor and activate(), never while run() may be running.
    void rebuild() {
        const uint32_t block = getBufferSize();
        const double rate = getSampleRate();
        if (block == 0 || rate <= 0.0) return;
        fBuiltRate = rate;
        fBuiltBlock = block;
        const char* model = std::getenv("LIVESTEMS_MODEL");
        livestems_config_t cfg{};
        cfg.struct_size = sizeof cfg;
        cfg.api_version = LIVESTEMS_API_VERSION;
        cfg.model = model;
        cfg.sample_rate = rate;
        cfg.max_block = block;
        cfg.in_channels = 2;
        livestems_t* h = nullptr;
        if (livestems_create(&cfg, &h) != LIVESTEMS_OK) {
            std::fprintf(stderr, "livestems plugin: %s\n", livestems_last_error());
            h = nullptr;  // outputs stay silent until a working model is set
        }
        uint32_t nstems = 0, latency = 0;
        if (h) {
            livestems_stem_count(h, &nstems);
            livestems_latency_samples(h, &latency);
            if (nstems > kSlots) nstems = kSlots;
            for (uint32_t i = 0; i < kParamCount; i++) apply(h, i, fValues[i].load());
        }
        for (auto& b : fScratch) b.assign(block, 0.0f);
        fMaxBlock = block;
        fStems.store(nstems, std::memory_order_relaxed);
        livestems_destroy(fHandle.exchange(h, std::memory_order_acq_rel));
        setLatency(latency);
    }

    std::atomic<float> fValues[kParamCount];
    std::atomic<livestems_t*> fHandle{nullptr};
    std::atomic<uint32_t> fStems{0};
    uint32_t fMaxBlock = 0;
    double fBuiltRate = 0.0;  // what the current handle was built for
    uint32_t fBuiltBlock = 0;
    std::vector<float> fScratch[2 * kSlots + 4];  // the engine's outputs, [max block] each

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(LivestemsPlugin)
};

Plugin* createPlugin() { return new LivestemsPlugin(); }

END_NAMESPACE_DISTRHO
