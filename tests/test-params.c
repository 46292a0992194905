/*
 * test-params.c - unit tests of the plug-in's loras reader (plugin/params.h, sdgp_params_loras):
 * separators, trimming, weights, Windows paths, a ':' in a file name, and each refusal naming its
 * entry. Files are made in a temporary folder; their contents do not matter here.
 *
 * Not here: GIMP or the engine (the LoRAs themselves: tests/test-lora.c; through the procedures:
 * tests/gimp/test-plugin.scm). params.c is compiled in alone, so the error domain core.c defines
 * is defined here the same way.
 */
#include <string.h>

#include <glib/gstdio.h>

#include "plugin/core.h"
#include "plugin/params.h"
#include "sdg.h"

G_DEFINE_QUARK (sdgp-error-quark, sdgp_error)

static char *dir;

static char *
touch (const char *name)
{
    char *path = g_build_filename (dir, name, NULL);

    g_assert_true (g_file_set_contents (path, "x", 1, NULL));
    return path;
}

// Reads text; on success checks n entries, else returns the error message (g_free it).
static char *
read_loras (const char *text, sdg_lora **loras, int *n)
{
    sdgp_params p;
    GError     *error = NULL;
    char       *message = NULL;

    sdgp_params_init (&p, SDGP_TEXT_TO_IMAGE);
    g_assert_cmpuint (strlen (text), <, sizeof p.loras);
    g_strlcpy (p.loras, text, sizeof p.loras);
    if (! sdgp_params_loras (&p, loras, n, &error))
    {
        g_assert_error (error, SDGP_ERROR, SDGP_ERROR_INVALID);
        g_assert_null (*loras);
        message = g_strdup (error->message);
        g_test_message ("%s", message);
        g_error_free (error);
    }
    return message;
}

static void
test_entries (void)
{
    char     *a = touch ("a.safetensors"), *b = touch ("b c.safetensors");
    char     *colon = touch ("d:e.safetensors");
    char     *text = g_strdup_printf ("  %s:0.7 ;\r\n\n%s\n;%s:-2.5;%s", a, b, colon, colon);
    sdg_lora *l = NULL;
    int       n = -1;

    g_assert_null (read_loras ("", &l, &n));
    g_assert_null (l);
    g_assert_cmpint (n, ==, 0);
    g_assert_null (read_loras (" ;\n ; ", &l, &n));
    g_assert_cmpint (n, ==, 0);

    g_assert_null (read_loras (text, &l, &n));
    g_assert_cmpint (n, ==, 4);
    g_assert_cmpstr (l[0].path, ==, a);
    g_assert_cmpfloat (l[0].weight, ==, 0.7f);
    g_assert_cmpstr (l[1].path, ==, b);           // a space inside a name stays
    g_assert_cmpfloat (l[1].weight, ==, 1.0f);    // no weight: 1
    g_assert_cmpstr (l[2].path, ==, colon);       // split at the last ':'
    g_assert_cmpfloat (l[2].weight, ==, -2.5f);
    g_assert_cmpstr (l[3].path, ==, colon);       // the whole entry names a file
    g_assert_cmpfloat (l[3].weight, ==, 1.0f);
    g_free (l);
    g_free (text);
    g_free (a);
    g_free (b);
    g_free (colon);
}

static void
test_refused (void)
{
    char       *a = touch ("a.safetensors");
    sdg_lora   *l = NULL;
    int         n;
    char       *text, *m;
    const char *cases[][2] = {
        { "%s:11", "must be from -10 to 10 (got 11)" },
        { "%s:-10.5", "must be from -10 to 10 (got -10.5)" },
        { "%s:strong", "has 'strong' as its weight, not a number" },
        { "%s:nan", "has 'nan' as its weight, not a number" },
        { "%s:", "has nothing after its ':'" },
        { "%s;/nonexistent/missing.safetensors:0.5", "'/nonexistent/missing.safetensors' does not exist" },
        { "%s;:0.5", "names no file" },
        { "C:\\no\\such\\file.safetensors", "'C:\\no\\such\\file.safetensors' does not exist" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
        text = g_strdup_printf (cases[i][0], a);
        m = read_loras (text, &l, &n);
        g_assert_nonnull (m);
        g_assert_nonnull (strstr (m, cases[i][1]));
        g_free (m);
        g_free (text);
    }
    // A folder is no LoRA file.
    m = read_loras (dir, &l, &n);
    g_assert_nonnull (m);
    g_assert_nonnull (strstr (m, "is not a file"));
    g_free (m);
    g_free (a);
}

int
main (int argc, char **argv)
{
    int ret;

    g_test_init (&argc, &argv, NULL);
    dir = g_dir_make_tmp ("sdgp-params-XXXXXX", NULL);
    g_assert_nonnull (dir);
    g_test_add_func ("/plugin/params/loras/entries", test_entries);
    g_test_add_func ("/plugin/params/loras/refused", test_refused);
    ret = g_test_run ();
    {
        GDir        *d = g_dir_open (dir, 0, NULL);
        const char  *name;

        while (d && (name = g_dir_read_name (d)))
        {
            char *path = g_build_filename (dir, name, NULL);

            g_unlink (path);
            g_free (path);
        }
        if (d)
            g_dir_close (d);
    }
    g_rmdir (dir);
    g_free (dir);
    return ret;
}
