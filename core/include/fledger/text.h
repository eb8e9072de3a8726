#ifndef FLEDGER_TEXT_H
#define FLEDGER_TEXT_H

/*
 * A growing text buffer: the one every module uses to build answers, files,
 * usage texts and request bodies. It doubles when full and keeps a NUL after
 * its bytes. A failed allocation sets failed; later calls then do nothing,
 * and the caller checks failed once at the end.
 */

#include <stdbool.h>
#include <stddef.h>

struct fl_text {
	char *data; /* NUL-terminated while !failed; NULL until the first byte */
	size_t len, cap;
	bool failed;
};

#define FL_TEXT_INIT ((struct fl_text){0})

void fl_text_free(struct fl_text *text); /* leaves text empty */
/* Room for extra more bytes and the NUL; false (and failed) if there is none. */
bool fl_text_reserve(struct fl_text *text, size_t extra);
void fl_text_append(struct fl_text *text, const void *bytes, size_t len);
void fl_text_puts(struct fl_text *text, const char *string);
void fl_text_printf(struct fl_text *text, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Hands over the bytes (the caller frees them; "" when nothing was written)
 * and leaves text empty; NULL if an allocation failed.
 */
char *fl_text_take(struct fl_text *text, size_t *ret_len);

#endif
