/*
 * dialog.c - the Filters > Diffusion dialog for GIMP 2.10 (GTK 2 through libgimpui-2.0) and
 * GIMP 3 (GTK 3 through libgimpui-3.0). The few calls that differ sit behind the helpers of
 * "GTK 2 / GTK 3" below; the GTK 2 build is unchanged by them.
 *
 * Left: prompt and negative prompt, model chooser (the bundled default plus every .safetensors
 * checkpoint in the models folder) with its folder, strength (image-to-image and inpaint), seed,
 * batch count, "Match colours" (inpaint), the Size row (the size the picture is generated at and
 * the memory the run needs, from the plug-in's estimate function; bold when the machine cannot
 * give that much), and under "Advanced" the sampler, steps, CFG, precision, prediction, fast
 * decode and the LoRAs.
 * Right: a preview of the picture in progress, a progress bar with step count and time left, and
 * a Cancel button of our own (GIMP's status-bar cancel kills the plug-in outright).
 *
 * Not here: the engine, threads, pixels and the PDB. Generate hands the values to the plug-in's
 * run function, which keeps the main loop turning and reports back through sdgp_feedback; every
 * call in this file happens on the main thread.
 *
 * Test hook: with SDGP_DIALOG_SCREENSHOT=/path.png in the environment the dialog opens with
 * "Advanced" expanded, saves a picture of itself to that file shortly after it is drawn, and
 * closes as if the user pressed Close. When the path is a folder, the picture is
 * FOLDER/dialog-gimpN-MODE.png (N: 2 or 3; MODE: text-to-image, image-to-image, inpaint), so one GIMP
 * session can photograph every mode. With SDGP_DIALOG_AUTORUN=1 as well, the dialog presses
 * Generate instead and is photographed half-way through the run (FOLDER/...-MODE-running.png),
 * or with its error message when the run fails (then it closes). Beside each picture the hook
 * writes the dialog's controls as text (the same name, .txt): one line per label, combo box (its
 * items and the active one) and tooltip, so tests can check what the dialog offers.
 */
#include <string.h>

#include <gio/gio.h>
#include <libgimp/gimp.h>
#if GIMP_CHECK_VERSION (2, 99, 0)
// GIMP 3.0's gimpspinscale.h declares a `const guint` return, which -Wextra flags; not ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-qualifiers"
#include <libgimp/gimpui.h>
#pragma GCC diagnostic pop
#else
#include <libgimp/gimpui.h>
#endif

#include "sdg.h"
#include "ui/dialog.h"

#ifndef SDGP_MODELS_DIR
#define SDGP_MODELS_DIR "/usr/local/share/gimp-diffusion/models"
#endif

// The bundled default model's file in the models folder; it is listed once, as "Default model".
#define DEFAULT_MODEL_FILE "sdg-default.safetensors"

#define PREVIEW_SIZE 200
#define RESPONSE_GENERATE GTK_RESPONSE_OK
// The Size row is recomputed this long after the last change (typing a prompt changes it often).
#define ESTIMATE_DELAY_MS 200

static const gchar loras_tooltip[] =
  "LoRA files to apply, one per line (or separated by ';'): FILE or FILE:WEIGHT, e.g. "
  "/home/me/loras/style.safetensors:0.8; the weight (-10 to 10) is 1 when left out. "
  "The prompt may name LoRAs too, as <lora:NAME:WEIGHT>: NAME.safetensors in the loras folder "
  "of the models folder, or in a loras (or Lora) folder beside the model's folder. "
  "The layer's parasite records the files and weights";

static const gchar size_tooltip[] =
  "The size the picture is generated at (then scaled to the selection or image), and the memory "
  "the run needs at its peak: the model's weights, the engine's working memory and the "
  "plug-in's copies of the pictures. A run that needs more than the machine has is refused";

// ---------------------------------------------------------------------------------------------
// Per-model defaults, applied when the user picks a model. Checkpoints carry no cheap hint of
// their preferred settings, so every checkpoint gets the SD1 defaults; the bundled default model
// has its own row.

typedef struct model_defaults {
  gboolean bundled;     // the row for the bundled default model ("" in params.model)
  gint steps;
  gdouble cfg_scale;
  const gchar *sampler;
  const gchar *schedule;
  const gchar *model_sampling;
} model_defaults;

// A distilled model's own settings come from sdg_recommend (recommend_update), a moment later.
static const model_defaults model_defaults_table[] = {
  { TRUE,  20, 7.0, "euler_a", "default", "default" },   // as sdgp_params_init
  { FALSE, 20, 7.0, "euler_a", "default", "default" },   // any checkpoint
};

static const gchar schedule_tooltip[] =
  "The noise levels the steps go through. Default: k-diffusion's (A1111's); karras and "
  "exponential spend more steps on the fine detail; trailing is what SD-Turbo and "
  "SDXL-Lightning were made for, sgm_uniform LCM's. The layer's parasite records it";

static const gchar model_sampling_tooltip[] =
  "How the model was trained to be sampled: Default for ordinary checkpoints, LCM for "
  "latent-consistency-distilled ones (LCM checkpoints and LCM-LoRA merges; with the LCM "
  "sampler, 4-8 steps and CFG 1-2). The file does not say it";

static const gchar hires_tooltip[] =
  "Make the picture at about the model's own size, then make it bigger and refine it there with "
  "a second, image-to-image pass (A1111's Hires. fix): more detail than the model gives at its "
  "own size, without the repeated subjects of a big first pass. The second pass's size is the "
  "first's times Upscale by, never bigger than the selection or image it is placed in";

// The model sampling combo's labels, indexed by sdg_model_sampling.
static const gchar *const model_sampling_labels[] = {
  [SDG_MODEL_SAMPLING_DEFAULT] = "Default",
  [SDG_MODEL_SAMPLING_LCM] = "LCM",
};

// The hires fix's upscale combo labels, indexed by sdg_hires_upscale.
static const gchar *const hires_upscale_labels[] = {
  [SDG_HIRES_LATENT] = "Latent",
  [SDG_HIRES_PIXEL] = "Pixel",
};

// Friendlier labels for the engine's sampler names, indexed by sdg_sampler.
static const gchar *const sampler_labels[] = {
  [SDG_SAMPLER_EULER] = "Euler",
  [SDG_SAMPLER_EULER_A] = "Euler ancestral",
  [SDG_SAMPLER_HEUN] = "Heun",
  [SDG_SAMPLER_DPMPP_2M] = "DPM++ 2M",
  [SDG_SAMPLER_LMS] = "LMS",
  [SDG_SAMPLER_DDIM] = "DDIM",
  [SDG_SAMPLER_LCM] = "LCM",
  [SDG_SAMPLER_DPMPP_2M_SDE] = "DPM++ 2M SDE",
  [SDG_SAMPLER_DPMPP_SDE] = "DPM++ SDE",
};

// The precision combo's labels, indexed by sdg_precision.
static const gchar *const precision_labels[] = {
  [SDG_PRECISION_DEFAULT] = "Default",
  [SDG_PRECISION_EXACT] = "Exact",
  [SDG_PRECISION_FAST] = "Fast",
};

// The prediction combo's labels, indexed by sdg_prediction.
static const gchar *const prediction_labels[] = {
  [SDG_PREDICTION_AUTO] = "Auto (what the file says)",
  [SDG_PREDICTION_EPS] = "Noise (eps)",
  [SDG_PREDICTION_V] = "Velocity (v)",
};

static const gchar *const mode_titles[SDGP_MODE_COUNT] = {
  [SDGP_TEXT_TO_IMAGE] = "Diffusion: Text to Image",
  [SDGP_IMAGE_TO_IMAGE] = "Diffusion: Image to Image",
  [SDGP_INPAINT] = "Diffusion: Inpaint",
};

static const gchar *const mode_names[SDGP_MODE_COUNT] = {
  [SDGP_TEXT_TO_IMAGE] = "text-to-image",
  [SDGP_IMAGE_TO_IMAGE] = "image-to-image",
  [SDGP_INPAINT] = "inpaint",
};

static const gchar *const mode_help_ids[SDGP_MODE_COUNT] = {
  [SDGP_TEXT_TO_IMAGE] = "plug-in-diffusion-text-to-image",
  [SDGP_IMAGE_TO_IMAGE] = "plug-in-diffusion-image-to-image",
  [SDGP_INPAINT] = "plug-in-diffusion-inpaint",
};

enum { MODEL_COL_LABEL, MODEL_COL_PATH, MODEL_N_COLS };

typedef struct dialog {
  sdgp_mode mode;
  const sdgp_params *start;     // borrowed: the caller's values the dialog opened with

  GtkWidget *dialog;
  GtkWidget *inputs;            // everything the user edits; insensitive while running
  GtkWidget *prompt_view;
  GtkWidget *negative_view;
  GtkWidget *model_combo;
  GtkListStore *model_store;    // owned by model_combo
  GtkWidget *folder_button;
  GtkAdjustment *strength_adj;  // NULL in text-to-image
  GtkWidget *seed_spin;
  GtkWidget *random_toggle;
  GtkWidget *dice_button;
  GtkAdjustment *batch_adj;
  GtkWidget *color_match_toggle;   // NULL unless inpaint
  GtkWidget *expander;
  GtkWidget *sampler_combo;
  GtkWidget *schedule_combo;
  GtkAdjustment *steps_adj;
  GtkAdjustment *cfg_adj;
  GtkWidget *model_sampling_combo;
  GtkWidget *hires_expander;    // NULL unless text to image, as are the hires widgets
  GtkWidget *hires_toggle;
  GtkWidget *hires_table;       // the rows the toggle makes sensitive
  GtkAdjustment *hires_scale_adj;
  GtkWidget *hires_upscale_combo;
  GtkAdjustment *hires_strength_adj;
  GtkAdjustment *hires_steps_adj;
  GtkWidget *precision_combo;
  GtkWidget *prediction_combo;
  GtkWidget *fast_decode_toggle;
  GtkWidget *loras_view;
  GtkSizeGroup *label_group;    // lines up the labels of the main and the Advanced tables

  GtkWidget *preview_image;
  GtkWidget *preview_hint;
  GtkWidget *progress;
  GtkWidget *cancel_button;
  GtkWidget *generate_button;
  GtkWidget *close_button;
  GtkWidget *info_bar;
  GtkWidget *info_label;
  GtkWidget *size_label;        // the Size row: generation size and memory need
  GtkWidget *rec_label;         // the recommendation in effect, hidden when there is none

  sdgp_estimate_fn estimate;    // NULL: no Size row
  sdgp_recommend_fn recommend;  // NULL: no recommendations
  gpointer run_data;
  gchar recommended[32];        // the source of the recommendation applied last ("" none)
  gboolean recommend_known;     // recommend_update ran once: later changes are the user's
  guint estimate_source;        // pending recomputation of the Size row, or 0

  gchar models_dir[1024];       // the folder listed now
  gboolean models_dir_custom;   // the user (or the saved values) chose it, rather than the default
  gboolean filling;             // widgets being set by code: don't apply per-model defaults
  gboolean running;
  gboolean cancel_requested;
  gchar *screenshot_path;       // owned; the test hook's target, or NULL
  gboolean autorun;             // test hook: press Generate, photograph the run half-way
  gboolean screenshot_taken;
  int last_step, last_total;    // the run's last progress report
} dialog;

