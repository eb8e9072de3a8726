#ifndef FLEDGER_ERROR_H
#define FLEDGER_ERROR_H

/*
 * A client-facing error: everything an HTTP handler needs to answer with the
 * body of CONTRACT §9,
 *
 *   {"error": {"code": "<code>", "message": "<message>", "field": "<field>"}}
 *
 * with status http_status. field is a JSON path into the request
 * ("events[3].features.dwell_ms", "windows[1].of", "df.dwell_ms[3]"), or ""
 * when no single field is at fault (then leave "field" out of the answer).
 *
 * Library functions that validate client input take a `struct fl_error *err`
 * as their last argument and fill it when they fail with a client error
 * (FL_ERR_INVALID → 400, FL_ERR_NOT_FOUND → 404, FL_ERR_CONFLICT → 409). On
 * FL_ERR_NOMEM they fill it with a 500 "internal" error so that a caller can
 * always answer from it. err may be NULL when the caller does not care.
 *
 * Codes used by the view and event validators (view.h, event.h):
 *
 *   400 invalid_json          the value is not what the route expects at all
 *   400 missing_field         a required member is absent
 *   400 invalid_type          a member has the wrong JSON type
 *   400 invalid_value         right type, unacceptable value (a limit, a range)
 *   400 unknown_field         a member the object does not have
 *   400 invalid_name          a name is not [a-z][a-z0-9_]{0,62}
 *   400 duplicate_name        a window name reuses a feature or window name
 *   400 invalid_feature_type  a feature type is not one of the five types
 *   400 invalid_duration      not "<int>s|m|h|d", zero or over 36500d
 *   400 invalid_window        the window function does not fit its feature
 *   400 invalid_acl           an ACL entry is empty, too long or malformed
 *   400 limit_exceeded        too many features, windows, ACL entries
 *   400 unknown_feature       a feature name the view does not define
 *   400 type_mismatch         a feature value of the wrong JSON type
 *   400 invalid_entity_id     empty, over 256 bytes, control characters
 *   400 invalid_timestamp     not RFC 3339 with a zone, or no such date
 *   400 invalid_idempotency_key  empty, over 128 bytes, control characters
 *   400 empty_batch / batch_too_large   0 or more than 1000 events or rows
 *   404 view_not_found        the event names a view that is not registered
 *   409 incompatible_view_change  a feature removed or retyped, entity changed
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fledger/status.h"

#define FL_ERROR_CODE_LEN 48
#define FL_ERROR_MESSAGE_LEN 256
#define FL_ERROR_FIELD_LEN 160

struct fl_error {
	int http_status;
	char code[FL_ERROR_CODE_LEN];
	char message[FL_ERROR_MESSAGE_LEN];
	char field[FL_ERROR_FIELD_LEN];
};

/* Sets every member of err (a NULL err is ignored); field may be NULL. */
static inline void fl_error_vset(struct fl_error *err, int http_status, const char *code,
				 const char *field, const char *format, va_list args)
{
	if (err == NULL)
		return;
	err->http_status = http_status;
	snprintf(err->code, sizeof(err->code), "%s", code);
	snprintf(err->field, sizeof(err->field), "%s", field != NULL ? field : "");
	vsnprintf(err->message, sizeof(err->message), format, args);
}

__attribute__((format(printf, 5, 6))) static inline void
fl_error_set(struct fl_error *err, int http_status, const char *code, const char *field,
	     const char *format, ...)
{
	va_list args;
	va_start(args, format);
	fl_error_vset(err, http_status, code, field, format, args);
	va_end(args);
}

/* The two commonest answers of a validator: a 500 for an allocation failure
 * (FL_ERR_NOMEM) and a 400 with code, field and message (FL_ERR_INVALID). */
static inline enum fl_status fl_error_nomem(struct fl_error *err)
{
	fl_error_set(err, 500, "internal", NULL, "out of memory");
	return FL_ERR_NOMEM;
}

__attribute__((format(printf, 4, 5))) static inline enum fl_status
fl_error_invalid(struct fl_error *err, const char *code, const char *field, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	fl_error_vset(err, 400, code, field, format, args);
	va_end(args);
	return FL_ERR_INVALID;
}

/* Resets err to "no error" (status 0, empty strings). */
static inline void fl_error_clear(struct fl_error *err)
{
	if (err != NULL)
		memset(err, 0, sizeof(*err));
}

/*
 * Writes prefix followed by suffix into out (cap bytes), truncating: the
 * plain concatenation of two path pieces ("windows[0]" + ".of").
 */
static inline void fl_error_path_join(char *out, size_t cap, const char *prefix, const char *suffix)
{
	size_t len = 0;
	if (cap == 0)
		return;
	for (const char *p = prefix; *p != '\0' && len + 1 < cap; p++)
		out[len++] = *p;
	for (const char *p = suffix; *p != '\0' && len + 1 < cap; p++)
		out[len++] = *p;
	out[len] = '\0';
}

/* Writes prefix + "[index]" into out (cap bytes), truncating. */
static inline void fl_error_path_index(char *out, size_t cap, const char *prefix, size_t index)
{
	char subscript[24];
	snprintf(subscript, sizeof(subscript), "[%zu]", index);
	fl_error_path_join(out, cap, prefix, subscript);
}

/*
 * Writes the JSON path of member key of the object at prefix into out (cap
 * bytes, truncated if need be): "prefix.key", or just "key" at the root. A
 * key that is not an identifier ([A-Za-z_][A-Za-z0-9_]*) is written as
 * prefix["key"], with '"', '\\' and control characters escaped.
 */
static inline void fl_error_path_key(char *out, size_t cap, const char *prefix, const char *key)
{
	size_t len = 0;
	bool ident =
	    (key[0] >= 'a' && key[0] <= 'z') || (key[0] >= 'A' && key[0] <= 'Z') || key[0] == '_';
	for (const char *p = key; ident && *p != '\0'; p++) {
		char c = *p;
		ident = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '_';
	}
	if (cap == 0)
		return;
	if (ident) {
		fl_error_path_join(out, cap, prefix, prefix[0] != '\0' ? "." : "");
		len = strlen(out);
		fl_error_path_join(out + len, cap - len, key, "");
		return;
	}
	fl_error_path_join(out, cap, prefix, "[\"");
	len = strlen(out);
	if (len + 2 >= cap)
		return;
	for (const unsigned char *p = (const unsigned char *)key; *p != '\0' && len + 8 < cap;
	     p++) {
		if (*p == '"' || *p == '\\') {
			out[len++] = '\\';
			out[len++] = (char)*p;
		} else if (*p < 0x20) {
			len += (size_t)snprintf(out + len, cap - len, "\\u%04x", *p);
		} else {
			out[len++] = (char)*p;
		}
	}
	if (len + 3 <= cap) {
		out[len++] = '"';
		out[len++] = ']';
	}
	out[len < cap ? len : cap - 1] = '\0';
}

#endif
