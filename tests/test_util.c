#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fledger/status.h"
#include "fledger/util.h"

#define US INT64_C(1000000)

/* A fresh temporary directory per test; Criterion runs each in its own process. */
static char temp_dir[64];

static void make_temp_dir(void)
{
	strcpy(temp_dir, "/tmp/fl_test_util.XXXXXX");
	cr_assert_not_null(mkdtemp(temp_dir));
}

static void remove_temp_dir(void)
{
	char command[128];
	snprintf(command, sizeof(command), "rm -rf '%s'", temp_dir);
	cr_assert_eq(system(command), 0);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *file = fopen(path, "wb");
	cr_assert_not_null(file);
	cr_assert_eq(fwrite(data, 1, len, file), len);
	cr_assert_eq(fclose(file), 0);
}

/* --- status --- */

Test(status, every_value_has_its_own_name)
{
	const char *names[FL_ERR_TIMEOUT + 1];
	for (int s = FL_OK; s <= FL_ERR_TIMEOUT; s++) {
		names[s] = fl_status_str((enum fl_status)s);
		cr_assert_not_null(names[s]);
		cr_assert_gt(strlen(names[s]), 0);
		cr_assert_str_neq(names[s], "unknown status", "status %d has no name", s);
		for (int earlier = FL_OK; earlier < s; earlier++)
			cr_assert_str_neq(names[s], names[earlier]);
	}
	cr_assert_str_eq(fl_status_str(FL_OK), "ok");
	cr_assert_str_eq(fl_status_str(FL_ERR_NOT_FOUND), "not found");
	cr_assert_str_eq(fl_status_str((enum fl_status)(FL_ERR_TIMEOUT + 1)), "unknown status");
	cr_assert_str_eq(fl_status_str((enum fl_status) - 1), "unknown status");
}

/* --- hex --- */

Test(hex, encodes_lowercase)
{
	const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	char out[2 * sizeof(bytes) + 1];
	memset(out, 'x', sizeof(out));
	fl_hex_encode(bytes, sizeof(bytes), out);
	cr_assert_str_eq(out, "00017f80abff");

	char empty[1] = {'x'};
	fl_hex_encode(NULL, 0, empty);
	cr_assert_str_eq(empty, "");
}

Test(hex, round_trips_every_byte)
{
	uint8_t bytes[256], decoded[256];
	char text[513];
	for (int i = 0; i < 256; i++)
		bytes[i] = (uint8_t)i;
	fl_hex_encode(bytes, sizeof(bytes), text);
	cr_assert_eq(strlen(text), 512);
	cr_assert_eq(fl_hex_decode(text, decoded, sizeof(decoded)), FL_OK);
	cr_assert_arr_eq(decoded, bytes, sizeof(bytes));
}

Test(hex, decodes_either_case)
{
	uint8_t bytes[4];
	cr_assert_eq(fl_hex_decode("DeadBEEF", bytes, 4), FL_OK);
	cr_assert_eq(bytes[0], 0xde);
	cr_assert_eq(bytes[1], 0xad);
	cr_assert_eq(bytes[2], 0xbe);
	cr_assert_eq(bytes[3], 0xef);
	cr_assert_eq(fl_hex_decode("", bytes, 0), FL_OK);
}

Test(hex, rejects_bad_text_and_leaves_output_alone)
{
	uint8_t bytes[4] = {1, 2, 3, 4};
	const char *bad[] = {"deadbee",	 "deadbeef0", "deadbeef00", "deadbeeg", "dead beef",
			     "0xdeadbe", "",	      "-eadbeef",   "deadbee\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(fl_hex_decode(bad[i], bytes, 4), FL_ERR_INVALID, "accepted \"%s\"",
			     bad[i]);
	cr_assert_eq(bytes[0], 1);
	cr_assert_eq(bytes[3], 4);
	cr_assert_eq(fl_hex_decode(NULL, bytes, 4), FL_ERR_INVALID);
	cr_assert_eq(fl_hex_decode("00", NULL, 1), FL_ERR_INVALID);
}

