/* DistrhoPluginInfo.h: what the livestems plugin is, declared once for every format DPF
 * builds (LV2, VST3, CLAP): channels, latency, state, real-time safety, identifiers. */
#ifndef DISTRHO_PLUGIN_INFO_H_INCLUDED
#define DISTRHO_PLUGIN_INFO_H_INCLUDED

#define DISTRHO_PLUGIN_NAME "livestems"
#define DISTRHO_PLUGIN_URI "urn:livestems:stems"
#define DISTRHO_PLUGIN_CLAP_ID "dev.livestems.stems"
#define DISTRHO_PLUGIN_BRAND_ID Lvst
#define DISTRHO_PLUGIN_UNIQUE_ID Lstm

#define DISTRHO_PLUGIN_HAS_UI 0
#define DISTRHO_PLUGIN_IS_RT_SAFE 1 /* run() only calls livestems_process: plain C, no GIL */
#define DISTRHO_PLUGIN_IS_SYNTH 0

/* stereo in; out: main pair (what the "output" parameter selects), karaoke pair, then one
 * pair per stem slot (a model has at most LS_PLUGIN_STEM_SLOTS stems; unused slots are
 * silent). A fixed layout, because formats want port counts before a model is loaded. */
#define LS_PLUGIN_STEM_SLOTS 4
#define DISTRHO_PLUGIN_NUM_INPUTS 2
#define DISTRHO_PLUGIN_NUM_OUTPUTS (4 + 2 * LS_PLUGIN_STEM_SLOTS)

#define DISTRHO_PLUGIN_WANT_LATENCY 1 /* reported for the host's delay compensation */
#define DISTRHO_PLUGIN_WANT_STATE 0 /* parameters only: see LivestemsPlugin.cpp */
#define DISTRHO_PLUGIN_WANT_FULL_STATE 0
#define DISTRHO_PLUGIN_WANT_MIDI_INPUT 0 /* hosts map MIDI onto the parameters themselves */
#define DISTRHO_PLUGIN_WANT_PROGRAMS 0

#define DISTRHO_PLUGIN_LV2_CATEGORY "lv2:UtilityPlugin"
#define DISTRHO_PLUGIN_VST3_CATEGORIES "Fx|Tools"
#define DISTRHO_PLUGIN_CLAP_FEATURES "audio-effect", "utility", "stereo"

#endif
