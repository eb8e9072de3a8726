#include "fledger/jsonw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/util.h"

void fl_jw_init(struct fl_jw *w)
{
	*w = (struct fl_jw){.first = true};
}

void fl_jw_free(struct fl_jw *w)
{
	fl_text_free(&w->text);
	fl_jw_init(w);
}

char *fl_jw_take(struct fl_jw *w, size_t *ret_len)
{
	char *text = fl_text_take(&w->text, ret_len);
	fl_jw_init(w);
	return text;
}

size_t fl_json_escape(char *out, const char *text, size_t len, bool upper_hex)
{
	const char *hex = upper_hex ? "0123456789ABCDEF" : "0123456789abcdef";
	char *start = out;
	*out++ = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*out++ = (char)c;
			continue;
		}
		*out++ = '\\';
		switch (c) {
		case '"':
		case '\\':
			*out++ = (char)c;
			break;
		case '\b':
			*out++ = 'b';
			break;
		case '\f':
			*out++ = 'f';
			break;
		case '\n':
			*out++ = 'n';
			break;
		case '\r':
			*out++ = 'r';
			break;
		case '\t':
			*out++ = 't';
			break;
		default:
			*out++ = 'u';
			*out++ = '0';
			*out++ = '0';
			*out++ = hex[c >> 4];
			*out++ = hex[c & 15];
			break;
		}
	}
	*out++ = '"';
	return (size_t)(out - start);
}

void fl_jw_strn(struct fl_jw *w, const char *text, size_t len)
{
	/* at most 6 bytes per input byte, the quotes and the NUL */
	if (!fl_text_reserve(&w->text, 6 * len + 2))
		return;
	w->text.len += fl_json_escape(w->text.data + w->text.len, text, len, true);
	w->text.data[w->text.len] = '\0';
}

void fl_jw_str(struct fl_jw *w, const char *text)
{
	fl_jw_strn(w, text, strlen(text));
}

void fl_jw_u64(struct fl_jw *w, uint64_t v)
{
	char digits[20];
	size_t n = 0;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (!fl_text_reserve(&w->text, n))
		return;
	while (n)
		w->text.data[w->text.len++] = digits[--n];
	w->text.data[w->text.len] = '\0';
}

void fl_jw_i64(struct fl_jw *w, int64_t v)
{
	if (v < 0) {
		fl_jw_char(w, '-');
		fl_jw_u64(w, (uint64_t)0 - (uint64_t)v);
	} else {
		fl_jw_u64(w, (uint64_t)v);
	}
}

void fl_jw_double(struct fl_jw *w, double v)
{
	char text[40];
	if (!isfinite(v)) {
		fl_jw_raw(w, "null", 4);
		return;
	}
	int n = snprintf(text, sizeof(text) - 3, "%.17g", v);
	if (n < 0 || (size_t)n >= sizeof(text) - 3) {
		w->text.failed = true;
		return;
	}
	size_t len = (size_t)n;
	char *e = strchr(text, 'e');
	if (!e && !strchr(text, '.')) {
		memcpy(text + len, ".0", 3);
		len += 2;
	}
	if (e) { /* 1e+20 -> 1e20, 1e-05 -> 1e-5, as jansson writes them */
		char *start = e + 1, *end = e + 2;
		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		if (end != start) {
			memmove(start, end, len - (size_t)(end - text) + 1);
			len -= (size_t)(end - start);
		}
	}
	fl_jw_raw(w, text, len);
}

void fl_jw_time(struct fl_jw *w, int64_t us)
{
	char text[FL_TIME_TEXT_LEN + 2];
	text[0] = '"';
	fl_time_format(us, text + 1);
	size_t len = strlen(text);
	text[len++] = '"';
	fl_jw_raw(w, text, len);
}

void fl_jw_open(struct fl_jw *w, char bracket)
{
	fl_jw_char(w, bracket);
	w->first = true;
}

void fl_jw_close(struct fl_jw *w, char bracket)
{
	fl_jw_char(w, bracket);
	w->first = false;
}