/* --- base64 --- */

/* RFC 4648 §10. */
static const char *const rfc4648_plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const rfc4648_base64[] = {"",	 "Zg==",     "Zm8=",	"Zm9v",
					     "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

Test(base64, encodes_rfc4648_vectors)
{
	for (size_t i = 0; i < 7; i++) {
		size_t len = strlen(rfc4648_plain[i]);
		char out[16];
		cr_assert_eq(fl_base64_encoded_len(len), strlen(rfc4648_base64[i]));
		fl_base64_encode((const uint8_t *)rfc4648_plain[i], len, out);
		cr_assert_str_eq(out, rfc4648_base64[i]);
	}
}

Test(base64, decodes_rfc4648_vectors)
{
	for (size_t i = 0; i < 7; i++) {
		uint8_t *bytes = NULL;
		size_t len = 99;
		cr_assert_eq(
		    fl_base64_decode(rfc4648_base64[i], strlen(rfc4648_base64[i]), &bytes, &len),
		    FL_OK, "vector %zu", i);
		cr_assert_not_null(bytes);
		cr_assert_eq(len, strlen(rfc4648_plain[i]));
		cr_assert_arr_eq(bytes, rfc4648_plain[i], len);
		free(bytes);
	}
}

Test(base64, uses_the_standard_alphabet)
{
	const uint8_t bytes[] = {0xfb, 0xff, 0xbf};
	char out[5];
	fl_base64_encode(bytes, 3, out);
	cr_assert_str_eq(out, "+/+/");
}

Test(base64, round_trips_every_length)
{
	uint8_t bytes[300];
	char text[402];
	srand(42);
	for (size_t len = 0; len <= sizeof(bytes); len++) {
		for (size_t i = 0; i < len; i++)
			bytes[i] = (uint8_t)rand();
		size_t text_len = fl_base64_encoded_len(len);
		text[text_len + 1] = '#';
		fl_base64_encode(bytes, len, text);
		cr_assert_eq(strlen(text), text_len);
		cr_assert_eq(text[text_len + 1], '#', "wrote past the end");

		uint8_t *decoded;
		size_t decoded_len;
		cr_assert_eq(fl_base64_decode(text, text_len, &decoded, &decoded_len), FL_OK);
		cr_assert_eq(decoded_len, len);
		cr_assert_arr_eq(decoded, bytes, len);
		free(decoded);
	}
}

Test(base64, decodes_only_text_len_characters)
{
	uint8_t *bytes;
	size_t len;
	cr_assert_eq(fl_base64_decode("Zm9vYmFy!!!", 8, &bytes, &len), FL_OK);
	cr_assert_eq(len, 6);
	cr_assert_arr_eq(bytes, "foobar", 6);
	free(bytes);
}

Test(base64, rejects_bad_text)
{
	const char *bad[] = {
	    "Zg",	/* unpadded */
	    "Zg=",	/* short */
	    "Zm9vY",	/* length not a multiple of 4 */
	    "Zm9v\n",	/* whitespace */
	    "Zm 9",	/* space */
	    "Zm-_",	/* URL-safe alphabet */
	    "Zg==Zm8=", /* padding in the middle */
	    "Z===",	/* too much padding */
	    "====",	/* padding only */
	    "=Zm8",	/* padding first */
	    "Zm=v",	/* padding inside a group */
	    "Zh==",	/* nonzero bits under the padding */
	    "Zm9=",	/* nonzero bits under the padding */
	    "Zm9v\xc3\xa9==",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t *bytes = (uint8_t *)"untouched";
		size_t len = 77;
		cr_assert_eq(fl_base64_decode(bad[i], strlen(bad[i]), &bytes, &len), FL_ERR_INVALID,
			     "accepted \"%s\"", bad[i]);
		cr_assert_str_eq((const char *)bytes, "untouched");
		cr_assert_eq(len, 77);
	}

	/* A NUL inside the counted text is a bad character too. */
	uint8_t *bytes;
	size_t len;
	cr_assert_eq(fl_base64_decode("Zm\0v", 4, &bytes, &len), FL_ERR_INVALID);
	cr_assert_eq(fl_base64_decode(NULL, 0, &bytes, &len), FL_ERR_INVALID);
	cr_assert_eq(fl_base64_decode("Zm9v", 4, NULL, &len), FL_ERR_INVALID);
	cr_assert_eq(fl_base64_decode("Zm9v", 4, &bytes, NULL), FL_ERR_INVALID);
}

/* --- RFC 3339 times --- */

static int64_t parse_ok(const char *text)
{
	int64_t us = 0;
	cr_assert_eq(fl_time_parse(text, &us), FL_OK, "rejected \"%s\"", text);
	return us;
}

Test(time, parses_known_instants)
{
	cr_assert_eq(parse_ok("1970-01-01T00:00:00Z"), 0);
	cr_assert_eq(parse_ok("2026-11-26T21:00:00Z"), INT64_C(1795726800) * US);
	cr_assert_eq(parse_ok("2026-11-26T21:00:00.123Z"), INT64_C(1795726800) * US + 123000);
	cr_assert_eq(parse_ok("2000-02-29T12:34:56.000001Z"), INT64_C(951827696) * US + 1);
	cr_assert_eq(parse_ok("1969-12-31T23:59:59.999999Z"), -1);
	cr_assert_eq(parse_ok("0001-01-01T00:00:00Z"), INT64_C(-62135596800) * US);
	cr_assert_eq(parse_ok("9999-12-31T23:59:59Z"), INT64_C(253402300799) * US);
	cr_assert_eq(parse_ok("2026-11-26t21:00:00z"), INT64_C(1795726800) * US);
}

Test(time, converts_offsets_to_utc)
{
	int64_t utc = INT64_C(1795726800) * US; /* 2026-11-26T21:00:00Z */
	cr_assert_eq(parse_ok("2026-11-27T02:30:00+05:30"), utc);
	cr_assert_eq(parse_ok("2026-11-26T13:00:00-08:00"), utc);
	cr_assert_eq(parse_ok("2026-11-26T21:00:00+00:00"), utc);
	cr_assert_eq(parse_ok("2026-11-26T21:00:00-00:00"), utc);
	cr_assert_eq(parse_ok("2026-11-27T20:59:00+23:59"), utc);
	/* An offset that crosses a year boundary. */
	cr_assert_eq(parse_ok("1969-12-31T19:00:00-05:00"), 0);
	cr_assert_eq(parse_ok("1970-01-01T05:30:00.25+05:30"), 250000);
}

Test(time, truncates_fractions_to_microseconds)
{
	cr_assert_eq(parse_ok("1970-01-01T00:00:00.1Z"), 100000);
	cr_assert_eq(parse_ok("1970-01-01T00:00:00.12Z"), 120000);
	cr_assert_eq(parse_ok("1970-01-01T00:00:00.123456Z"), 123456);
	cr_assert_eq(parse_ok("1970-01-01T00:00:00.1234569Z"), 123456);
	cr_assert_eq(parse_ok("1970-01-01T00:00:00.999999999999999999999Z"), 999999);
	cr_assert_eq(parse_ok("1970-01-01T00:00:00.000000Z"), 0);
}

Test(time, checks_calendar)
{
	cr_assert_eq(parse_ok("2024-02-29T00:00:00Z"), INT64_C(1709164800) * US);
	parse_ok("2000-02-29T00:00:00Z");
	parse_ok("2026-01-31T00:00:00Z");
	parse_ok("2026-04-30T23:59:59Z");
	parse_ok("2026-12-31T00:00:00Z");

	const char *bad[] = {
	    "2026-02-30T00:00:00Z", "2026-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
	    "1900-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
	    "2026-06-31T00:00:00Z", "2026-09-31T00:00:00Z", "2026-11-31T00:00:00Z",
	    "2026-01-32T00:00:00Z", "2026-00-10T00:00:00Z", "2026-13-10T00:00:00Z",
	    "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z",
	    "2026-01-01T00:00:60Z", "2016-12-31T22:59:60Z", "2016-12-31T23:58:60Z",
	    "2016-12-31T23:59:61Z", "2017-01-01T00:59:60Z",
	};
	int64_t us = 7;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(fl_time_parse(bad[i], &us), FL_ERR_INVALID, "accepted \"%s\"", bad[i]);
	cr_assert_eq(us, 7, "ret_us written on failure");
}

/*
 * A leap second (second 60 of 23:59 UTC, RFC 3339 §5.7) is accepted and read
 * as the last microsecond of 23:59:59: POSIX time has no place for it, and
 * this keeps it after every time of that second and before the next day.
 */
Test(time, leap_second_is_the_last_microsecond_of_the_minute)
{
	int64_t last = parse_ok("2016-12-31T23:59:59.999999Z");
	cr_assert_eq(parse_ok("2016-12-31T23:59:60Z"), last);
	cr_assert_eq(parse_ok("2016-12-31T23:59:60.5Z"), last);
	cr_assert_eq(parse_ok("2016-12-31T23:59:60.999999999Z"), last);
	cr_assert_eq(parse_ok("2015-06-30T23:59:60Z"), parse_ok("2015-06-30T23:59:59.999999Z"));
	/* with an offset: the same instant, 23:59:60 in UTC */
	cr_assert_eq(parse_ok("2017-01-01T00:59:60+01:00"), last);
	cr_assert_eq(parse_ok("2016-12-31T18:29:60-05:30"), last);
	cr_assert_lt(parse_ok("2016-12-31T23:59:59.5Z"), last);
	cr_assert_lt(last, parse_ok("2017-01-01T00:00:00Z"));
}

Test(time, rejects_bad_syntax)
{
	const char *bad[] = {
	    "",
	    "2026-11-26T21:00:00",     /* no zone */
	    "2026-11-26T21:00:00.123", /* no zone */
	    "2026-11-26",	       /* date only */
	    "2026-11-26 21:00:00Z",    /* space separator */
	    "2026-11-26X21:00:00Z",
	    "2026-11-26T21:00Z",	  /* no seconds */
	    "2026-11-26T21:00:00.Z",	  /* empty fraction */
	    "2026-11-26T21:00:00,5Z",	  /* comma fraction */
	    "2026-11-26T21:00:00ZZ",	  /* trailing */
	    "2026-11-26T21:00:00Z ",	  /* trailing space */
	    " 2026-11-26T21:00:00Z",	  /* leading space */
	    "2026-11-26T21:00:00+05",	  /* short offset */
	    "2026-11-26T21:00:00+0530",	  /* offset without colon */
	    "2026-11-26T21:00:00+05:3",	  /* short offset minutes */
	    "2026-11-26T21:00:00+24:00",  /* offset hour out of range */
	    "2026-11-26T21:00:00+05:60",  /* offset minute out of range */
	    "2026-11-26T21:00:00+05:30x", /* trailing after offset */
	    "2026-11-26T21:00:00UTC",
	    "26-11-26T21:00:00Z", /* two-digit year */
	    "+2026-11-26T21:00:00Z",
	    "2026-1-26T21:00:00Z", /* one-digit month */
	    "2026-11-26T1:00:00Z", /* one-digit hour */
	    "2026/11/26T21:00:00Z",
	    "2026-11-26T21:00:00.12a4Z",
	    "2026-11-2\xd9T21:00:00Z",
	};
	int64_t us;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(fl_time_parse(bad[i], &us), FL_ERR_INVALID, "accepted \"%s\"", bad[i]);
	cr_assert_eq(fl_time_parse(NULL, &us), FL_ERR_INVALID);
	cr_assert_eq(fl_time_parse("1970-01-01T00:00:00Z", NULL), FL_ERR_INVALID);
}

static void expect_format(int64_t us, const char *expected)
{
	char out[FL_TIME_TEXT_LEN];
	memset(out, 'x', sizeof(out));
	fl_time_format(us, out);
	cr_assert_str_eq(out, expected);
}

Test(time, formats_known_instants)
{
	expect_format(0, "1970-01-01T00:00:00.000000Z");
	expect_format(INT64_C(1795726800) * US + 123000, "2026-11-26T21:00:00.123000Z");
	expect_format(INT64_C(1709164800) * US, "2024-02-29T00:00:00.000000Z");
	expect_format(INT64_C(951827696) * US + 1, "2000-02-29T12:34:56.000001Z");
	expect_format(-1, "1969-12-31T23:59:59.999999Z");
	expect_format(-US, "1969-12-31T23:59:59.000000Z");
	expect_format(INT64_C(-62135596800) * US, "0001-01-01T00:00:00.000000Z");
	expect_format(INT64_C(253402300799) * US + 999999, "9999-12-31T23:59:59.999999Z");
}

Test(time, clamps_to_four_digit_years)
{
	expect_format(INT64_MAX, "9999-12-31T23:59:59.999999Z");
	expect_format(INT64_C(253402300800) * US, "9999-12-31T23:59:59.999999Z");
	expect_format(INT64_MIN, "0000-01-01T00:00:00.000000Z");
	expect_format(INT64_C(-62167219200) * US - 1, "0000-01-01T00:00:00.000000Z");
	expect_format(INT64_C(-62167219200) * US, "0000-01-01T00:00:00.000000Z");
}

/* Every day from 1970 to 2200 and random instants agree with gmtime_r. */
Test(time, agrees_with_gmtime)
{
	srand(7);
	for (int64_t i = 0; i < 84000 + 20000; i++) {
		int64_t seconds = i < 84000
				      ? i * 86400 + 86399
				      : (int64_t)(((uint64_t)rand() << 20 ^ (uint64_t)rand()) %
						  UINT64_C(253402300800));
		int64_t us = seconds * US + i % US;
		time_t t = (time_t)seconds;
		struct tm tm;
		cr_assert_not_null(gmtime_r(&t, &tm));
		char expected[96];
		snprintf(expected, sizeof(expected), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (int)(i % US));
		char out[FL_TIME_TEXT_LEN];
		fl_time_format(us, out);
		cr_assert_str_eq(out, expected);
		int64_t parsed = 0;
		cr_assert_eq(fl_time_parse(out, &parsed), FL_OK);
		cr_assert_eq(parsed, us);
	}
}

Test(time, round_trips_before_the_epoch)
{
	srand(11);
	for (int i = 0; i < 20000; i++) {
		int64_t us = -(int64_t)(((uint64_t)rand() << 31 ^ (uint64_t)rand()) %
					(UINT64_C(62167219200) * US));
		char out[FL_TIME_TEXT_LEN];
		fl_time_format(us, out);
		int64_t parsed = 0;
		cr_assert_eq(fl_time_parse(out, &parsed), FL_OK, "%s", out);
		cr_assert_eq(parsed, us, "%s", out);
	}
}

Test(time, now_is_wall_clock_time)
{
	int64_t before = (int64_t)time(NULL);
	int64_t now = fl_time_now_us();
	int64_t after = (int64_t)time(NULL);
	cr_assert_geq(now / US, before);
	cr_assert_leq(now / US, after);
}

Test(time, monotonic_clock_advances)
{
	int64_t start = fl_time_mono_us();
	struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
	nanosleep(&pause, NULL);
	int64_t elapsed = fl_time_mono_us() - start;
	cr_assert_geq(elapsed, 20000);
	cr_assert_lt(elapsed, 5 * US);
}

/* --- durations --- */

static int64_t duration_ok(const char *text)
{
	int64_t us = 0;
	cr_assert_eq(fl_duration_parse(text, &us), FL_OK, "rejected \"%s\"", text);
	return us;
}

Test(duration, parses_each_unit)
{
	cr_assert_eq(duration_ok("30s"), 30 * US);
	cr_assert_eq(duration_ok("5m"), 5 * 60 * US);
	cr_assert_eq(duration_ok("24h"), 24 * 3600 * US);
	cr_assert_eq(duration_ok("7d"), 7 * 86400 * US);
	cr_assert_eq(duration_ok("1s"), US);
	cr_assert_eq(duration_ok("010m"), 10 * 60 * US);
	cr_assert_eq(duration_ok("106751991d"), INT64_C(106751991) * 86400 * US);
	cr_assert_eq(duration_ok("9223372036854s"), INT64_C(9223372036854) * US);
}

Test(duration, rejects_bad_text)
{
	const char *bad[] = {
	    "",
	    "s",
	    "0s",
	    "00m",
	    "-5s",
	    "+5s",
	    " 5s",
	    "5s ",
	    "5 s",
	    "5",
	    "5x",
	    "5ss",
	    "5S",
	    "5ms",
	    "1.5h",
	    "5sd",
	    "h5",
	    "1e3s",
	    "106751992d",		/* microseconds overflow int64 */
	    "9223372036855s",		/* microseconds overflow int64 */
	    "9223372036854775807s",	/* microseconds overflow int64 */
	    "99999999999999999999999s", /* the integer overflows */
	};
	int64_t us = 3;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(fl_duration_parse(bad[i], &us), FL_ERR_INVALID, "accepted \"%s\"",
			     bad[i]);
	cr_assert_eq(us, 3);
	cr_assert_eq(fl_duration_parse(NULL, &us), FL_ERR_INVALID);
	cr_assert_eq(fl_duration_parse("5s", NULL), FL_ERR_INVALID);
}

/* --- files --- */

Test(file, reads_whole_file_with_nul, .init = make_temp_dir, .fini = remove_temp_dir)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/data", temp_dir);
	const char data[] = "line one\n\0binary\xff tail";
	write_file(path, data, sizeof(data) - 1);

	char *text = NULL;
	size_t len = 0;
	cr_assert_eq(fl_file_read(path, &text, &len), FL_OK);
	cr_assert_eq(len, sizeof(data) - 1);
	cr_assert_arr_eq(text, data, len);
	cr_assert_eq(text[len], '\0');
	free(text);
}

