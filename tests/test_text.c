/* The growing text buffer every module builds its texts in. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/text.h"

Test(text, appends_and_hands_over_the_bytes)
{
	struct fl_text text = FL_TEXT_INIT;
	fl_text_puts(&text, "count=");
	fl_text_printf(&text, "%d", 42);
	fl_text_append(&text, "\0tail", 5);
	cr_assert_not(text.failed);

	size_t len = 0;
	char *bytes = fl_text_take(&text, &len);
	cr_assert_not_null(bytes);
	cr_assert_eq(len, 13);
	cr_assert_arr_eq(bytes, "count=42\0tail", 14); /* and the NUL */
	cr_assert_null(text.data);
	cr_assert_eq(text.len, 0);
	free(bytes);
}

/* Many small appends cross every doubling without losing a byte. */
Test(text, grows_past_its_first_allocation)
{
	struct fl_text text = FL_TEXT_INIT;
	for (int i = 0; i < 10000; i++)
		fl_text_printf(&text, "%04d,", i);
	cr_assert_not(text.failed);
	cr_assert_eq(text.len, 50000);
	cr_assert_eq(strncmp(text.data + 5 * 9999, "9999,", 5), 0);
	cr_assert_eq(text.data[text.len], '\0');
	fl_text_free(&text);
	cr_assert_null(text.data);
}

Test(text, empty_text_is_an_empty_string)
{
	struct fl_text text = FL_TEXT_INIT;
	size_t len = 7;
	char *bytes = fl_text_take(&text, &len);
	cr_assert_str_eq(bytes, "");
	cr_assert_eq(len, 0);
	free(bytes);
}

/* A large reservation gets what it asks for, not the next power of two. */
Test(text, reservation_is_not_rounded_up)
{
	struct fl_text text = FL_TEXT_INIT;
	cr_assert(fl_text_reserve(&text, 100000));
	cr_assert_eq(text.cap, 100001);
	fl_text_free(&text);
}

/* A reservation that cannot be met fails the text; later calls do nothing. */
Test(text, failure_is_sticky)
{
	struct fl_text text = FL_TEXT_INIT;
	fl_text_puts(&text, "kept");
	cr_assert_not(fl_text_reserve(&text, SIZE_MAX / 2));
	cr_assert(text.failed);
	fl_text_puts(&text, "more");
	cr_assert_eq(text.len, 4);
	size_t len = 99;
	cr_assert_null(fl_text_take(&text, &len));
	cr_assert_eq(len, 99); /* not written on failure */
	cr_assert_null(text.data);
	cr_assert_not(text.failed);
}
