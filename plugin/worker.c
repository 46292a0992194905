/*
 * worker.c - the engine on a worker thread, its progress marshalled to the main thread.
 *
 * The worker thread only touches the engine and a small mutex-guarded mailbox (latest step,
 * latest preview, done). It wakes the default main context after each post; the main thread
 * sleeps in g_main_context_iteration(), which also runs the dialog's GTK events, empties the
 * mailbox into the feedback callbacks and polls Cancel. Nothing here calls libgimp or GTK.
 *
 * The model stays loaded between runs of one plug-in process (the dialog may generate again
 * after an error); sdgp_worker_shutdown() frees it. Before the first run the dialog sizes runs
 * with the file's header only (sdgp_worker_estimate_model), which costs milliseconds, not the
 * seconds and gigabytes of loading the weights.
 */
#include <string.h>

#include <gio/gio.h>

#include "worker.h"
#include "core.h"

typedef struct worker {
  // Inputs, read-only while the thread runs. model_path NULL = generate with the loaded model.
  const char     *model_path, *vocab_path, *models_dir;
  sdg_prediction  prediction;
  sdg_gen_params  gp;
  int             n_threads;   // 0 = every processor

  // Mailbox, under lock.
  GMutex          lock;
  sdg_ctx        *ctx;            // set while sdg_generate may run, for sdg_ctx_cancel()
  int             step, total;
  gboolean        step_new;
  float          *preview;        // owned, pw*ph*3
  int             pw, ph;
  gboolean        preview_new;

  gint            cancel;         // atomic: the user asked to stop
  gint            done;           // atomic: the thread has finished (result/err are final)

  // Thread's results.
  gboolean        ok;
  sdg_result     *result;
  sdg_error       err;
} worker;

// The model kept between runs, and what it was loaded from. Only the worker thread touches
// these while it runs; the main thread only after joining it.
static sdg_model *cached_model;
static char      *cached_key;

// A header-only model for sizing runs before the real one is loaded (main thread only).
static sdg_model *shell_model;
static char      *shell_key;

static char *
model_key (const char     *model_path,
           const char     *vocab_path,
           const char     *models_dir,
           sdg_prediction  prediction)
{
  return g_strjoin ("\n", model_path, vocab_path ? vocab_path : "", models_dir ? models_dir : "",
                    sdg_prediction_name (prediction), NULL);
}

static bool
worker_progress (int step, int total, const sdg_image *preview, void *user_data)
{
  worker *w = user_data;

  g_mutex_lock (&w->lock);
  w->step = step;
  w->total = total;
  w->step_new = TRUE;
  if (preview && preview->data && preview->channels == 3 && preview->width > 0 &&
      preview->height > 0)
    {
      gsize n = (gsize) preview->width * (gsize) preview->height * 3;

      if (! w->preview || (gsize) w->pw * (gsize) w->ph * 3 != n)
        {
          g_free (w->preview);
          w->preview = g_try_malloc (n * sizeof (float));
        }
      if (w->preview)
        {
          memcpy (w->preview, preview->data, n * sizeof (float));
          w->pw = preview->width;
          w->ph = preview->height;
          w->preview_new = TRUE;
        }
    }
  g_mutex_unlock (&w->lock);
  g_main_context_wakeup (NULL);
  return ! g_atomic_int_get (&w->cancel);
}

static void
worker_load_model (worker *w)
{
  sdg_model_params mp = sdg_model_default_params ();
  char            *key;

  mp.vocab_path = w->vocab_path;
  mp.models_dir = w->models_dir;
  mp.prediction = w->prediction;
  key = model_key (w->model_path, w->vocab_path, w->models_dir, w->prediction);
  if (cached_model && g_strcmp0 (key, cached_key) == 0)
    {
      g_free (key);
      w->ok = TRUE;
      return;
    }
  sdg_model_free (cached_model);
  g_free (cached_key);
  cached_key = NULL;
  cached_model = sdg_model_load (w->model_path, &mp, &w->err);
  if (cached_model)
    cached_key = key;
  else
    g_free (key);
  w->ok = cached_model != NULL;
}

static void
worker_generate (worker *w)
{
  sdg_ctx *ctx = sdg_ctx_new (cached_model, w->n_threads, &w->err);

  if (! ctx)
    return;
  g_mutex_lock (&w->lock);
  w->ctx = ctx;
  g_mutex_unlock (&w->lock);

  // A Cancel before this point: sdg_generate clears the ctx flag when it starts, but the
  // progress callback's step-0 call sees w->cancel and stops before any step.
  w->gp.progress = worker_progress;
  w->gp.progress_data = w;
  w->ok = sdg_generate (ctx, &w->gp, &w->result, &w->err) == SDG_OK;

  g_mutex_lock (&w->lock);
  w->ctx = NULL;
  g_mutex_unlock (&w->lock);
  sdg_ctx_free (ctx);
}

static gpointer
worker_main (gpointer data)
{
  worker *w = data;

  if (w->model_path)
    worker_load_model (w);
  else if (cached_model)
    worker_generate (w);
  else
    g_strlcpy (w->err.message, "no model is loaded", sizeof w->err.message);
  g_atomic_int_set (&w->done, 1);
  g_main_context_wakeup (NULL);
  return NULL;
}