Test(file, reads_empty_and_large_files, .init = make_temp_dir, .fini = remove_temp_dir)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/empty", temp_dir);
	write_file(path, "", 0);
	char *text = NULL;
	size_t len = 99;
	cr_assert_eq(fl_file_read(path, &text, &len), FL_OK);
	cr_assert_eq(len, 0);
	cr_assert_str_eq(text, "");
	free(text);

	size_t big_len = 3 * 1024 * 1024 + 17;
	char *big = malloc(big_len);
	cr_assert_not_null(big);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)(i * 31 + 7);
	snprintf(path, sizeof(path), "%s/big", temp_dir);
	write_file(path, big, big_len);
	cr_assert_eq(fl_file_read(path, &text, &len), FL_OK);
	cr_assert_eq(len, big_len);
	cr_assert_arr_eq(text, big, big_len);
	cr_assert_eq(text[len], '\0');
	free(text);
	free(big);

	/* ret_len may be NULL. */
	cr_assert_eq(fl_file_read(path, &text, NULL), FL_OK);
	free(text);
}

/* /proc files report size 0 but have contents: read until end of file. */
Test(file, reads_files_without_a_size)
{
	char *text = NULL;
	size_t len = 0;
	cr_assert_eq(fl_file_read("/proc/self/status", &text, &len), FL_OK);
	cr_assert_gt(len, 0);
	cr_assert_eq(strlen(text), len);
	cr_assert_not_null(strstr(text, "Name:"));
	free(text);
}

