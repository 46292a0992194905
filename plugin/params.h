/*
 * params.h - what a Filters > Diffusion run is asked to do: one struct per run, shared by the
 * procedures (PDB arguments), the dialog (widgets) and the remembered last values; and the
 * feedback a run reports its progress through.
 *
 * Fixed-size and pointer-free on purpose: gimp_set_data()/gimp_get_data() store it as bytes.
 * Fields that are not procedure arguments (models_dir, random_seed, color_match, precision,
 * prediction, fast_decode, schedule, model_sampling, the hires fix, recommended) are
 * the dialog's own settings: GIMP 2 remembers them with the rest of the struct, GIMP 3 declares
 * them as auxiliary arguments (gimp3/main.c).
 * Not here: anything of libgimp or GTK. Of the engine only the sdg_lora list that the loras
 * text turns into (sdgp_params_loras), declared incomplete so that the dialog needs no sdg.h.
 */
#ifndef SDGP_PARAMS_H
#define SDGP_PARAMS_H

#include <glib.h>

typedef enum sdgp_mode {
    SDGP_TEXT_TO_IMAGE = 0,
    SDGP_IMAGE_TO_IMAGE = 1,
    SDGP_INPAINT = 2,
    SDGP_MODE_COUNT
} sdgp_mode;

typedef struct sdgp_params {
    gchar prompt[2048];
    gchar negative_prompt[2048];
    gchar model[1024];          // checkpoint path; "" = the bundled default model
    gchar models_dir[1024];     // folder the dialog lists checkpoints from; "" = the default
    gchar sampler[32];          // engine sampler name ("euler_a", ...)
    gchar precision[16];        // engine precision name: "default", "exact" or "fast". Set in the
                                // dialog and remembered, never a PDB argument (procedure calls
                                // run "default"). Keep it right after sampler: the GIMP 2 test
                                // (tests/gimp/test-precision.scm) writes it into the stored last
                                // values at its byte offset, 6176
    gint steps;
    gdouble cfg_scale;
    gint32 seed;                // -1 = a new random seed each run
    gboolean random_seed;       // dialog: draw a new seed each run
    gint batch_count;
    gdouble strength;           // image-to-image and inpaint
    gboolean color_match;       // inpaint: match colours to the surroundings
    gchar prediction[8];        // engine prediction name: "auto" (the file says), "eps" or "v".
                                // A dialog setting like precision (calls run "auto")
    gboolean fast_decode;       // decode with TAESD instead of the model's VAE. A dialog setting
                                // like precision (calls decode with the VAE)
    gchar loras[4096];          // LoRAs to apply: entries FILE or FILE:WEIGHT (weight -10..10,
                                // 1 when left out) separated by newlines or ';'; "" = none
                                // (sdgp_params_loras). Keep new fields at the end: the byte
                                // offsets above are read by the GIMP 2 tests, and values a GIMP
                                // 2 profile stored before a field was added stay readable
    // Dialog settings like precision (procedure calls run "default", no hires fix); GIMP 2's
    // tests write them at their byte offsets (params.c checks them at build time).
    gchar schedule[16];         // engine schedule name ("default", "karras", ...); byte 10344
    gchar model_sampling[16];   // "default" or "lcm" (sdg_model_sampling); byte 10360
    gboolean hires;             // text-to-image: the hires fix's second pass; byte 10376
    gint hires_steps;           // its steps, 0 = steps
    gdouble hires_scale;        // "Upscale by", 1 to 4: the second pass at the first's size x
                                // this, capped at the region's size (sdgp_region_hires_size)
    gdouble hires_strength;     // its denoising strength, 0 to 1
    gchar hires_upscale[8];     // "latent" or "pixel" (sdg_hires_upscale); byte 10400
    gchar recommended[32];      // the dialog: the source of the recommendation (sdg_recommend)
                                // last applied to the values, "" for none, so that reopening
                                // the dialog does not apply it again over the user's changes
} sdgp_params;

// How a run reports while it goes on: to the dialog (ui is the dialog's own pointer), or to
// GIMP's progress bar in non-interactive runs. Every callback is called on the main thread.
typedef struct sdgp_feedback {
    void (*progress)(gpointer ui, int step, int total, double seconds_left);   // seconds_left < 0: unknown
    void (*preview)(gpointer ui, const float *rgb, int width, int height);     // interleaved RGB [0,1]
    gboolean (*cancelled)(gpointer ui);                                         // the user pressed Cancel
    gpointer ui;
} sdgp_feedback;

// The values a first run starts from, per mode.
void sdgp_params_init(sdgp_params *p, sdgp_mode mode);

struct sdg_lora;

// The LoRAs p->loras names, for sdg_gen_params.loras: *loras (NULL when there are none) is one
// block holding the array and its paths, g_free it; *n_loras its length. Entries are trimmed and
// empty ones skipped; an entry is split at its last ':' unless what follows holds a slash or a
// backslash (C:\dir\a.safetensors is a file) or the whole entry names a file. FALSE and error (SDGP_ERROR_INVALID) naming the entry
// for a file that does not exist, a weight outside -10..10, or an entry that is malformed.
gboolean sdgp_params_loras(const sdgp_params *p, struct sdg_lora **loras, int *n_loras,
                           GError **error);

#endif // SDGP_PARAMS_H
