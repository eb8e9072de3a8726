#ifndef FLEDGER_JSONW_H
#define FLEDGER_JSONW_H

/*
 * JSON text written straight into a growing buffer, for answers on the hot
 * read path (no tree, one allocation that doubles), and a scanner that finds
 * one member of a stored JSON object without parsing the rest.
 *
 * The writer prints what jansson's json_dumps(..., JSON_COMPACT) prints for
 * the same values: strings escaped alike (UTF-8 passed through, '/' not
 * escaped), integers in decimal, doubles with 17 significant digits and a
 * ".0" when they would read back as an integer. The caller writes the
 * commas: fl_jw_key and fl_jw_sep put one before every member but the first.
 *
 * The text is an fl_text (fledger/text.h): a failed allocation sets
 * w->text.failed; later calls do nothing, and the caller checks it once at
 * the end.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fledger/text.h"

struct fl_jw {
	struct fl_text text;
	bool first; /* no member written yet at this level */
};

void fl_jw_init(struct fl_jw *w);
void fl_jw_free(struct fl_jw *w); /* leaves w empty */
/* Hands over the text (caller frees it) and leaves w empty; NULL if failed. */
char *fl_jw_take(struct fl_jw *w, size_t *ret_len);

static inline void fl_jw_raw(struct fl_jw *w, const char *text, size_t len)
{
	fl_text_append(&w->text, text, len);
}
static inline void fl_jw_char(struct fl_jw *w, char c)
{
	fl_jw_raw(w, &c, 1);
}
void fl_jw_str(struct fl_jw *w, const char *text); /* "text", escaped */

/*
 * Writes text[0..len) as a JSON string, quotes included, into out, which has
 * room for 6 * len + 2 bytes; returns the bytes written (no NUL). '"', '\\'
 * and C0 controls are escaped: \b \f \n \r \t, the others as \u00XX with
 * upper-case hex as jansson writes them, or lower-case (!upper_hex: the form
 * of signed event bodies). Other bytes, UTF-8 included, pass through.
 */
size_t fl_json_escape(char *out, const char *text, size_t len, bool upper_hex);
void fl_jw_strn(struct fl_jw *w, const char *text, size_t len);
void fl_jw_i64(struct fl_jw *w, int64_t v);
void fl_jw_u64(struct fl_jw *w, uint64_t v);
void fl_jw_double(struct fl_jw *w, double v); /* null for NaN and infinities */
void fl_jw_time(struct fl_jw *w, int64_t us); /* "RFC 3339", as fl_time_format */

/* '{' / '[' and the matching close; members inside are counted for commas. */
void fl_jw_open(struct fl_jw *w, char bracket);
void fl_jw_close(struct fl_jw *w, char bracket);
/* A comma unless this is the first member, then "key": */
void fl_jw_key(struct fl_jw *w, const char *key);
/* A comma unless this is the first element of an array. */
void fl_jw_sep(struct fl_jw *w);

/*
 * The raw text of member key of the JSON object text[0..len) (top level
 * only), without surrounding whitespace. False when text is not an object,
 * the key is absent, or the text is malformed where the scan passed.
 * Keys are compared byte for byte (stored keys are plain names).
 */
bool fl_json_member(const char *text, size_t len, const char *key, const char **ret_value,
		    size_t *ret_value_len);

/*
 * The members of the JSON object text[0..len), one per call: start with
 * *pos = 0. Returns 1 with *ret filled (key without its quotes, raw and
 * unescaped; value as fl_json_member gives it), 0 after the last member,
 * -1 when the text is malformed where the scan passed.
 */
struct fl_json_member {
	const char *key, *value;
	size_t key_len, value_len;
};
int fl_json_next_member(const char *text, size_t len, size_t *pos, struct fl_json_member *ret);

#endif
