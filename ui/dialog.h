/*
 * dialog.h - the Filters > Diffusion dialog (GTK through libgimpui): prompt, negative prompt,
 * model chooser, strength, seed, batch count, and under "Advanced" the sampler, schedule, steps,
 * CFG, model sampling, precision, prediction, fast decode and the LoRAs; text to image has a
 * "Hires fix" section too.
 * While a run goes on it shows a progress bar with step count and time left, a preview of the
 * picture in progress, and a Cancel button of its own.
 *
 * The dialog does not run the engine: it calls back into the plug-in (sdgp_run_fn) and gives it
 * a feedback object to report through. Every call here happens on the main thread.
 */
#ifndef SDGP_DIALOG_H
#define SDGP_DIALOG_H

#include <glib.h>

#include "../plugin/params.h"

// Runs one generation with params (already validated by the dialog), reporting through fb; keeps
// the GTK main loop turning while it waits. Returns FALSE and sets error on failure or cancel
// (G_IO_ERROR_CANCELLED), in which case the image must be untouched.
typedef gboolean (*sdgp_run_fn)(const sdgp_params *params, const sdgp_feedback *fb,
                                gpointer user_data, GError **error);

// Says what a run with params would make and need, for the dialog's Size row: a newly allocated
// text of one or two short lines such as "512 × 512 px — needs 3.1 GB", with *fits FALSE when
// the machine cannot give that much memory; NULL and error when it cannot tell (no model, no selection to inpaint). Called on
// the main thread between runs, a moment after the values change; must be quick (no weights).
typedef gchar *(*sdgp_estimate_fn)(const sdgp_params *params, gpointer user_data, gboolean *fits,
                                   GError **error);

struct sdg_recommendation;

// Says which settings the model and LoRAs of params recommend (sdg_recommend): fills *rec and
// returns its source, or NULL when nothing recommends any (or the model cannot be read). Called
// like the estimate function, a moment after the model, prompt or LoRAs change.
typedef const char *(*sdgp_recommend_fn)(const sdgp_params *params, gpointer user_data,
                                         struct sdg_recommendation *rec);

// Shows the dialog for mode, starting from *params. Generate calls run(); on success the dialog
// closes and returns TRUE with *params holding the values used; on an error the message is shown
// in the dialog and the user may change values and try again; Close returns FALSE. estimate
// (optional) fills the Size row; recommend (optional) sets the sampler, schedule, steps, CFG and
// model sampling once whenever what recommends them changes (params->recommended: the source
// applied last, so reopening the dialog keeps the user's changes); run, estimate and recommend
// get run_data.
gboolean sdgp_dialog_run(sdgp_mode mode, sdgp_params *params, sdgp_run_fn run,
                         sdgp_estimate_fn estimate, sdgp_recommend_fn recommend,
                         gpointer run_data);

#endif // SDGP_DIALOG_H