// ---------------------------------------------------------------------------------------------
// GTK 2 / GTK 3: the calls that differ between libgimpui-2.0 and libgimpui-3.0. Under GTK 2 each
// helper is exactly the call the dialog made before GIMP 3 support.

#if GTK_CHECK_VERSION (3, 0, 0)
#define SDGP_GIMP_SERIES "gimp3"
#else
#define SDGP_GIMP_SERIES "gimp2"
#endif

static GtkWidget *
box_new (gboolean horizontal,
         gint     spacing)
{
#if GTK_CHECK_VERSION (3, 0, 0)
  return gtk_box_new (horizontal ? GTK_ORIENTATION_HORIZONTAL : GTK_ORIENTATION_VERTICAL, spacing);
#else
  return horizontal ? gtk_hbox_new (FALSE, spacing) : gtk_vbox_new (FALSE, spacing);
#endif
}

// A label flush left, centred vertically.
static void
label_set_left (GtkWidget *label)
{
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_label_set_xalign (GTK_LABEL (label), 0.0);
  gtk_label_set_yalign (GTK_LABEL (label), 0.5);
#else
  gtk_misc_set_alignment (GTK_MISC (label), 0.0, 0.5);
#endif
}

// A form of label / widget rows: a GtkTable in GTK 2, a GtkGrid in GTK 3; 3 columns (label, and
// a widget spanning two).
static GtkWidget *
form_new (gint rows)
{
#if GTK_CHECK_VERSION (3, 0, 0)
  GtkWidget *grid = gtk_grid_new ();

  (void) rows;
  gtk_grid_set_column_spacing (GTK_GRID (grid), 6);
  gtk_grid_set_row_spacing (GTK_GRID (grid), 4);
  return grid;
#else
  GtkWidget *table = gtk_table_new (rows, 3, FALSE);

  gtk_table_set_col_spacings (GTK_TABLE (table), 6);
  gtk_table_set_row_spacings (GTK_TABLE (table), 4);
  return table;
#endif
}

// A labelled row; returns the label.
static GtkWidget *
form_attach_aligned (GtkWidget   *form,
                     gint         row,
                     const gchar *label,
                     GtkWidget   *widget)
{
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_widget_set_hexpand (widget, TRUE);
  return gimp_grid_attach_aligned (GTK_GRID (form), 0, row, label, 0.0, 0.5, widget, 2);
#else
  return gimp_table_attach_aligned (GTK_TABLE (form), 0, row, label, 0.0, 0.5, widget, 2, FALSE);
#endif
}

// A widget in the two right-hand columns of a row, without a label.
static void
form_attach_right (GtkWidget *form,
                   gint       row,
                   GtkWidget *widget)
{
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_grid_attach (GTK_GRID (form), widget, 1, row, 2, 1);
#else
  gtk_table_attach (GTK_TABLE (form), widget, 1, 3, row, row + 1, GTK_FILL, GTK_FILL, 0, 0);
#endif
}

// A scale with a spin button on row `row` of the form; its label joins `label_group`.
static GtkAdjustment *
form_scale_entry (GtkWidget    *form,
                  GtkSizeGroup *label_group,
                  gint          row,
                  const gchar  *label,
                  gdouble       value,
                  gdouble       lower,
                  gdouble       upper,
                  gdouble       step,
                  gdouble       page,
                  guint         digits,
                  const gchar  *tooltip)
{
#if GIMP_CHECK_VERSION (2, 99, 0)
  // GIMP 3's scale entry is a widget of its own (label, scale, spin button) spanning the row.
  GtkWidget *entry = gimp_scale_entry_new (label, CLAMP (value, lower, upper), lower, upper,
                                           digits);
  GtkWidget *spin = gimp_label_spin_get_spin_button (GIMP_LABEL_SPIN (entry));

  // libgimpwidgets 3.0.4 can apply the value before the bounds, leaving the spin button at 0
  // (below `lower`): set it again now that the range is in place.
  gimp_label_spin_set_value (GIMP_LABEL_SPIN (entry), CLAMP (value, lower, upper));
  gimp_label_spin_set_increments (GIMP_LABEL_SPIN (entry), step, page);
  gimp_help_set_help_data (spin, tooltip, NULL);
  gimp_help_set_help_data (gimp_scale_entry_get_range (GIMP_SCALE_ENTRY (entry)), tooltip, NULL);
  gtk_widget_set_hexpand (entry, TRUE);
  gtk_grid_attach (GTK_GRID (form), entry, 0, row, 3, 1);
  gtk_size_group_add_widget (label_group, gimp_labeled_get_label (GIMP_LABELED (entry)));
  gtk_widget_show (entry);
  return gtk_spin_button_get_adjustment (GTK_SPIN_BUTTON (spin));
#else
  GtkObject *adj = gimp_scale_entry_new (GTK_TABLE (form), 0, row, label, 160, 6,
                                         CLAMP (value, lower, upper), lower, upper, step, page,
                                         digits, TRUE, 0, 0, tooltip, NULL);

  gtk_size_group_add_widget (label_group, GIMP_SCALE_ENTRY_LABEL (adj));
  return GTK_ADJUSTMENT (adj);
#endif
}

// The dialog's picture for the test hook, rendered afresh rather than read off the screen, which
// mid-run can still hold pixels of windows and states gone by. Sets *w and *h.
static GdkPixbuf *
widget_snapshot (GtkWidget *widget,
                 gint      *w,
                 gint      *h)
{
  GdkWindow *window = gtk_widget_get_window (widget);
  GdkPixbuf *shot = NULL;

  if (! window)
    return NULL;
#if GTK_CHECK_VERSION (3, 0, 0)
  *w = gtk_widget_get_allocated_width (widget);
  *h = gtk_widget_get_allocated_height (widget);
  if (*w > 0 && *h > 0)
    {
      cairo_surface_t *surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, *w, *h);

      if (cairo_surface_status (surface) == CAIRO_STATUS_SUCCESS)
        {
          cairo_t *cr = cairo_create (surface);

          gtk_widget_draw (widget, cr);
          cairo_destroy (cr);
          shot = gdk_pixbuf_get_from_surface (surface, 0, 0, *w, *h);
        }
      cairo_surface_destroy (surface);
    }
  if (! shot)
    {
      *w = gdk_window_get_width (window);
      *h = gdk_window_get_height (window);
      shot = gdk_pixbuf_get_from_window (window, 0, 0, *w, *h);
    }
#else
  GdkPixmap *pixmap = gtk_widget_get_snapshot (widget, NULL);

  gdk_window_process_all_updates ();
  if (pixmap)
    {
      gdk_drawable_get_size (GDK_DRAWABLE (pixmap), w, h);
      shot = gdk_pixbuf_get_from_drawable (NULL, GDK_DRAWABLE (pixmap),
                                           gtk_widget_get_colormap (widget),
                                           0, 0, 0, 0, *w, *h);
      g_object_unref (pixmap);
    }
  else
    {
      gdk_drawable_get_size (GDK_DRAWABLE (window), w, h);
      shot = gdk_pixbuf_get_from_drawable (NULL, GDK_DRAWABLE (window), NULL,
                                           0, 0, 0, 0, *w, *h);
    }
#endif
  return shot;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

// Copies src into a fixed buffer without cutting a UTF-8 sequence in half.
static void
copy_utf8 (gchar       *dst,
           gsize        size,
           const gchar *src)
{
  gsize n = strlen (src);

  if (n >= size)
    {
      const gchar *end = NULL;

      n = size - 1;
      if (! g_utf8_validate (src, n, &end))
        n = (gsize) (end - src);
    }
  memcpy (dst, src, n);
  dst[n] = '\0';
}

static const model_defaults *
model_defaults_for (const gchar *model)
{
  gboolean bundled = model[0] == '\0';

  for (gsize i = 0; i < G_N_ELEMENTS (model_defaults_table); i++)
    if (model_defaults_table[i].bundled == bundled)
      return &model_defaults_table[i];
  return &model_defaults_table[G_N_ELEMENTS (model_defaults_table) - 1];
}

static gchar *
text_view_get_text (GtkWidget *view)
{
  GtkTextBuffer *buffer = gtk_text_view_get_buffer (GTK_TEXT_VIEW (view));
  GtkTextIter    start, end;

  gtk_text_buffer_get_bounds (buffer, &start, &end);
  return gtk_text_buffer_get_text (buffer, &start, &end, FALSE);
}

static GtkWidget *
text_view_new (const gchar *text,
               gint         lines,
               const gchar *tooltip,
               GtkWidget  **view_out)
{
  GtkWidget *scrolled = gtk_scrolled_window_new (NULL, NULL);
  GtkWidget *view = gtk_text_view_new ();

  gtk_scrolled_window_set_policy (GTK_SCROLLED_WINDOW (scrolled),
                                  GTK_POLICY_NEVER, GTK_POLICY_AUTOMATIC);
  gtk_scrolled_window_set_shadow_type (GTK_SCROLLED_WINDOW (scrolled), GTK_SHADOW_IN);
  gtk_text_view_set_wrap_mode (GTK_TEXT_VIEW (view), GTK_WRAP_WORD_CHAR);
  gtk_text_view_set_left_margin (GTK_TEXT_VIEW (view), 3);
  gtk_text_view_set_right_margin (GTK_TEXT_VIEW (view), 3);
  gtk_text_view_set_accepts_tab (GTK_TEXT_VIEW (view), FALSE);
  gtk_text_buffer_set_text (gtk_text_view_get_buffer (GTK_TEXT_VIEW (view)), text, -1);
  gtk_container_add (GTK_CONTAINER (scrolled), view);
  gtk_widget_show (view);

  // Height for `lines` lines of the widget's font, whatever the theme.
  PangoLayout *layout = gtk_widget_create_pango_layout (view, "Mg");
  gint         line_h = 16;
  pango_layout_get_pixel_size (layout, NULL, &line_h);
  g_object_unref (layout);
  gtk_widget_set_size_request (scrolled, 360, lines * line_h + 8);

  gimp_help_set_help_data (view, tooltip, NULL);
  *view_out = view;
  return scrolled;
}

