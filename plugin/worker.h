/*
 * worker.h - runs the engine (model load + sdg_generate) on a GThread while the calling (main)
 * thread keeps the default GMainContext turning, so the dialog stays live and every libgimp/GTK
 * call stays on the main thread. Progress and previews cross back through the main context;
 * the feedback's cancelled() is polled on the main thread and turned into sdg_ctx_cancel().
 *
 * Not here: any libgimp call, region maths or pixel I/O.
 */
#ifndef SDGP_WORKER_H
#define SDGP_WORKER_H

#include <glib.h>

#include "sdg.h"
#include "params.h"

// Loads model_path (with vocab_path / models_dir, either may be NULL, and the prediction
// setting) on the worker thread, or keeps the model already loaded from the same files and
// setting, and fills info. Blocks the caller
// while the main context turns; fb (optional) is polled for Cancel. FALSE and error
// (SDGP_ERROR_MODEL, or G_IO_ERROR_CANCELLED) on failure.
gboolean    sdgp_worker_load (const char          *model_path,
                              const char          *vocab_path,
                              const char          *models_dir,
                              sdg_prediction       prediction,
                              const sdgp_feedback *fb,
                              sdg_model_info      *info,
                              GError             **error);

// Runs gp with the loaded model on the worker thread, blocking the caller until it ends. fb
// (optional) is called on the calling thread only. gp's progress fields are the worker's own
// (ignored). n_threads: the engine's thread count (0 = every processor). Returns the result, or NULL with error set (G_IO_ERROR_CANCELLED in domain
// G_IO_ERROR when cancelled, else SDGP_ERROR).
sdg_result *sdgp_worker_generate (const sdg_gen_params *gp,
                                  int                   n_threads,
                                  const sdgp_feedback  *fb,
                                  GError              **error);

// The model to size runs with (sdg_ctx_estimate), on the calling (main) thread and never while
// a run goes on: the loaded model when it came from the same files, else the file's header only
// (sdg_model_params.header_only: no weights), kept for the next call. NULL and error
// (SDGP_ERROR_MODEL) when the file cannot be read. Valid until the next call or shutdown.
const sdg_model *sdgp_worker_estimate_model (const char     *model_path,
                                             const char     *vocab_path,
                                             const char     *models_dir,
                                             sdg_prediction  prediction,
                                             GError        **error);

// Frees the model kept loaded between runs (the dialog may generate several times) and the
// header-only one.
void        sdgp_worker_shutdown (void);

#endif // SDGP_WORKER_H