// Main thread: hands the newest step and preview to the feedback.
static void
worker_dispatch (worker              *w,
                 const sdgp_feedback *fb,
                 GTimer              *timer,
                 int                 *first_step)
{
  int      step = 0, total = 0;
  gboolean step_new, preview_new;
  float   *preview = NULL;
  int      pw = 0, ph = 0;

  g_mutex_lock (&w->lock);
  step_new = w->step_new;
  preview_new = w->preview_new;
  step = w->step;
  total = w->total;
  if (preview_new)
    {
      preview = w->preview;   // take it; the thread allocates a new one
      w->preview = NULL;
      pw = w->pw;
      ph = w->ph;
    }
  w->step_new = w->preview_new = FALSE;
  g_mutex_unlock (&w->lock);

  if (step_new && fb && fb->progress)
    {
      double left = -1.0;

      // Time per step measured from the first report, so model loading does not count.
      if (*first_step < 0)
        {
          *first_step = step;
          g_timer_start (timer);
        }
      else if (step > *first_step && total > 0)
        left = g_timer_elapsed (timer, NULL) / (step - *first_step) * (total - step);
      fb->progress (fb->ui, step, total, left);
    }
  if (preview && fb && fb->preview)
    fb->preview (fb->ui, preview, pw, ph);
  g_free (preview);
}

static void
worker_cancel (worker *w)
{
  g_atomic_int_set (&w->cancel, 1);
  g_mutex_lock (&w->lock);
  if (w->ctx)
    sdg_ctx_cancel (w->ctx);
  g_mutex_unlock (&w->lock);
}

// Runs w on a thread and waits, turning the default main context. FALSE and error when the
// thread could not start or the run failed or was cancelled.
static gboolean
worker_run (worker              *w,
            const sdgp_feedback *fb,
            GError             **error)
{
  GThread *thread;
  GTimer  *timer;
  GError  *thread_error = NULL;
  int      first_step = -1;

  g_mutex_init (&w->lock);
  thread = g_thread_try_new ("sdg-worker", worker_main, w, &thread_error);
  if (! thread)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not start the engine thread: %s",
                   thread_error->message);
      g_error_free (thread_error);
      g_mutex_clear (&w->lock);
      return FALSE;
    }

  timer = g_timer_new ();
  while (! g_atomic_int_get (&w->done))
    {
      // Sleeps until the worker posts (g_main_context_wakeup) or a GTK event arrives.
      g_main_context_iteration (NULL, TRUE);
      worker_dispatch (w, fb, timer, &first_step);
      if (fb && fb->cancelled && fb->cancelled (fb->ui))
        worker_cancel (w);
    }
  g_thread_join (thread);
  worker_dispatch (w, fb, timer, &first_step);
  g_timer_destroy (timer);
  g_free (w->preview);
  w->preview = NULL;
  g_mutex_clear (&w->lock);

  if (w->ok && ! g_atomic_int_get (&w->cancel))
    return TRUE;
  if (w->err.status == SDG_ERR_CANCELLED || g_atomic_int_get (&w->cancel))
    g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "Cancelled.");
  else if (w->model_path)
    g_set_error (error, SDGP_ERROR, SDGP_ERROR_MODEL, "Could not load the model '%s': %s",
                 w->model_path, w->err.message);
  else if (w->err.status == SDG_ERR_NOMEM)
    g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Not enough memory: %s.", w->err.message);
  else
    g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "The engine failed: %s",
                 w->err.message[0] ? w->err.message : sdg_status_name (w->err.status));
  return FALSE;
}

gboolean
sdgp_worker_load (const char          *model_path,
                  const char          *vocab_path,
                  const char          *models_dir,
                  sdg_prediction       prediction,
                  const sdgp_feedback *fb,
                  sdg_model_info      *info,
                  GError             **error)
{
  worker w;

  memset (&w, 0, sizeof w);
  w.model_path = model_path;
  w.vocab_path = vocab_path;
  w.models_dir = models_dir;
  w.prediction = prediction;
  if (! worker_run (&w, fb, error))
    return FALSE;
  sdg_model_get_info (cached_model, info);
  return TRUE;
}

sdg_result *
sdgp_worker_generate (const sdg_gen_params *gp,
                      int                   n_threads,
                      const sdgp_feedback  *fb,
                      GError              **error)
{
  worker w;

  memset (&w, 0, sizeof w);
  w.gp = *gp;
  w.n_threads = n_threads;
  w.gp.preview = fb && fb->preview;
  if (! worker_run (&w, fb, error))
    {
      sdg_result_free (w.result);
      return NULL;
    }
  return w.result;
}

const sdg_model *
sdgp_worker_estimate_model (const char     *model_path,
                            const char     *vocab_path,
                            const char     *models_dir,
                            sdg_prediction  prediction,
                            GError        **error)
{
  sdg_model_params mp = sdg_model_default_params ();
  sdg_error        err = { 0 };
  char            *key = model_key (model_path, vocab_path, models_dir, prediction);

  if (cached_model && g_strcmp0 (key, cached_key) == 0)
    {
      g_free (key);
      return cached_model;
    }
  if (shell_model && g_strcmp0 (key, shell_key) == 0)
    {
      g_free (key);
      return shell_model;
    }
  sdg_model_free (shell_model);
  g_free (shell_key);
  shell_key = NULL;
  mp.vocab_path = vocab_path;
  mp.models_dir = models_dir;
  mp.prediction = prediction;
  mp.header_only = TRUE;
  shell_model = sdg_model_load (model_path, &mp, &err);
  if (! shell_model)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_MODEL, "Could not read the model '%s': %s",
                   model_path, err.message);
      g_free (key);
      return NULL;
    }
  shell_key = key;
  return shell_model;
}

void
sdgp_worker_shutdown (void)
{
  sdg_model_free (cached_model);
  cached_model = NULL;
  g_free (cached_key);
  cached_key = NULL;
  sdg_model_free (shell_model);
  shell_model = NULL;
  g_free (shell_key);
  shell_key = NULL;
}