static GtkWidget *
bold_label_new (const gchar *mnemonic,
                GtkWidget   *target)
{
  GtkWidget *label = gtk_label_new_with_mnemonic (mnemonic);

  gimp_label_set_attributes (GTK_LABEL (label), PANGO_ATTR_WEIGHT, PANGO_WEIGHT_BOLD, -1);
  label_set_left (label);
  gtk_label_set_mnemonic_widget (GTK_LABEL (label), target);
  return label;
}

// ---------------------------------------------------------------------------------------------
// Models

static gint
compare_names (gconstpointer a,
               gconstpointer b)
{
  return g_utf8_collate (*(const gchar *const *) a, *(const gchar *const *) b);
}

static void
model_store_append (dialog      *d,
                    const gchar *label,
                    const gchar *path)
{
  GtkTreeIter iter;

  gtk_list_store_append (d->model_store, &iter);
  gtk_list_store_set (d->model_store, &iter,
                      MODEL_COL_LABEL, label, MODEL_COL_PATH, path, -1);
}

// Selects the row whose path is `path`; returns FALSE when there is none.
static gboolean
model_combo_select (dialog      *d,
                    const gchar *path)
{
  GtkTreeModel *model = GTK_TREE_MODEL (d->model_store);
  GtkTreeIter   iter;
  gboolean      valid;

  for (valid = gtk_tree_model_get_iter_first (model, &iter); valid;
       valid = gtk_tree_model_iter_next (model, &iter))
    {
      gchar   *p = NULL;
      gboolean same;

      gtk_tree_model_get (model, &iter, MODEL_COL_PATH, &p, -1);
      same = g_strcmp0 (p, path) == 0;
      g_free (p);
      if (same)
        {
          gtk_combo_box_set_active_iter (GTK_COMBO_BOX (d->model_combo), &iter);
          return TRUE;
        }
    }
  return FALSE;
}

// The path of the chosen model, "" for the bundled default (g_free it).
static gchar *
model_combo_get (dialog *d)
{
  GtkTreeIter iter;
  gchar      *path = NULL;

  if (gtk_combo_box_get_active_iter (GTK_COMBO_BOX (d->model_combo), &iter))
    gtk_tree_model_get (GTK_TREE_MODEL (d->model_store), &iter, MODEL_COL_PATH, &path, -1);
  return path ? path : g_strdup ("");
}

// Lists the bundled default and every checkpoint in d->models_dir, then selects `keep` (a
// checkpoint from elsewhere is kept as an extra row when keep_foreign is set), else the default.
static void
models_refresh (dialog      *d,
                const gchar *keep,
                gboolean     keep_foreign)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  GDir      *dir = g_dir_open (d->models_dir, 0, NULL);

  d->filling = TRUE;
  gtk_list_store_clear (d->model_store);
  model_store_append (d, "Default model", "");

  if (dir)
    {
      const gchar *name;

      while ((name = g_dir_read_name (dir)))
        {
          gchar *lower = g_ascii_strdown (name, -1);

          gchar *sub = g_build_filename (d->models_dir, name, NULL);
          gchar *index = g_build_filename (sub, "model_index.json", NULL);

          // Checkpoints, and diffusers folders (a subfolder with a model_index.json).
          if ((g_str_has_suffix (lower, ".safetensors") && strcmp (lower, DEFAULT_MODEL_FILE) != 0) ||
              g_file_test (index, G_FILE_TEST_IS_REGULAR))
            g_ptr_array_add (names, g_strdup (name));
          g_free (index);
          g_free (sub);
          g_free (lower);
        }
      g_dir_close (dir);
    }
  g_ptr_array_sort (names, compare_names);

  for (guint i = 0; i < names->len; i++)
    {
      const gchar *name = g_ptr_array_index (names, i);
      gchar       *path = g_build_filename (d->models_dir, name, NULL);
      gchar       *stem = g_filename_display_name (name);
      gchar       *label;
      sdg_family   family;

      // Drop the extension of a .safetensors file (a diffusers folder has none) and add the
      // family, read from the file's header (milliseconds): "juggernautXL (SDXL)".
      size_t len = strlen (stem), ext = strlen (".safetensors");

      if (len > ext && g_ascii_strcasecmp (stem + len - ext, ".safetensors") == 0)
        stem[len - ext] = '\0';
      if (sdg_checkpoint_family (path, &family, NULL) == SDG_OK)
        label = g_strdup_printf ("%s (%s)", stem, sdg_family_name (family));
      else
        label = g_strdup_printf ("%s (not supported)", stem);
      model_store_append (d, label, path);
      g_free (label);
      g_free (stem);
      g_free (path);
    }
  g_ptr_array_unref (names);

  if (keep[0] && ! model_combo_select (d, keep) && keep_foreign)
    {
      gchar *base = g_path_get_basename (keep);
      gchar *label = g_filename_display_name (base);

      model_store_append (d, label, keep);
      model_combo_select (d, keep);
      g_free (label);
      g_free (base);
    }
  if (gtk_combo_box_get_active (GTK_COMBO_BOX (d->model_combo)) < 0)
    gtk_combo_box_set_active (GTK_COMBO_BOX (d->model_combo), 0);
  d->filling = FALSE;
}

// A GimpIntComboBox of values 0..n-1 labelled labels[i], or name (i) where there is none.
static GtkWidget *
enum_combo_new (gint                n,
                const gchar *const *labels,
                gint                n_labels,
                const gchar      *(*name) (gint),
                gint                active,
                const gchar        *tooltip)
{
  GtkWidget *combo = g_object_new (GIMP_TYPE_INT_COMBO_BOX, NULL);

  for (gint i = 0; i < n; i++)
    gimp_int_combo_box_append (GIMP_INT_COMBO_BOX (combo),
                               GIMP_INT_STORE_VALUE, i,
                               GIMP_INT_STORE_LABEL,
                               i < n_labels && labels && labels[i] ? labels[i] : name (i),
                               -1);
  gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (combo), active);
  gimp_help_set_help_data (combo, tooltip, NULL);
  return combo;
}

// The engine's name functions with an int argument, for enum_combo_new.
static const gchar *
sampler_name (gint i)
{
  return sdg_sampler_name ((sdg_sampler) i);
}

static const gchar *
precision_name (gint i)
{
  return sdg_precision_name ((sdg_precision) i);
}

static const gchar *
prediction_name (gint i)
{
  return sdg_prediction_name ((sdg_prediction) i);
}

static const gchar *
schedule_name (gint i)
{
  return sdg_schedule_name ((sdg_schedule) i);
}

static const gchar *
model_sampling_name (gint i)
{
  return sdg_model_sampling_name ((sdg_model_sampling) i);
}

static const gchar *
hires_upscale_name (gint i)
{
  return sdg_hires_upscale_name ((sdg_hires_upscale) i);
}

// The active value of an enum_combo_new combo, fallback when none or out of 0..n-1.
static gint
enum_combo_get (GtkWidget *combo,
                gint       n,
                gint       fallback)
{
  gint v = fallback;

  if (! gimp_int_combo_box_get_active (GIMP_INT_COMBO_BOX (combo), &v) || v < 0 || v >= n)
    v = fallback;
  return v;
}

static void
schedule_combo_set (dialog      *d,
                    const gchar *name)
{
  sdg_schedule s;

  if (! sdg_schedule_from_name (name, &s))
    s = SDG_SCHEDULE_DEFAULT;
  gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->schedule_combo), (gint) s);
}

static void
model_sampling_combo_set (dialog      *d,
                          const gchar *name)
{
  sdg_model_sampling m;

  if (! sdg_model_sampling_from_name (name, &m))
    m = SDG_MODEL_SAMPLING_DEFAULT;
  gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->model_sampling_combo), (gint) m);
}

static void
sampler_combo_set (dialog      *d,
                   const gchar *name)
{
  sdg_sampler s;

  if (! sdg_sampler_from_name (name, &s))
    s = SDG_SAMPLER_EULER_A;
  gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->sampler_combo), (gint) s);
}

static void
precision_combo_set (dialog      *d,
                     const gchar *name)
{
  sdg_precision p;

  if (! sdg_precision_from_name (name, &p))
    p = SDG_PRECISION_DEFAULT;
  gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->precision_combo), (gint) p);
}

// The precision tooltip: what each choice means, then what this CPU runs them with.
static gchar *
precision_tooltip (void)
{
  const gchar *exact = sdg_kernels_name (SDG_PRECISION_EXACT);
  const gchar *fast = sdg_kernels_name (SDG_PRECISION_FAST);
  gchar       *here;
  gchar       *text;

  if (strcmp (exact, fast) == 0)
    here = g_strdup_printf ("This computer has no AVX512-BF16: both run the %s kernels, Fast "
                            "with Winograd 3x3 convolutions.", exact);
  else
    here = g_strdup_printf ("This computer: Exact runs the %s kernels, Fast the %s ones.",
                            exact, fast);
  text = g_strdup_printf ("The arithmetic of the networks.\n"
                          "Exact: float32, the reference implementations' numbers.\n"
                          "Fast: bfloat16 products (float32 sums) where the CPU has "
                          "AVX512-BF16, about twice the speed and slightly different pictures; "
                          "otherwise float32 with Winograd's algorithm for 3x3 convolutions, "
                          "somewhat faster, within float32 noise of Exact.\n"
                          "Default: the engine's choice (Fast).\n"
                          "The layer's parasite records the precision and the kernels used.\n"
                          "%s", here);
  g_free (here);
  return text;
}

static void
model_changed (GtkComboBox *combo,
               dialog      *d)
{
  gchar *path;

  (void) combo;
  path = model_combo_get (d);
  gimp_help_set_help_data (d->model_combo,
                           path[0] ? path
                                   : "The model that ships with the plug-in "
                                     "(" DEFAULT_MODEL_FILE " in the models folder)",
                           NULL);
  if (! d->filling)
    {
      const model_defaults *md = model_defaults_for (path);

      gtk_adjustment_set_value (GTK_ADJUSTMENT (d->steps_adj), md->steps);
      gtk_adjustment_set_value (GTK_ADJUSTMENT (d->cfg_adj), md->cfg_scale);
      sampler_combo_set (d, md->sampler);
      schedule_combo_set (d, md->schedule);
      model_sampling_combo_set (d, md->model_sampling);
      // The new model's recommendation, if any, replaces these defaults once more, even when
      // it comes from the same source as the old one's.
      d->recommended[0] = '\0';
    }
  g_free (path);
}