Test(file, maps_errors, .init = make_temp_dir, .fini = remove_temp_dir)
{
	char path[128];
	char *text = (char *)"untouched";
	size_t len = 5;
	snprintf(path, sizeof(path), "%s/missing", temp_dir);
	cr_assert_eq(fl_file_read(path, &text, &len), FL_ERR_NOT_FOUND);
	snprintf(path, sizeof(path), "%s/missing/deeper", temp_dir);
	cr_assert_eq(fl_file_read(path, &text, &len), FL_ERR_NOT_FOUND);
	cr_assert_eq(fl_file_read(temp_dir, &text, &len), FL_ERR_IO);
	cr_assert_str_eq(text, "untouched");
	cr_assert_eq(len, 5);

	if (geteuid() != 0) {
		snprintf(path, sizeof(path), "%s/secret", temp_dir);
		write_file(path, "x", 1);
		cr_assert_eq(chmod(path, 0), 0);
		cr_assert_eq(fl_file_read(path, &text, &len), FL_ERR_DENIED);
	}

	cr_assert_eq(fl_file_read(NULL, &text, &len), FL_ERR_INVALID);
	cr_assert_eq(fl_file_read(path, NULL, &len), FL_ERR_INVALID);
}

Test(dirs, make_dirs_creates_parents_with_mode, .init = make_temp_dir, .fini = remove_temp_dir)
{
	char path[256], file[256];
	struct stat st;
	snprintf(path, sizeof(path), "%s/a/b/c", temp_dir);
	cr_assert_eq(fl_make_dirs(path, 0750, NULL, 0), FL_OK);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_mode & 0777 & ~0022u, 0750 & ~0022u);
	cr_assert_eq(fl_make_dirs(path, 0750, NULL, 0), FL_OK, "an existing directory is fine");
	/* a file in the way, and an empty path */
	snprintf(file, sizeof(file), "%s/a/file", temp_dir);
	FILE *f = fopen(file, "w");
	cr_assert(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/a/file/d", temp_dir);
	char error[64];
	cr_assert_eq(fl_make_dirs(path, 0700, error, sizeof(error)), FL_ERR_NOT_FOUND);
	cr_assert_str_eq(error, strerror(ENOTDIR), "the system's reason: %s", error);
	cr_assert_eq(fl_make_dirs("", 0700, error, sizeof(error)), FL_ERR_INVALID);
}

/* Timed waits run on the monotonic clock: a deadline 50 ms ahead passes
 * after about 50 ms of it, and a condition variable set up for it times out
 * there. */
Test(util, monotonic_deadlines)
{
	pthread_cond_t cond;
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	cr_assert_eq(fl_cond_init_monotonic(&cond), FL_OK);
	int64_t start = fl_time_mono_us();
	struct timespec until = fl_deadline_after_us(50000);
	pthread_mutex_lock(&lock);
	int rc;
	do
		rc = pthread_cond_timedwait(&cond, &lock, &until);
	while (rc == 0);
	pthread_mutex_unlock(&lock);
	int64_t waited = fl_time_mono_us() - start;
	cr_assert_eq(rc, ETIMEDOUT);
	cr_assert_geq(waited, 50000, "woke after %lld us", (long long)waited);
	cr_assert_lt(until.tv_nsec, 1000000000L);
	struct timespec now = fl_deadline_after_us(-5);
	cr_assert_geq(now.tv_sec, until.tv_sec - 1);
	pthread_cond_destroy(&cond);
}
