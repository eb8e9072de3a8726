#include "fledger/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fl_text_free(struct fl_text *text)
{
	free(text->data);
	*text = FL_TEXT_INIT;
}

bool fl_text_reserve(struct fl_text *text, size_t extra)
{
	if (text->failed)
		return false;
	if (extra < text->cap && text->len < text->cap - extra)
		return true;
	if (extra > (size_t)-1 / 4 - text->len) {
		text->failed = true;
		return false;
	}
	/* Doubling keeps appends amortised O(1); a larger reservation (a file
	 * of known size) gets exactly what it asks for. */
	size_t cap = text->cap ? text->cap * 2 : 256;
	if (cap < text->len + extra + 1)
		cap = text->len + extra + 1;
	char *grown = realloc(text->data, cap);
	if (grown == NULL) {
		text->failed = true;
		return false;
	}
	text->data = grown;
	text->cap = cap;
	return true;
}

void fl_text_append(struct fl_text *text, const void *bytes, size_t len)
{
	if (!fl_text_reserve(text, len))
		return;
	if (len > 0) /* bytes may be NULL when empty */
		memcpy(text->data + text->len, bytes, len);
	text->len += len;
	text->data[text->len] = '\0';
}

void fl_text_puts(struct fl_text *text, const char *string)
{
	fl_text_append(text, string, strlen(string));
}

void fl_text_printf(struct fl_text *text, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	int needed = vsnprintf(NULL, 0, format, args);
	va_end(args);
	if (needed < 0) {
		text->failed = true;
		return;
	}
	if (!fl_text_reserve(text, (size_t)needed))
		return;
	va_start(args, format);
	vsnprintf(text->data + text->len, (size_t)needed + 1, format, args);
	va_end(args);
	text->len += (size_t)needed;
}

char *fl_text_take(struct fl_text *text, size_t *ret_len)
{
	if (!text->failed && text->data == NULL && fl_text_reserve(text, 0))
		text->data[0] = '\0';
	char *bytes = text->failed ? NULL : text->data;
	if (bytes != NULL && ret_len != NULL)
		*ret_len = text->len;
	if (bytes == NULL)
		free(text->data);
	*text = FL_TEXT_INIT;
	return bytes;
}