static void
folder_changed (GtkFileChooser *chooser,
                dialog         *d)
{
  gchar *folder = gtk_file_chooser_get_filename (chooser);

  // The button also reports the folder it was set to when it opened; only a real change counts.
  if (folder && strcmp (folder, d->models_dir) != 0)
    {
      gchar *keep = model_combo_get (d);

      copy_utf8 (d->models_dir, sizeof d->models_dir, folder);
      d->models_dir_custom = TRUE;
      models_refresh (d, keep, FALSE);
      model_changed (NULL, d);
      g_free (keep);
    }
  g_free (folder);
}

// ---------------------------------------------------------------------------------------------
// Seed

static void
random_toggled (GtkToggleButton *toggle,
                dialog          *d)
{
  gboolean random = gtk_toggle_button_get_active (toggle);

  // With a new seed each run, the number shown is only the last one used.
  gtk_widget_set_sensitive (d->seed_spin, ! random);
}

static void
dice_clicked (GtkButton *button,
              dialog    *d)
{
  (void) button;
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (d->seed_spin), g_random_int_range (0, G_MAXINT32));
}

// ---------------------------------------------------------------------------------------------
// Building the dialog

static GtkAdjustment *
scale_entry (dialog      *d,
             GtkWidget   *table,
             gint         row,
             const gchar *label,
             gdouble      value,
             gdouble      lower,
             gdouble      upper,
             gdouble      step,
             gdouble      page,
             guint        digits,
             const gchar *tooltip)
{
  return form_scale_entry (table, d->label_group, row, label, value, lower, upper, step, page,
                           digits, tooltip);
}

static void
set_models_dir_from (dialog            *d,
                     const sdgp_params *p)
{
  const gchar *env = g_getenv ("SDG_MODELS_DIR");

  d->models_dir_custom = p->models_dir[0] != '\0';
  if (d->models_dir_custom)
    copy_utf8 (d->models_dir, sizeof d->models_dir, p->models_dir);
  else
    copy_utf8 (d->models_dir, sizeof d->models_dir, env && env[0] ? env : SDGP_MODELS_DIR);
}

static void
hires_toggled (GtkToggleButton *toggle,
               dialog          *d)
{
  gtk_widget_set_sensitive (d->hires_table, gtk_toggle_button_get_active (toggle));
}

// The "Hires fix" expander of text to image, below Advanced in box.
static void
hires_build (dialog    *d,
             GtkWidget *box)
{
  const sdgp_params *p = d->start;
  GtkWidget         *vbox, *label;
  sdg_hires_upscale  up;
  gint               row = 0;

  d->hires_expander = gtk_expander_new_with_mnemonic ("_Hires fix");
  gimp_help_set_help_data (d->hires_expander, hires_tooltip, NULL);
  gtk_box_pack_start (GTK_BOX (box), d->hires_expander, FALSE, FALSE, 0);
  vbox = box_new (FALSE, 4);
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_widget_set_margin_top (vbox, 6);
  gtk_container_add (GTK_CONTAINER (d->hires_expander), vbox);
#else
  {
    GtkWidget *align = gtk_alignment_new (0.0, 0.0, 1.0, 1.0);

    gtk_alignment_set_padding (GTK_ALIGNMENT (align), 6, 0, 0, 0);
    gtk_container_add (GTK_CONTAINER (align), vbox);
    gtk_container_add (GTK_CONTAINER (d->hires_expander), align);
  }
#endif
  d->hires_toggle = gtk_check_button_new_with_mnemonic ("Refine at a _bigger size");
  gtk_toggle_button_set_active (GTK_TOGGLE_BUTTON (d->hires_toggle), p->hires);
  gimp_help_set_help_data (d->hires_toggle, hires_tooltip, NULL);
  gtk_box_pack_start (GTK_BOX (vbox), d->hires_toggle, FALSE, FALSE, 0);

  d->hires_table = form_new (4);
  gtk_box_pack_start (GTK_BOX (vbox), d->hires_table, FALSE, FALSE, 0);
  d->hires_scale_adj =
    scale_entry (d, d->hires_table, row++, "_Upscale by:", p->hires_scale, 1.0, 4.0, 0.05, 0.5,
                 2, "The second pass's size: the first pass's times this, but never bigger than "
                    "the selection or image (the Size row shows both)");
  if (! sdg_hires_upscale_from_name (p->hires_upscale, &up))
    up = SDG_HIRES_LATENT;
  d->hires_upscale_combo =
    enum_combo_new (SDG_HIRES_UPSCALE_COUNT, hires_upscale_labels,
                    G_N_ELEMENTS (hires_upscale_labels), hires_upscale_name, (gint) up,
                    "How the first picture is made bigger. Latent: the model's latent, "
                    "bilinear (quick; needs a strength of about 0.5 or more to be sharp). "
                    "Pixel: the decoded picture with GEGL's scaling, then encoded again "
                    "(keeps more of the first picture at low strengths)");
  label = form_attach_aligned (d->hires_table, row++, "Upscale _mode:", d->hires_upscale_combo);
  gtk_size_group_add_widget (d->label_group, label);
  d->hires_strength_adj =
    scale_entry (d, d->hires_table, row++, "Stre_ngth:", p->hires_strength, 0.0, 1.0, 0.01, 0.1,
                 2, "How much the second pass changes the bigger picture: 0 keeps it, 1 paints "
                    "it anew");
  d->hires_steps_adj =
    scale_entry (d, d->hires_table, row++, "Hires ste_ps:", p->hires_steps, 0, 150, 1, 5, 0,
                 "Steps of the second pass; 0 takes the steps set under Advanced");
  g_signal_connect (d->hires_toggle, "toggled", G_CALLBACK (hires_toggled), d);
  hires_toggled (GTK_TOGGLE_BUTTON (d->hires_toggle), d);
  gtk_widget_show_all (vbox);
}

static void
dialog_build (dialog *d)
{
  const sdgp_params *p = d->start;
  GtkWidget *main_hbox, *left, *right, *label, *table, *hbox, *frame, *vbox, *adv_table;
  gint       row = 0;

  d->dialog = gimp_dialog_new (mode_titles[d->mode], "gimp-diffusion", NULL, 0,
                               gimp_standard_help_func, mode_help_ids[d->mode], NULL);
  d->close_button = gimp_dialog_add_button (GIMP_DIALOG (d->dialog), "_Close", GTK_RESPONSE_CLOSE);
  d->generate_button = gimp_dialog_add_button (GIMP_DIALOG (d->dialog), "_Generate",
                                               RESPONSE_GENERATE);
  gtk_dialog_set_default_response (GTK_DIALOG (d->dialog), RESPONSE_GENERATE);
#if GTK_CHECK_VERSION (3, 0, 0)
  {
    gint order[] = { RESPONSE_GENERATE, GTK_RESPONSE_CLOSE };

    gimp_dialog_set_alternative_button_order_from_array (GIMP_DIALOG (d->dialog),
                                                         G_N_ELEMENTS (order), order);
  }
#else
  gtk_dialog_set_alternative_button_order (GTK_DIALOG (d->dialog),
                                           RESPONSE_GENERATE, GTK_RESPONSE_CLOSE, -1);
#endif
  gimp_help_set_help_data (d->generate_button,
                           d->mode == SDGP_TEXT_TO_IMAGE
                             ? "Make the picture(s) as new layer(s)"
                             : "Run the model and put the result on a new layer", NULL);
  // libgimp is only connected inside a real plug-in; a test harness has no GIMP to sit over.
  if (gimp_get_progname ())
    gimp_window_set_transient (GTK_WINDOW (d->dialog));

  // Errors and notes from the last run, in words, inside the dialog.
  d->info_bar = gtk_info_bar_new ();
  d->info_label = gtk_label_new (NULL);
  gtk_label_set_line_wrap (GTK_LABEL (d->info_label), TRUE);
  gtk_label_set_selectable (GTK_LABEL (d->info_label), TRUE);
  gtk_widget_set_size_request (d->info_label, 560, -1);   // wrap at the dialog's width
  label_set_left (d->info_label);
  gtk_container_add (GTK_CONTAINER (gtk_info_bar_get_content_area (GTK_INFO_BAR (d->info_bar))),
                     d->info_label);
  gtk_widget_show (d->info_label);
  gtk_widget_set_no_show_all (d->info_bar, TRUE);
  gtk_box_pack_start (GTK_BOX (gtk_dialog_get_content_area (GTK_DIALOG (d->dialog))),
                      d->info_bar, FALSE, FALSE, 0);

  main_hbox = box_new (TRUE, 12);
  gtk_container_set_border_width (GTK_CONTAINER (main_hbox), 12);
  gtk_box_pack_start (GTK_BOX (gtk_dialog_get_content_area (GTK_DIALOG (d->dialog))),
                      main_hbox, TRUE, TRUE, 0);

  d->label_group = gtk_size_group_new (GTK_SIZE_GROUP_HORIZONTAL);

  // ---- left: the inputs
  left = box_new (FALSE, 6);
  d->inputs = left;
  gtk_box_pack_start (GTK_BOX (main_hbox), left, TRUE, TRUE, 0);

  GtkWidget *prompt_box =
    text_view_new (p->prompt, 4,
                   d->mode == SDGP_TEXT_TO_IMAGE
                     ? "What the picture should show. Weight words with (words:1.3), "
                       "(words) or [words]. May be left empty."
                     : "What the result should show. Weight words with (words:1.3), "
                       "(words) or [words].",
                   &d->prompt_view);
  gtk_box_pack_start (GTK_BOX (left), bold_label_new ("_Prompt", d->prompt_view), FALSE, FALSE, 0);
  gtk_box_pack_start (GTK_BOX (left), prompt_box, TRUE, TRUE, 0);

  GtkWidget *negative_box =
    text_view_new (p->negative_prompt, 2,
                   "What the picture should not show (e.g. \"blurry, text\"). May be left empty.",
                   &d->negative_view);
  gtk_box_pack_start (GTK_BOX (left), bold_label_new ("_Negative prompt", d->negative_view),
                      FALSE, FALSE, 0);
  gtk_box_pack_start (GTK_BOX (left), negative_box, TRUE, TRUE, 0);

  table = form_new (8);
  gtk_box_pack_start (GTK_BOX (left), table, FALSE, FALSE, 6);

  // Model and its folder.
  d->model_store = gtk_list_store_new (MODEL_N_COLS, G_TYPE_STRING, G_TYPE_STRING);
  d->model_combo = gtk_combo_box_new_with_model (GTK_TREE_MODEL (d->model_store));
  g_object_unref (d->model_store);
  {
    GtkCellRenderer *cell = gtk_cell_renderer_text_new ();

    g_object_set (cell, "ellipsize", PANGO_ELLIPSIZE_END, NULL);
    gtk_cell_layout_pack_start (GTK_CELL_LAYOUT (d->model_combo), cell, TRUE);
    gtk_cell_layout_set_attributes (GTK_CELL_LAYOUT (d->model_combo), cell,
                                    "text", MODEL_COL_LABEL, NULL);
  }
  label = form_attach_aligned (table, row++, "_Model:", d->model_combo);
  gtk_size_group_add_widget (d->label_group, label);

  set_models_dir_from (d, p);
  d->folder_button = gtk_file_chooser_button_new ("Models Folder",
                                                  GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER);
  if (g_file_test (d->models_dir, G_FILE_TEST_IS_DIR))
    gtk_file_chooser_set_filename (GTK_FILE_CHOOSER (d->folder_button), d->models_dir);
  gimp_help_set_help_data (d->folder_button,
                           "The folder whose .safetensors checkpoints and diffusers folders "
                           "(SD 1.x, SD 2.x, SDXL) are listed under Model", NULL);
  label = form_attach_aligned (table, row++, "Models _folder:", d->folder_button);
  gtk_size_group_add_widget (d->label_group, label);

  models_refresh (d, p->model, TRUE);
  g_signal_connect (d->model_combo, "changed", G_CALLBACK (model_changed), d);
  g_signal_connect (d->folder_button, "selection-changed", G_CALLBACK (folder_changed), d);

  if (d->mode != SDGP_TEXT_TO_IMAGE)
    d->strength_adj =
      scale_entry (d, table, row++, "_Strength:", p->strength, 0.0, 1.0, 0.01, 0.1, 2,
                   d->mode == SDGP_INPAINT
                     ? "How much of the selection to redraw: 0 keeps it, 1 paints it anew"
                     : "How far to move away from the image: 0 keeps it, 1 ignores it");

  // Seed: number, a button for a new one now, and "new seed each run".
  hbox = box_new (TRUE, 4);
  d->seed_spin = gtk_spin_button_new_with_range (0, G_MAXINT32, 1);
  gtk_spin_button_set_digits (GTK_SPIN_BUTTON (d->seed_spin), 0);
  gtk_entry_set_width_chars (GTK_ENTRY (d->seed_spin), 10);
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (d->seed_spin),
                             p->seed >= 0 ? p->seed : g_random_int_range (0, G_MAXINT32));
  gimp_help_set_help_data (d->seed_spin,
                           "The same seed with the same settings gives the same picture; "
                           "picture i of a batch uses seed + i", NULL);
  gtk_box_pack_start (GTK_BOX (hbox), d->seed_spin, FALSE, FALSE, 0);

  d->dice_button = gtk_button_new ();
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_container_add (GTK_CONTAINER (d->dice_button),
                     gtk_image_new_from_icon_name (GIMP_ICON_VIEW_REFRESH, GTK_ICON_SIZE_BUTTON));