void fl_jw_sep(struct fl_jw *w)
{
	if (!w->first)
		fl_jw_char(w, ',');
	w->first = false;
}

void fl_jw_key(struct fl_jw *w, const char *key)
{
	fl_jw_sep(w);
	fl_jw_str(w, key);
	fl_jw_char(w, ':');
}

/* ---- the member scanner ---------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/*
 * Past a string starting at its opening quote; NULL if unterminated. Finds
 * each quote with memchr (strings here are often long base64) and skips the
 * ones escaped by an odd run of backslashes.
 */
static const char *skip_string(const char *p, const char *end)
{
	const char *start = p + 1;
	for (p = start; p < end; p++) {
		p = memchr(p, '"', (size_t)(end - p));
		if (!p)
			return NULL;
		size_t backslashes = 0;
		while (p - backslashes > start && p[-1 - (ptrdiff_t)backslashes] == '\\')
			backslashes++;
		if (backslashes % 2 == 0)
			return p + 1;
	}
	return NULL;
}

/*
 * Past one value and the whitespace after it: at the ',' or closing bracket
 * that must follow (or at end). Strings are skipped and brackets balanced
 * (not checked inside); NULL if malformed.
 */
static const char *skip_value(const char *p, const char *end)
{
	if (p == end)
		return NULL;
	if (*p == '"') {
		p = skip_string(p, end);
	} else if (*p == '{' || *p == '[') {
		int depth = 0;
		while (p < end) {
			char c = *p;
			if (c == '"') {
				p = skip_string(p, end);
				if (!p)
					return NULL;
				continue;
			}
			p++;
			if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				if (--depth == 0)
					break;
			}
		}
		if (depth != 0)
			return NULL;
	} else { /* a number, true, false or null */
		const char *start = p;
		while (p < end && !strchr(",}] \t\n\r", *p))
			p++;
		if (p == start)
			return NULL;
	}
	if (!p)
		return NULL;
	p = skip_ws(p, end);
	if (p < end && *p != ',' && *p != '}' && *p != ']')
		return NULL;
	return p;
}

int fl_json_next_member(const char *text, size_t len, size_t *pos, struct fl_json_member *ret)
{
	const char *p = text + *pos, *end = text + len;

	if (*pos == 0) { /* the opening brace */
		p = skip_ws(p, end);
		if (p == end || *p != '{')
			return -1;
		p = skip_ws(p + 1, end);
		if (p < end && *p == '}') {
			*pos = len;
			return 0;
		}
	} else if (*pos >= len) {
		return 0;
	} else { /* after a value: ',' or the closing brace */
		if (*p == '}') {
			*pos = len;
			return 0;
		}
		if (*p != ',')
			return -1;
		p = skip_ws(p + 1, end);
	}
	if (p == end || *p != '"')
		return -1;
	const char *key = p + 1;
	const char *after = skip_string(p, end);
	if (!after)
		return -1;
	ret->key = key;
	ret->key_len = (size_t)(after - 1 - key);
	p = skip_ws(after, end);
	if (p == end || *p != ':')
		return -1;
	p = skip_ws(p + 1, end);
	const char *value = p;
	p = skip_value(p, end);
	if (!p || p == value || p == end)
		return -1; /* no value, or no closing brace after it */
	const char *value_end = p;
	while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t' ||
				     value_end[-1] == '\n' || value_end[-1] == '\r'))
		value_end--;
	ret->value = value;
	ret->value_len = (size_t)(value_end - value);
	*pos = (size_t)(p - text);
	return 1;
}

bool fl_json_member(const char *text, size_t len, const char *key, const char **ret_value,
		    size_t *ret_value_len)
{
	size_t key_len = strlen(key), pos = 0;
	struct fl_json_member m;

	while (fl_json_next_member(text, len, &pos, &m) == 1) {
		if (m.key_len == key_len && memcmp(m.key, key, key_len) == 0) {
			*ret_value = m.value;
			*ret_value_len = m.value_len;
			return true;
		}
	}
	return false;
}