#else
  gtk_container_add (GTK_CONTAINER (d->dice_button),
                     gtk_image_new_from_stock (GTK_STOCK_REFRESH, GTK_ICON_SIZE_BUTTON));
#endif
  gimp_help_set_help_data (d->dice_button, "Draw a new random seed now", NULL);
  g_signal_connect (d->dice_button, "clicked", G_CALLBACK (dice_clicked), d);
  gtk_box_pack_start (GTK_BOX (hbox), d->dice_button, FALSE, FALSE, 0);

  d->random_toggle = gtk_check_button_new_with_mnemonic ("New seed each _run");
  gimp_help_set_help_data (d->random_toggle,
                           "Draw a new seed for every run; the seed used is shown afterwards", NULL);
  gtk_box_pack_start (GTK_BOX (hbox), d->random_toggle, FALSE, FALSE, 4);
  g_signal_connect (d->random_toggle, "toggled", G_CALLBACK (random_toggled), d);
  gtk_toggle_button_set_active (GTK_TOGGLE_BUTTON (d->random_toggle),
                                p->random_seed || p->seed < 0);
  random_toggled (GTK_TOGGLE_BUTTON (d->random_toggle), d);
  gtk_widget_show_all (hbox);
  label = form_attach_aligned (table, row++, "S_eed:", hbox);
  gtk_label_set_mnemonic_widget (GTK_LABEL (label), d->seed_spin);
  gtk_size_group_add_widget (d->label_group, label);

  d->batch_adj = scale_entry (d, table, row++, "_Batch count:", p->batch_count, 1, 16, 1, 4, 0,
                              "How many pictures to make, each on its own layer");

  if (d->mode == SDGP_INPAINT)
    {
      d->color_match_toggle = gtk_check_button_new_with_mnemonic ("Match _colours");
      gtk_toggle_button_set_active (GTK_TOGGLE_BUTTON (d->color_match_toggle), p->color_match);
      gimp_help_set_help_data (d->color_match_toggle,
                               "Shift the new pixels' colours to match the area around the "
                               "selection, so the seam does not show", NULL);
      form_attach_right (table, row, d->color_match_toggle);
      row++;
    }

  // The size the picture is generated at, and the memory the run needs (filled in a moment
  // after the dialog opens and after every change, by the plug-in's estimate function).
  if (d->estimate)
    {
      d->size_label = gtk_label_new ("\xe2\x80\xa6");
      label_set_left (d->size_label);
      gtk_label_set_selectable (GTK_LABEL (d->size_label), TRUE);
      gimp_help_set_help_data (d->size_label, size_tooltip, NULL);
      label = form_attach_aligned (table, row++, "Size:", d->size_label);
      gtk_size_group_add_widget (d->label_group, label);
    }
  // The settings a distilled model or LoRA recommends, once applied (recommend_update).
  if (d->recommend)
    {
      d->rec_label = gtk_label_new (NULL);
      label_set_left (d->rec_label);
      gtk_label_set_line_wrap (GTK_LABEL (d->rec_label), TRUE);
      gimp_help_set_help_data (d->rec_label,
                               "The model (by its file name) or a LoRA (an LCM-LoRA, an "
                               "SDXL-Lightning LoRA) is made for these settings: they were set "
                               "under Advanced when it was chosen, and may be changed there",
                               NULL);
      gtk_widget_set_no_show_all (d->rec_label, TRUE);
      form_attach_right (table, row++, d->rec_label);
    }

  // Advanced: sampler, steps, CFG, precision, prediction, fast decode, LoRAs.
  d->expander = gtk_expander_new_with_mnemonic ("_Advanced");
  gtk_box_pack_start (GTK_BOX (left), d->expander, FALSE, FALSE, 0);
  adv_table = form_new (9);
  // No indent, so the Advanced rows line up with the ones above.
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_widget_set_margin_top (adv_table, 6);
  gtk_container_add (GTK_CONTAINER (d->expander), adv_table);
#else
  {
    GtkWidget *align = gtk_alignment_new (0.0, 0.0, 1.0, 1.0);

    gtk_alignment_set_padding (GTK_ALIGNMENT (align), 6, 0, 0, 0);
    gtk_container_add (GTK_CONTAINER (align), adv_table);
    gtk_container_add (GTK_CONTAINER (d->expander), align);
  }
#endif

  d->sampler_combo =
    enum_combo_new (SDG_SAMPLER_COUNT, sampler_labels, G_N_ELEMENTS (sampler_labels),
                    sampler_name, SDG_SAMPLER_EULER_A,
                    "How the noise is taken away step by step. Euler ancestral varies "
                    "more; DPM++ 2M needs fewer steps; LCM is for latent-consistency "
                    "models (4-8 steps, CFG 1-2)");
  sampler_combo_set (d, p->sampler);
  row = 0;
  label = form_attach_aligned (adv_table, row++, "Sa_mpler:", d->sampler_combo);
  gtk_size_group_add_widget (d->label_group, label);

  {
    sdg_schedule sc;

    if (! sdg_schedule_from_name (p->schedule, &sc))
      sc = SDG_SCHEDULE_DEFAULT;
    d->schedule_combo = enum_combo_new (SDG_SCHEDULE_COUNT, NULL, 0, schedule_name, (gint) sc,
                                        schedule_tooltip);
  }
  label = form_attach_aligned (adv_table, row++, "Sc_hedule:", d->schedule_combo);
  gtk_size_group_add_widget (d->label_group, label);

  d->steps_adj = scale_entry (d, adv_table, row++, "S_teps:", p->steps, 1, 150, 1, 5, 0,
                              "Sampling steps: more is slower and usually cleaner (20-30 is "
                              "typical)");
  d->cfg_adj = scale_entry (d, adv_table, row++, "C_FG scale:", p->cfg_scale, 1.0, 30.0, 0.5,
                            1.0, 1,
                            "How closely to follow the prompt (classifier-free guidance); "
                            "1 ignores the negative prompt and runs twice as fast");

  {
    sdg_model_sampling ms;

    if (! sdg_model_sampling_from_name (p->model_sampling, &ms))
      ms = SDG_MODEL_SAMPLING_DEFAULT;
    d->model_sampling_combo = enum_combo_new (SDG_MODEL_SAMPLING_COUNT, model_sampling_labels,
                                              G_N_ELEMENTS (model_sampling_labels),
                                              model_sampling_name, (gint) ms,
                                              model_sampling_tooltip);
  }
  label = form_attach_aligned (adv_table, row++, "Model samplin_g:", d->model_sampling_combo);
  gtk_size_group_add_widget (d->label_group, label);

  {
    gchar *tip = precision_tooltip ();

    d->precision_combo = enum_combo_new (SDG_PRECISION_COUNT, precision_labels,
                                         G_N_ELEMENTS (precision_labels), precision_name,
                                         SDG_PRECISION_DEFAULT, tip);
    g_free (tip);
  }
  precision_combo_set (d, p->precision);
  label = form_attach_aligned (adv_table, row++, "Prec_ision:", d->precision_combo);
  gtk_size_group_add_widget (d->label_group, label);

  {
    sdg_prediction pr;

    if (! sdg_prediction_from_name (p->prediction, &pr))
      pr = SDG_PREDICTION_AUTO;
    d->prediction_combo =
      enum_combo_new (SDG_PREDICTION_COUNT, prediction_labels, G_N_ELEMENTS (prediction_labels),
                      prediction_name, (gint) pr,
                      "What the model's UNet predicts. Auto reads it from the file (a "
                      "v_pred key, its metadata, a .yaml beside it) or, for SD 2.x, tries "
                      "the model once; set it when a v-prediction model draws grey noise. "
                      "The layer's parasite records what the model ran as.");
  }
  label = form_attach_aligned (adv_table, row++, "Pre_diction:", d->prediction_combo);
  gtk_size_group_add_widget (d->label_group, label);

  d->fast_decode_toggle = gtk_check_button_new_with_mnemonic ("Fast deco_de (TAESD)");
  gtk_toggle_button_set_active (GTK_TOGGLE_BUTTON (d->fast_decode_toggle), p->fast_decode);
  gimp_help_set_help_data (d->fast_decode_toggle,
                           "Make the picture with TAESD, the tiny autoencoder (seconds instead "
                           "of a minute, a slightly softer picture), instead of the model's own "
                           "decoder. Needs taesd_decoder.safetensors (SDXL: "
                           "taesdxl_decoder.safetensors) beside the model or in the models folder",
                           NULL);
  form_attach_right (adv_table, row++, d->fast_decode_toggle);

  // A text, not a file chooser: several files, each with a weight, as the procedures take them.
  {
    GtkWidget *loras_box = text_view_new (p->loras, 2, loras_tooltip, &d->loras_view);

    label = form_attach_aligned (adv_table, row++, "_LoRAs:", loras_box);
    gtk_label_set_mnemonic_widget (GTK_LABEL (label), d->loras_view);
    gtk_size_group_add_widget (d->label_group, label);
  }
  gtk_widget_show_all (gtk_bin_get_child (GTK_BIN (d->expander)));

  // Hires fix: text to image only (the other modes keep the size of what they change).
  if (d->mode == SDGP_TEXT_TO_IMAGE)
    hires_build (d, left);

  // ---- right: preview, progress, cancel
  right = box_new (FALSE, 6);
  gtk_box_pack_start (GTK_BOX (main_hbox), right, FALSE, FALSE, 0);

  frame = gtk_frame_new (NULL);
  gtk_frame_set_shadow_type (GTK_FRAME (frame), GTK_SHADOW_IN);
  gtk_box_pack_start (GTK_BOX (right), frame, FALSE, FALSE, 0);
  vbox = box_new (FALSE, 0);
  gtk_widget_set_size_request (vbox, PREVIEW_SIZE, PREVIEW_SIZE);
  gtk_container_add (GTK_CONTAINER (frame), vbox);
  d->preview_hint = gtk_label_new ("The picture in progress\nappears here");
  gtk_label_set_justify (GTK_LABEL (d->preview_hint), GTK_JUSTIFY_CENTER);
  gtk_widget_set_sensitive (d->preview_hint, FALSE);
  gtk_box_pack_start (GTK_BOX (vbox), d->preview_hint, TRUE, TRUE, 0);
  d->preview_image = gtk_image_new ();
  gtk_widget_set_no_show_all (d->preview_image, TRUE);
  gtk_box_pack_start (GTK_BOX (vbox), d->preview_image, TRUE, TRUE, 0);

  d->progress = gtk_progress_bar_new ();
#if GTK_CHECK_VERSION (3, 0, 0)
  gtk_progress_bar_set_show_text (GTK_PROGRESS_BAR (d->progress), TRUE);   // GTK 2 always shows it
#endif
  gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->progress), "Ready");
  gtk_progress_bar_set_ellipsize (GTK_PROGRESS_BAR (d->progress), PANGO_ELLIPSIZE_END);
  gtk_box_pack_start (GTK_BOX (right), d->progress, FALSE, FALSE, 0);

#if GTK_CHECK_VERSION (3, 0, 0)
  d->cancel_button = gtk_button_new_with_mnemonic ("_Cancel");
#else
  d->cancel_button = gtk_button_new_from_stock (GTK_STOCK_CANCEL);
#endif
  gimp_help_set_help_data (d->cancel_button, "Stop the run; the image is left as it was", NULL);
  gtk_widget_set_sensitive (d->cancel_button, FALSE);
  gtk_box_pack_start (GTK_BOX (right), d->cancel_button, FALSE, FALSE, 0);

  gtk_widget_show_all (main_hbox);
  g_object_unref (d->label_group);   // the widgets in it keep it alive
}

// ---------------------------------------------------------------------------------------------
// Reading the widgets

// Reads the widgets into p. for_run: "New seed each run" draws the new seed now (and shows it);
// without, the seed shown is read as it is.
static void
dialog_read (dialog      *d,
             sdgp_params *p,
             gboolean     for_run)
{
  gchar *text;
  gchar *model;
  gint   s = SDG_SAMPLER_EULER_A;
  gint   prec = SDG_PRECISION_DEFAULT;

  text = text_view_get_text (d->prompt_view);
  copy_utf8 (p->prompt, sizeof p->prompt, text);
  g_free (text);
  text = text_view_get_text (d->negative_view);
  copy_utf8 (p->negative_prompt, sizeof p->negative_prompt, text);
  g_free (text);

  model = model_combo_get (d);
  copy_utf8 (p->model, sizeof p->model, model);
  g_free (model);
  copy_utf8 (p->models_dir, sizeof p->models_dir, d->models_dir_custom ? d->models_dir : "");

  if (! gimp_int_combo_box_get_active (GIMP_INT_COMBO_BOX (d->sampler_combo), &s) ||
      s < 0 || s >= SDG_SAMPLER_COUNT)
    s = SDG_SAMPLER_EULER_A;
  copy_utf8 (p->sampler, sizeof p->sampler, sdg_sampler_name ((sdg_sampler) s));
  if (! gimp_int_combo_box_get_active (GIMP_INT_COMBO_BOX (d->precision_combo), &prec) ||
      prec < 0 || prec >= SDG_PRECISION_COUNT)
    prec = SDG_PRECISION_DEFAULT;
  copy_utf8 (p->precision, sizeof p->precision, sdg_precision_name ((sdg_precision) prec));
  if (! gimp_int_combo_box_get_active (GIMP_INT_COMBO_BOX (d->prediction_combo), &prec) ||
      prec < 0 || prec >= SDG_PREDICTION_COUNT)
    prec = SDG_PREDICTION_AUTO;
  copy_utf8 (p->prediction, sizeof p->prediction, sdg_prediction_name ((sdg_prediction) prec));

  copy_utf8 (p->schedule, sizeof p->schedule,
             sdg_schedule_name ((sdg_schedule) enum_combo_get (d->schedule_combo,
                                                               SDG_SCHEDULE_COUNT,
                                                               SDG_SCHEDULE_DEFAULT)));
  copy_utf8 (p->model_sampling, sizeof p->model_sampling,
             sdg_model_sampling_name ((sdg_model_sampling)
                                      enum_combo_get (d->model_sampling_combo,
                                                      SDG_MODEL_SAMPLING_COUNT,
                                                      SDG_MODEL_SAMPLING_DEFAULT)));
  // Other modes keep the remembered hires values as they were.
  if (d->hires_toggle)
    {
      p->hires = gtk_toggle_button_get_active (GTK_TOGGLE_BUTTON (d->hires_toggle));
      p->hires_scale = gtk_adjustment_get_value (GTK_ADJUSTMENT (d->hires_scale_adj));
      copy_utf8 (p->hires_upscale, sizeof p->hires_upscale,
                 sdg_hires_upscale_name ((sdg_hires_upscale)
                                         enum_combo_get (d->hires_upscale_combo,
                                                         SDG_HIRES_UPSCALE_COUNT,
                                                         SDG_HIRES_LATENT)));
      p->hires_strength = gtk_adjustment_get_value (GTK_ADJUSTMENT (d->hires_strength_adj));
      p->hires_steps = (gint) gtk_adjustment_get_value (GTK_ADJUSTMENT (d->hires_steps_adj));
    }
  copy_utf8 (p->recommended, sizeof p->recommended, d->recommended);
  p->steps = (gint) gtk_adjustment_get_value (GTK_ADJUSTMENT (d->steps_adj));
  p->cfg_scale = gtk_adjustment_get_value (GTK_ADJUSTMENT (d->cfg_adj));
  p->batch_count = (gint) gtk_adjustment_get_value (GTK_ADJUSTMENT (d->batch_adj));
  if (d->strength_adj)
    p->strength = gtk_adjustment_get_value (GTK_ADJUSTMENT (d->strength_adj));
  if (d->color_match_toggle)
    p->color_match = gtk_toggle_button_get_active (GTK_TOGGLE_BUTTON (d->color_match_toggle));
  p->fast_decode = gtk_toggle_button_get_active (GTK_TOGGLE_BUTTON (d->fast_decode_toggle));
  text = text_view_get_text (d->loras_view);
  copy_utf8 (p->loras, sizeof p->loras, text);
  g_free (text);

  // A new seed each run is drawn here, shown, and handed over as a plain number, so the run
  // (and the remembered values) name the seed that made the picture.
  p->random_seed = gtk_toggle_button_get_active (GTK_TOGGLE_BUTTON (d->random_toggle));
  if (p->random_seed && for_run)
    dice_clicked (NULL, d);
  p->seed = gtk_spin_button_get_value_as_int (GTK_SPIN_BUTTON (d->seed_spin));
}

// ---------------------------------------------------------------------------------------------
// Feedback from the run (main thread)

static void screenshot_maybe_running (dialog *d);

static void
fb_progress (gpointer ui,
             int      step,
             int      total,
             double   seconds_left)
{
  dialog *d = ui;
  gchar   text[128];

  if (total <= 0)
    return;
  step = CLAMP (step, 0, total);
  if (seconds_left < 0)
    g_snprintf (text, sizeof text, "Step %d / %d", step, total);
  else if (seconds_left < 60)
    g_snprintf (text, sizeof text, "Step %d / %d \u2014 %d s left", step, total,
                (int) (seconds_left + 0.5));
  else
    {
      int s = (int) (seconds_left + 0.5);
      g_snprintf (text, sizeof text, "Step %d / %d \u2014 %d min %02d s left", step, total,
                  s / 60, s % 60);
    }
  gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (d->progress), (double) step / total);
  gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->progress), text);
  d->last_step = step;
  d->last_total = total;
  screenshot_maybe_running (d);
}

static void
fb_preview (gpointer     ui,
            const float *rgb,
            int          width,
            int          height)
{
  dialog    *d = ui;
  GdkPixbuf *small, *big;
  gint       bw, bh;

  if (! rgb || width <= 0 || height <= 0 || width > 4096 || height > 4096)
    return;
  small = gdk_pixbuf_new (GDK_COLORSPACE_RGB, FALSE, 8, width, height);
  if (! small)
    return;

  guchar *pixels = gdk_pixbuf_get_pixels (small);
  gint    stride = gdk_pixbuf_get_rowstride (small);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width * 3; x++)
      {
        float v = rgb[(gsize) y * width * 3 + x];
        pixels[y * stride + x] = (guchar) (CLAMP (v, 0.0f, 1.0f) * 255.0f + 0.5f);
      }

  // Fit the frame, keeping the aspect; bilinear keeps the 8x blow-up of the latent smooth.
  if (width >= height)
    {
      bw = PREVIEW_SIZE;
      bh = MAX (1, (gint) ((gint64) PREVIEW_SIZE * height / width));
    }
  else
    {
      bh = PREVIEW_SIZE;
      bw = MAX (1, (gint) ((gint64) PREVIEW_SIZE * width / height));
    }
  big = gdk_pixbuf_scale_simple (small, bw, bh, GDK_INTERP_BILINEAR);
  g_object_unref (small);
  if (! big)
    return;
  gtk_image_set_from_pixbuf (GTK_IMAGE (d->preview_image), big);
  g_object_unref (big);
  gtk_widget_hide (d->preview_hint);
  gtk_widget_show (d->preview_image);
  screenshot_maybe_running (d);
}

static gboolean
fb_cancelled (gpointer ui)
{
  dialog *d = ui;

  return d->cancel_requested;
}

static void
cancel_clicked (GtkButton *button,
                dialog    *d)
{
  (void) button;
  if (d->running)
    {
      d->cancel_requested = TRUE;
      gtk_widget_set_sensitive (d->cancel_button, FALSE);
      gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->progress), "Cancelling\u2026");
    }
}

// Closing the window or pressing Escape during a run cancels the run; the dialog stays.
static gboolean
delete_event (GtkWidget *widget,
              GdkEvent  *event,
              dialog    *d)
{
  (void) widget;
  (void) event;
  if (d->running)
    {
      cancel_clicked (NULL, d);
      return TRUE;
    }
  return FALSE;
}

static void
response (GtkDialog *dlg,
          gint       response_id,
          dialog    *d)
{
  (void) dlg;
  if (d->running && response_id == GTK_RESPONSE_DELETE_EVENT)
    cancel_clicked (NULL, d);
}

static void
show_message (dialog         *d,
              GtkMessageType  type,
              const gchar    *message)
{
  if (! message)
    {
      gtk_widget_hide (d->info_bar);
      return;
    }
  gtk_info_bar_set_message_type (GTK_INFO_BAR (d->info_bar), type);
  gtk_label_set_text (GTK_LABEL (d->info_label), message);
  gtk_widget_show (d->info_bar);
}

// ---------------------------------------------------------------------------------------------
// The Size row

static void
estimate_update (dialog *d)
{
  sdgp_params p = *d->start;
  GError     *error = NULL;
  gboolean    fits = TRUE;
  gchar      *text;

  dialog_read (d, &p, FALSE);
  text = d->estimate (&p, d->run_data, &fits, &error);
  if (! text)
    {
      // Why there is no estimate (no model, no selection) can be long: Generate says it in full.
      gtk_label_set_text (GTK_LABEL (d->size_label), "Unknown");
      gimp_help_set_help_data (d->size_label,
                               error && error->message ? error->message : NULL, NULL);
    }
  else
    {
      // Bold when Generate would be refused (with a sentence saying what to lower).
      gchar *markup = g_markup_printf_escaped (fits ? "%s" : "<b>%s</b>", text);

      gtk_label_set_markup (GTK_LABEL (d->size_label), markup);
      gimp_help_set_help_data (d->size_label, size_tooltip, NULL);
      g_free (markup);
    }
  g_free (text);
  g_clear_error (&error);
}

// ---------------------------------------------------------------------------------------------
// Recommendations

// "Turbo: euler_a, trailing, 1 step, CFG 1 (recommended)"
static gchar *
recommend_text (const sdg_recommendation *rec)
{
  gchar cfg[G_ASCII_DTOSTR_BUF_SIZE];

  return g_strdup_printf ("%s: %s, %s, %d step%s, CFG %s%s (recommended)", rec->source,
                          sdg_sampler_name (rec->sampler), sdg_schedule_name (rec->schedule),
                          rec->steps, rec->steps == 1 ? "" : "s",
                          g_ascii_formatd (cfg, sizeof cfg, "%g", rec->cfg_scale),
                          rec->model_sampling != SDG_MODEL_SAMPLING_DEFAULT
                            ? ", LCM model sampling" : "");
}

// Asks what the model and LoRAs recommend. A recommendation is applied once, when its source
// changes (another model, an LCM-LoRA added): the user may then change every value, and typing
// in the prompt does not undo that. When the source goes away the model's defaults come back.
// When the dialog opens, the values are the remembered ones: a source already applied before
// (params->recommended) is not applied again, and none is no reason to reset anything.
static void
recommend_update (dialog *d)
{
  sdgp_params        p = *d->start;
  sdg_recommendation rec;
  const gchar       *source;
  gboolean           first = ! d->recommend_known;

  dialog_read (d, &p, FALSE);
  source = d->recommend (&p, d->run_data, &rec);
  d->recommend_known = TRUE;
  if (source)
    {
      gchar *text = recommend_text (&rec);

      gtk_label_set_text (GTK_LABEL (d->rec_label), text);
      gtk_widget_show (d->rec_label);
      g_free (text);
    }
  else
    gtk_widget_hide (d->rec_label);
  if (g_strcmp0 (source ? source : "", d->recommended) == 0)
    return;
  if (source)
    {
      gtk_adjustment_set_value (GTK_ADJUSTMENT (d->steps_adj), rec.steps);
      gtk_adjustment_set_value (GTK_ADJUSTMENT (d->cfg_adj), rec.cfg_scale);
      gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->sampler_combo), (gint) rec.sampler);
      gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->schedule_combo),
                                     (gint) rec.schedule);
      gimp_int_combo_box_set_active (GIMP_INT_COMBO_BOX (d->model_sampling_combo),
                                     (gint) rec.model_sampling);
    }
  else if (! first)
    {
      const model_defaults *md = model_defaults_for (p.model);

      gtk_adjustment_set_value (GTK_ADJUSTMENT (d->steps_adj), md->steps);
      gtk_adjustment_set_value (GTK_ADJUSTMENT (d->cfg_adj), md->cfg_scale);
      sampler_combo_set (d, md->sampler);
      schedule_combo_set (d, md->schedule);
      model_sampling_combo_set (d, md->model_sampling);
    }
  copy_utf8 (d->recommended, sizeof d->recommended, source ? source : "");
}

static gboolean
estimate_timeout (gpointer data)
{
  dialog *d = data;

  d->estimate_source = 0;
  // The run's worker thread owns the model while it runs; a failed run schedules a new one.
  // The recommendation first: the values it sets are part of the estimate.
  if (! d->running && d->recommend)
    recommend_update (d);
  if (! d->running && d->estimate)
    estimate_update (d);
  return G_SOURCE_REMOVE;
}

static void
estimate_schedule (dialog *d)
{
  if (! d->estimate && ! d->recommend)
    return;
  if (d->estimate_source)
    g_source_remove (d->estimate_source);
  d->estimate_source = g_timeout_add (ESTIMATE_DELAY_MS, estimate_timeout, d);
}

// Any change of the values the Size row depends on (model, prompts, batch, sampler, CFG, LoRAs,
// hires fix) or the recommendation does (model, prompt, LoRAs).
static void
values_changed (gpointer instance,
                dialog  *d)
{
  (void) instance;
  estimate_schedule (d);
}

static void
estimate_connect (dialog *d)
{
  if (! d->estimate && ! d->recommend)
    return;
  g_signal_connect (d->model_combo, "changed", G_CALLBACK (values_changed), d);
  g_signal_connect (gtk_text_view_get_buffer (GTK_TEXT_VIEW (d->prompt_view)), "changed",
                    G_CALLBACK (values_changed), d);
  g_signal_connect (gtk_text_view_get_buffer (GTK_TEXT_VIEW (d->negative_view)), "changed",
                    G_CALLBACK (values_changed), d);
  g_signal_connect (d->batch_adj, "value-changed", G_CALLBACK (values_changed), d);
  g_signal_connect (d->cfg_adj, "value-changed", G_CALLBACK (values_changed), d);
  g_signal_connect (d->sampler_combo, "changed", G_CALLBACK (values_changed), d);
  g_signal_connect (d->fast_decode_toggle, "toggled", G_CALLBACK (values_changed), d);
  // A LoRA that cannot be used shows as an unknown size, its reason in the tooltip.
  g_signal_connect (gtk_text_view_get_buffer (GTK_TEXT_VIEW (d->loras_view)), "changed",
                    G_CALLBACK (values_changed), d);
  // The hires fix's second pass changes the size and the memory.
  if (d->hires_toggle)
    {
      g_signal_connect (d->hires_toggle, "toggled", G_CALLBACK (values_changed), d);
      g_signal_connect (d->hires_scale_adj, "value-changed", G_CALLBACK (values_changed), d);
      g_signal_connect (d->hires_upscale_combo, "changed", G_CALLBACK (values_changed), d);
    }
  estimate_schedule (d);
}

static void
set_running (dialog  *d,
             gboolean running)
{
  d->running = running;
  d->cancel_requested = FALSE;
  gtk_widget_set_sensitive (d->inputs, ! running);
  gtk_widget_set_sensitive (d->generate_button, ! running);
  gtk_widget_set_sensitive (d->close_button, ! running);
  gtk_widget_set_sensitive (d->cancel_button, running);
  if (running)
    gtk_widget_grab_focus (d->cancel_button);
}

// ---------------------------------------------------------------------------------------------
// Test hook: a picture of the dialog, and its controls as text

// One line per visible label ("label: TEXT"), combo box ("combo: A | B | C (active: B)"), spin
// button ("spin: VALUE", with its digits), check button ("check: LABEL (on)" or "(off)") and
// tooltip ("tooltip: TEXT", after its widget's line), newlines as spaces, in the order
// gtk_container_forall gives (a GTK 2 table's rows come last first).
static void
controls_dump_widget (GtkWidget *widget,
                      gpointer   data)
{
  GString *out = data;
  gchar   *tip;

  if (! gtk_widget_get_visible (widget))
    return;
  if (GTK_IS_LABEL (widget))
    {
      const gchar *text = gtk_label_get_text (GTK_LABEL (widget));

      gchar *line = g_strdup (text ? text : "");

      if (line[0])
        g_string_append_printf (out, "label: %s\n", g_strdelimit (line, "\n", ' '));
      g_free (line);
    }
  else if (GTK_IS_COMBO_BOX (widget))
    {
      GtkTreeModel *model = gtk_combo_box_get_model (GTK_COMBO_BOX (widget));
      gint          active = gtk_combo_box_get_active (GTK_COMBO_BOX (widget));
      gint          column = -1;
      gchar        *active_text = NULL;
      GtkTreeIter   iter;
      gboolean      valid;

      // The first text column holds the labels (GimpIntStore: GIMP_INT_STORE_LABEL).
      for (gint c = 0; model && c < gtk_tree_model_get_n_columns (model) && column < 0; c++)
        if (gtk_tree_model_get_column_type (model, c) == G_TYPE_STRING)
          column = c;
      g_string_append (out, "combo: ");
      valid = column >= 0 && gtk_tree_model_get_iter_first (model, &iter);
      for (gint index = 0; valid; index++, valid = gtk_tree_model_iter_next (model, &iter))
        {
          gchar *text = NULL;

          gtk_tree_model_get (model, &iter, column, &text, -1);
          g_string_append_printf (out, "%s%s", index ? " | " : "", text ? text : "");
          if (index == active)
            active_text = g_strdup (text ? text : "");
          g_free (text);
        }
      g_string_append_printf (out, " (active: %s)\n", active_text ? active_text : "none");
      g_free (active_text);
    }
  else if (GTK_IS_SPIN_BUTTON (widget))
    g_string_append_printf (out, "spin: %.*f\n",
                            (int) gtk_spin_button_get_digits (GTK_SPIN_BUTTON (widget)),
                            gtk_spin_button_get_value (GTK_SPIN_BUTTON (widget)));
  else if (GTK_IS_CHECK_BUTTON (widget))
    g_string_append_printf (out, "check: %s (%s)\n",
                            GTK_IS_LABEL (gtk_bin_get_child (GTK_BIN (widget)))
                              ? gtk_label_get_text (GTK_LABEL (gtk_bin_get_child (GTK_BIN (widget))))
                              : "",
                            gtk_toggle_button_get_active (GTK_TOGGLE_BUTTON (widget))
                              ? "on" : "off");
  tip = gtk_widget_get_tooltip_text (widget);
  if (tip && tip[0])
    {
      g_strdelimit (tip, "\n", ' ');
      g_string_append_printf (out, "tooltip: %s\n", tip);
    }
  g_free (tip);
  // A combo box's own children only repeat its active item.
  if (GTK_IS_CONTAINER (widget) && ! GTK_IS_COMBO_BOX (widget))
    gtk_container_forall (GTK_CONTAINER (widget), controls_dump_widget, out);
}

// Writes the dialog's controls beside the picture at png_path (.png -> .txt).
static void
controls_dump (dialog      *d,
               const gchar *png_path)
{
  GString *out = g_string_new (NULL);
  gchar   *base = g_str_has_suffix (png_path, ".png")
                    ? g_strndup (png_path, strlen (png_path) - strlen (".png"))
                    : g_strdup (png_path);
  gchar   *path = g_strconcat (base, ".txt", NULL);
  GError  *error = NULL;

  controls_dump_widget (d->dialog, out);
  if (! g_file_set_contents (path, out->str, (gssize) out->len, &error))
    {
      g_printerr ("gimp-diffusion: %s\n", error->message);
      g_clear_error (&error);
    }
  g_string_free (out, TRUE);
  g_free (path);
  g_free (base);
}

static void
screenshot_save (dialog *d)
{
  GdkPixbuf *shot = NULL;
  GError    *error = NULL;
  gint       w = 0, h = 0;

  d->screenshot_taken = TRUE;
  // Let pending resizes and the X server's exposes through first: mid-run the plug-in turns the
  // main loop only now and then, and a new preview needs a layout pass before it is drawn.
  // Then one full repaint, so no region keeps stale pixels.
  for (int i = 0; i < 40; i++)
    {
      if (i == 20)
        gtk_widget_queue_draw (d->dialog);
      while (gtk_events_pending ())
        gtk_main_iteration ();
#if GTK_CHECK_VERSION (3, 0, 0)
      gdk_display_flush (gtk_widget_get_display (d->dialog));
#else
      gdk_flush ();
#endif
      g_usleep (10000);
    }
  shot = widget_snapshot (d->dialog, &w, &h);
  if (! shot)
    g_printerr ("gimp-diffusion: could not grab the dialog window\n");
  else if (! gdk_pixbuf_save (shot, d->screenshot_path, "png", &error, NULL))
    {
      g_printerr ("gimp-diffusion: %s\n", error->message);
      g_clear_error (&error);
    }
  else
    g_printerr ("gimp-diffusion: dialog screenshot %dx%d saved to %s\n", w, h, d->screenshot_path);
  if (shot)
    g_object_unref (shot);
  controls_dump (d, d->screenshot_path);
}

// Once the picture in progress is half done, with a preview on show.
static void
screenshot_maybe_running (dialog *d)
{
  if (d->autorun && ! d->screenshot_taken && d->last_step > 0 &&
      2 * d->last_step >= d->last_total &&
      gtk_widget_get_visible (d->preview_image))
    screenshot_save (d);
}

static gboolean
screenshot_timeout (gpointer data)
{
  dialog *d = data;

  if (d->autorun)
    gtk_dialog_response (GTK_DIALOG (d->dialog), RESPONSE_GENERATE);
  else
    {
      screenshot_save (d);
      gtk_dialog_response (GTK_DIALOG (d->dialog), GTK_RESPONSE_CLOSE);
    }
  return G_SOURCE_REMOVE;
}

static void
screenshot_on_map (GtkWidget *widget,
                   dialog    *d)
{
  (void) widget;
  g_timeout_add (500, screenshot_timeout, d);
}

static void
screenshot_setup (dialog      *d,
                  const gchar *target)
{
  const gchar *autorun = g_getenv ("SDGP_DIALOG_AUTORUN");

  d->autorun = autorun && autorun[0] && strcmp (autorun, "0") != 0;
  if (g_file_test (target, G_FILE_TEST_IS_DIR))
    {
      gchar *name = g_strdup_printf ("dialog-" SDGP_GIMP_SERIES "-%s%s.png", mode_names[d->mode],
                                     d->autorun ? "-running" : "");

      d->screenshot_path = g_build_filename (target, name, NULL);
      g_free (name);
    }
  else
    d->screenshot_path = g_strdup (target);
  gtk_expander_set_expanded (GTK_EXPANDER (d->expander), TRUE);
  if (d->hires_expander)
    gtk_expander_set_expanded (GTK_EXPANDER (d->hires_expander), TRUE);
  g_signal_connect_after (d->dialog, "map", G_CALLBACK (screenshot_on_map), d);
}

// ---------------------------------------------------------------------------------------------

gboolean
sdgp_dialog_run (sdgp_mode        mode,
                 sdgp_params     *params,
                 sdgp_run_fn      run,
                 sdgp_estimate_fn estimate,
                 sdgp_recommend_fn recommend,
                 gpointer         run_data)
{
  dialog        d = { 0 };
  sdgp_feedback fb = { fb_progress, fb_preview, fb_cancelled, &d };
  gboolean      done = FALSE;
  const gchar  *shot = g_getenv ("SDGP_DIALOG_SCREENSHOT");

  g_return_val_if_fail (params != NULL && run != NULL, FALSE);
  // Inside GIMP: GIMP's theme, help and colour settings (a no-op when the plug-in already did it).
  // A harness without GIMP calls gtk_init itself.
  if (gimp_get_progname ())
#if GIMP_CHECK_VERSION (2, 99, 0)
    gimp_ui_init ("gimp-diffusion");
#else
    gimp_ui_init ("gimp-diffusion", FALSE);
#endif
  d.mode = (mode >= 0 && mode < SDGP_MODE_COUNT) ? mode : SDGP_TEXT_TO_IMAGE;
  d.start = params;
  d.estimate = estimate;
  d.recommend = recommend;
  d.run_data = run_data;
  copy_utf8 (d.recommended, sizeof d.recommended, params->recommended);
  dialog_build (&d);
  estimate_connect (&d);

  g_signal_connect (d.cancel_button, "clicked", G_CALLBACK (cancel_clicked), &d);
  g_signal_connect (d.dialog, "delete-event", G_CALLBACK (delete_event), &d);
  g_signal_connect (d.dialog, "response", G_CALLBACK (response), &d);

  if (shot && shot[0])
    screenshot_setup (&d, shot);

  gtk_widget_grab_focus (d.prompt_view);
  gtk_widget_show (d.dialog);

  while (! done)
    {
      gint r = gimp_dialog_run (GIMP_DIALOG (d.dialog));

      if (r != RESPONSE_GENERATE)
        break;

      sdgp_params p = *params;
      GError     *error = NULL;

      dialog_read (&d, &p, TRUE);
      show_message (&d, GTK_MESSAGE_INFO, NULL);
      gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (d.progress), 0.0);
      gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d.progress), "Loading the model\u2026");
      d.last_step = d.last_total = 0;
      set_running (&d, TRUE);

      if (run (&p, &fb, run_data, &error))
        {
          *params = p;
          done = TRUE;
        }
      else
        {
          gboolean cancelled = g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

          set_running (&d, FALSE);
          // The figures may have changed (the model is loaded now, other values were typed).
          estimate_schedule (&d);
          gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (d.progress), 0.0);
          gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d.progress),
                                     cancelled ? "Cancelled" : "Failed");
          if (cancelled)
            show_message (&d, GTK_MESSAGE_INFO, "Cancelled: the image was left as it was.");
          else
            show_message (&d, GTK_MESSAGE_ERROR,
                          error && error->message ? error->message : "The run failed.");
          // Test hook: a failed run is photographed with its message, then the dialog closes;
          // the message goes to the log too, as the picture may have been taken before.
          if (d.autorun)
            {
              g_printerr ("gimp-diffusion: the run failed: %s\n",
                          error && error->message ? error->message : "(no message)");
              g_clear_error (&error);
              if (! d.screenshot_taken)
                screenshot_save (&d);
              break;
            }
          g_clear_error (&error);
        }
    }

  if (d.estimate_source)
    g_source_remove (d.estimate_source);
  gtk_widget_destroy (d.dialog);
  g_free (d.screenshot_path);
  return done;
}
