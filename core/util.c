#include "fledger/util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fledger/text.h"

#define US_PER_SEC INT64_C(1000000)
#define US_PER_DAY (INT64_C(86400) * US_PER_SEC)

/*
 * The range fl_time_format can print with a four-digit year:
 * 0000-01-01T00:00:00.000000Z .. 9999-12-31T23:59:59.999999Z.
 * 719528 and 2932897 are the day numbers of 1970-01-01 counted from
 * 0000-01-01 and of 10000-01-01 counted from 1970-01-01.
 */
#define TIME_MIN_US (INT64_C(-719528) * US_PER_DAY)
#define TIME_MAX_US (INT64_C(2932897) * US_PER_DAY - 1)

static const char hex_digits[] = "0123456789abcdef";

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of one hex digit of either case, or -1. */
static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Writes 2*len lowercase hex digits of bytes and a NUL to out. */
void fl_hex_encode(const uint8_t *bytes, size_t len, char *out)
{
	assert(out != NULL);
	assert(bytes != NULL || len == 0);
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex_digits[bytes[i] >> 4];
		out[2 * i + 1] = hex_digits[bytes[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/*
 * Decodes hex, which must be exactly 2*len hex digits of either case and then
 * its NUL, into the len bytes of ret_bytes. FL_ERR_INVALID for a NULL
 * argument, a non-hex character, or text shorter or longer than 2*len; the
 * digits are checked before anything is written, so ret_bytes is untouched on
 * failure.
 */
enum fl_status fl_hex_decode(const char *hex, uint8_t *ret_bytes, size_t len)
{
	if (hex == NULL || (ret_bytes == NULL && len > 0) || len > SIZE_MAX / 2)
		return FL_ERR_INVALID;
	for (size_t i = 0; i < 2 * len; i++) {
		if (hex_value(hex[i]) < 0)
			return FL_ERR_INVALID;
	}
	if (hex[2 * len] != '\0')
		return FL_ERR_INVALID;
	for (size_t i = 0; i < len; i++)
		ret_bytes[i] = (uint8_t)(hex_value(hex[2 * i]) << 4 | hex_value(hex[2 * i + 1]));
	return FL_OK;
}

/* Length of the padded base64 text of len bytes, without the NUL. */
size_t fl_base64_encoded_len(size_t len)
{
	return len / 3 * 4 + (len % 3 != 0 ? 4 : 0);
}

/* Writes the padded standard base64 of bytes and a NUL to out. */
void fl_base64_encode(const uint8_t *bytes, size_t len, char *out)
{
	assert(out != NULL);
	assert(bytes != NULL || len == 0);
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t group =
		    (uint32_t)bytes[i] << 16 | (uint32_t)bytes[i + 1] << 8 | bytes[i + 2];
		*out++ = base64_alphabet[group >> 18];
		*out++ = base64_alphabet[group >> 12 & 0x3f];
		*out++ = base64_alphabet[group >> 6 & 0x3f];
		*out++ = base64_alphabet[group & 0x3f];
	}
	if (len - i == 1) {
		uint32_t group = (uint32_t)bytes[i] << 16;
		*out++ = base64_alphabet[group >> 18];
		*out++ = base64_alphabet[group >> 12 & 0x3f];
		*out++ = '=';
		*out++ = '=';
	} else if (len - i == 2) {
		uint32_t group = (uint32_t)bytes[i] << 16 | (uint32_t)bytes[i + 1] << 8;
		*out++ = base64_alphabet[group >> 18];
		*out++ = base64_alphabet[group >> 12 & 0x3f];
		*out++ = base64_alphabet[group >> 6 & 0x3f];
		*out++ = '=';
	}
	*out = '\0';
}

/* The 6-bit value of one character of the standard base64 alphabet, or -1. */
/* The value of each byte as a base64 digit, or -1. */
static const int8_t base64_values[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1, -1, 0,  1,	2,  3,	4,  5,	6,
    7,	8,  9,	10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static int base64_value(char c)
{
	return base64_values[(unsigned char)c];
}

/*
 * Decodes text_len characters of padded standard base64 into a new malloc'd
 * buffer that the caller frees (never NULL on success, even for empty text).
 * Strict: the length must be a multiple of 4; '=' may appear only as one or
 * two final characters; any other character outside the alphabet (whitespace,
 * the URL-safe '-' and '_', a NUL) is rejected, and so are nonzero bits in the
 * padding, so that each byte string has exactly one accepted text.
 * FL_ERR_INVALID for all of these and for NULL arguments, FL_ERR_NOMEM when
 * allocation fails. Nothing is written to ret_* on failure.
 */
enum fl_status fl_base64_decode(const char *text, size_t text_len, uint8_t **ret_bytes,
				size_t *ret_len)
{
	if (text == NULL || ret_bytes == NULL || ret_len == NULL || text_len % 4 != 0)
		return FL_ERR_INVALID;

	size_t pad = 0;
	if (text_len > 0 && text[text_len - 1] == '=')
		pad = text_len > 1 && text[text_len - 2] == '=' ? 2 : 1;
	size_t out_len = text_len / 4 * 3 - pad;

	uint8_t *out = malloc(out_len > 0 ? out_len : 1);
	if (out == NULL)
		return FL_ERR_NOMEM;

	size_t pos = 0, i = 0;
	/* every group but the last: four digits, three bytes */
	for (; i + 4 < text_len; i += 4) {
		int a = base64_value(text[i]), b = base64_value(text[i + 1]),
		    c = base64_value(text[i + 2]), d = base64_value(text[i + 3]);
		if ((a | b | c | d) < 0)
			goto fail_invalid;
		uint32_t group =
		    (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[pos++] = (uint8_t)(group >> 16);
		out[pos++] = (uint8_t)(group >> 8);
		out[pos++] = (uint8_t)group;
	}
	for (; i < text_len; i += 4) {
		bool last = i + 4 == text_len;
		size_t chars = last ? 4 - pad : 4;
		uint32_t group = 0;
		for (size_t j = 0; j < 4; j++) {
			int v = j < chars ? base64_value(text[i + j]) : 0;
			if (v < 0)
				goto fail_invalid;
			group = group << 6 | (uint32_t)v;
		}
		out[pos++] = (uint8_t)(group >> 16);
		if (chars > 2)
			out[pos++] = (uint8_t)(group >> 8);
		if (chars > 3)
			out[pos++] = (uint8_t)group;
		/* The bits under the padding must be zero (RFC 4648 §3.5). */
		if ((chars == 2 && (group & 0xffff) != 0) || (chars == 3 && (group & 0xff) != 0))
			goto fail_invalid;
	}
	assert(pos == out_len);

	*ret_bytes = out;
	*ret_len = out_len;
	return FL_OK;

fail_invalid:
	free(out);
	return FL_ERR_INVALID;
}

/*
 * Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): plain arithmetic, so no timegm, no locale, no locks.
 */
static int64_t days_from_civil(int64_t year, unsigned month, unsigned day)
{
	year -= month <= 2;
	int64_t era = (year >= 0 ? year : year - 399) / 400;
	unsigned year_of_era = (unsigned)(year - era * 400);
	unsigned day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
	unsigned day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
	return era * 146097 + (int64_t)day_of_era - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t days, int64_t *ret_year, unsigned *ret_month, unsigned *ret_day)
{
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	unsigned day_of_era = (unsigned)(days - era * 146097);
	unsigned year_of_era =
	    (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
	unsigned day_of_year =
	    day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
	unsigned shifted_month = (5 * day_of_year + 2) / 153;
	unsigned month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
	*ret_day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
	*ret_month = month;
	*ret_year = (int64_t)year_of_era + era * 400 + (month <= 2);
}

static bool is_leap_year(int year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int days_in_month(int year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return month == 2 && is_leap_year(year) ? 29 : days[month - 1];
}

/* Reads exactly count ASCII digits at text into ret_value. */
static bool parse_digits(const char *text, int count, int *ret_value)
{
	int value = 0;
	for (int i = 0; i < count; i++) {
		if (text[i] < '0' || text[i] > '9')
			return false;
		value = value * 10 + (text[i] - '0');
	}
	*ret_value = value;
	return true;
}

/*
 * Parses an RFC 3339 date-time, "YYYY-MM-DDTHH:MM:SS[.fraction]ZONE", into
 * microseconds since the epoch, UTC. The separator is 'T' or 't'; ZONE is
 * 'Z', 'z' or "+HH:MM"/"-HH:MM" (required). The fraction has one or more
 * digits; digits beyond the sixth are truncated. Month lengths and leap
 * years are checked. A leap second (second 60, allowed only where the time is
 * 23:59 in UTC, RFC 3339 §5.7) is read as the last microsecond of 23:59:59
 * UTC, whatever its fraction: POSIX time has no place for it, and that keeps
 * it after every time of the second before and before the next day. Nothing
 * may follow the zone. FL_ERR_INVALID for anything
 * else; ret_us is written only on success.
 */
enum fl_status fl_time_parse(const char *text, int64_t *ret_us)
{
	if (text == NULL || ret_us == NULL)
		return FL_ERR_INVALID;

	int year, month, day, hour, minute, second;
	const char *p = text;
	if (!parse_digits(p, 4, &year) || p[4] != '-' || !parse_digits(p + 5, 2, &month) ||
	    p[7] != '-' || !parse_digits(p + 8, 2, &day) || (p[10] != 'T' && p[10] != 't') ||
	    !parse_digits(p + 11, 2, &hour) || p[13] != ':' || !parse_digits(p + 14, 2, &minute) ||
	    p[16] != ':' || !parse_digits(p + 17, 2, &second))
		return FL_ERR_INVALID;
	p += 19;

	if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 ||
	    minute > 59 || second > 60)
		return FL_ERR_INVALID;

	int64_t fraction_us = 0;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return FL_ERR_INVALID;
		int64_t scale = 100000;
		for (; *p >= '0' && *p <= '9'; p++) {
			fraction_us += (*p - '0') * scale;
			scale /= 10;
		}
	}

	int64_t offset_s = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int offset_hour, offset_minute;
		if (!parse_digits(p + 1, 2, &offset_hour) || p[3] != ':' ||
		    !parse_digits(p + 4, 2, &offset_minute) || offset_hour > 23 ||
		    offset_minute > 59)
			return FL_ERR_INVALID;
		offset_s = (int64_t)offset_hour * 3600 + offset_minute * 60;
		if (*p == '-')
			offset_s = -offset_s;
		p += 6;
	} else {
		return FL_ERR_INVALID;
	}
	if (*p != '\0')
		return FL_ERR_INVALID;

	int64_t days = days_from_civil(year, (unsigned)month, (unsigned)day);
	int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
	if (second == 60) {
		/* seconds is now the start of the next UTC minute: it must be a day's */
		if (seconds % 86400 != 0)
			return FL_ERR_INVALID;
		*ret_us = seconds * US_PER_SEC - 1;
		return FL_OK;
	}
	*ret_us = seconds * US_PER_SEC + fraction_us;
	return FL_OK;
}

/* Writes value as exactly count decimal digits, zero-padded. */
static char *put_digits(char *out, int64_t value, int count)
{
	assert(value >= 0);
	for (int i = count - 1; i >= 0; i--) {
		out[i] = (char)('0' + value % 10);
		value /= 10;
	}
	return out + count;
}

/*
 * Formats us (microseconds since the epoch) as "YYYY-MM-DDTHH:MM:SS.ffffffZ".
 * Times before the epoch are exact. The text always has the fixed width of
 * FL_TIME_TEXT_LEN: a time outside years 0000..9999 is clamped to the
 * nearest end of that range, where fl_time_parse can read it back.
 */
void fl_time_format(int64_t us, char out[FL_TIME_TEXT_LEN])
{
	assert(out != NULL);
	if (us < TIME_MIN_US)
		us = TIME_MIN_US;
	if (us > TIME_MAX_US)
		us = TIME_MAX_US;

	int64_t days = us / US_PER_DAY;
	int64_t us_of_day = us % US_PER_DAY;
	if (us_of_day < 0) {
		us_of_day += US_PER_DAY;
		days--;
	}
	int64_t year;
	unsigned month, day;
	civil_from_days(days, &year, &month, &day);
	int64_t second_of_day = us_of_day / US_PER_SEC;

	char *p = out;
	p = put_digits(p, year, 4);
	*p++ = '-';
	p = put_digits(p, month, 2);
	*p++ = '-';
	p = put_digits(p, day, 2);
	*p++ = 'T';
	p = put_digits(p, second_of_day / 3600, 2);
	*p++ = ':';
	p = put_digits(p, second_of_day / 60 % 60, 2);
	*p++ = ':';
	p = put_digits(p, second_of_day % 60, 2);
	*p++ = '.';
	p = put_digits(p, us_of_day % US_PER_SEC, 6);
	*p++ = 'Z';
	*p = '\0';
	assert(p - out == FL_TIME_TEXT_LEN - 1);
}

static int64_t clock_us(clockid_t clock)
{
	struct timespec now;
	/* Cannot fail for these clocks with a valid pointer. */
	clock_gettime(clock, &now);
	return (int64_t)now.tv_sec * US_PER_SEC + now.tv_nsec / 1000;
}

/* Wall-clock time (CLOCK_REALTIME) in microseconds since the epoch. */
int64_t fl_time_now_us(void)
{
	return clock_us(CLOCK_REALTIME);
}

/* CLOCK_MONOTONIC in microseconds: only differences mean anything. */
int64_t fl_time_mono_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

/*
 * Parses a duration: a positive decimal integer immediately followed by
 * exactly one unit, 's', 'm', 'h' or 'd', and nothing else ("30s", "7d").
 * FL_ERR_INVALID for empty text, a sign, spaces, a missing or unknown unit,
 * zero, or a value whose microseconds do not fit in int64_t.
 */
enum fl_status fl_duration_parse(const char *text, int64_t *ret_us)
{
	if (text == NULL || ret_us == NULL)
		return FL_ERR_INVALID;

	const char *p = text;
	int64_t count = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (count > (INT64_MAX - (*p - '0')) / 10)
			return FL_ERR_INVALID;
		count = count * 10 + (*p - '0');
	}
	if (p == text || count == 0)
		return FL_ERR_INVALID;

	int64_t unit_us;
	switch (*p) {
	case 's':
		unit_us = US_PER_SEC;
		break;
	case 'm':
		unit_us = 60 * US_PER_SEC;
		break;
	case 'h':
		unit_us = 3600 * US_PER_SEC;
		break;
	case 'd':
		unit_us = US_PER_DAY;
		break;
	default:
		return FL_ERR_INVALID;
	}
	if (p[1] != '\0' || count > INT64_MAX / unit_us)
		return FL_ERR_INVALID;

	*ret_us = count * unit_us;
	return FL_OK;
}

/*
 * Reads the whole file at path into a new malloc'd buffer with a NUL after
 * the last byte; the caller frees *ret_text. ret_len (may be NULL) gets the
 * byte count without the NUL; the file may itself contain NUL bytes. Reads
 * until end of file, so pipes and files that grow while being read work.
 * FL_ERR_NOT_FOUND when the file does not exist, FL_ERR_DENIED without
 * permission, FL_ERR_NOMEM, FL_ERR_IO for other errors (a directory, say).
 */
enum fl_status fl_file_read(const char *path, char **ret_text, size_t *ret_len)
{
	if (path == NULL || ret_text == NULL)
		return FL_ERR_INVALID;

	enum fl_status status;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fl_status_of_errno(errno);

	struct stat info;
	struct fl_text text = FL_TEXT_INIT;
	/* Room for the file as it is now and the byte that a read needs to see
	 * the end without growing the buffer. */
	if (fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && info.st_size > 0 &&
	    (uint64_t)info.st_size < SIZE_MAX / 4)
		fl_text_reserve(&text, (size_t)info.st_size + 1);
	else
		fl_text_reserve(&text, 4095);

	for (;;) {
		if (!fl_text_reserve(&text, 1)) {
			status = FL_ERR_NOMEM;
			goto free_text;
		}
		ssize_t got = read(fd, text.data + text.len, text.cap - 1 - text.len);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			status = fl_status_of_errno(errno);
			goto free_text;
		}
		if (got == 0)
			break;
		text.len += (size_t)got;
	}
	close(fd);
	text.data[text.len] = '\0';
	*ret_text = fl_text_take(&text, ret_len);
	return FL_OK;

free_text:
	fl_text_free(&text);
	close(fd);
	return status;
}

enum fl_status fl_make_dirs(const char *dir, unsigned mode, char *error, size_t error_size)
{
	char path[4096];
	if (!dir[0]) {
		fl_set_error(error, error_size, "%s", strerror(EINVAL));
		return FL_ERR_INVALID;
	}
	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
		fl_set_error(error, error_size, "%s", strerror(ENAMETOOLONG));
		return FL_ERR_INVALID;
	}
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(path, (mode_t)mode) != 0 && errno != EEXIST) {
			int err = errno;
			fl_set_error(error, error_size, "%s", strerror(err));
			return fl_status_of_errno(err);
		}
		*p = saved;
		if (!saved)
			return FL_OK;
	}
}

enum fl_status fl_cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int err = pthread_condattr_init(&attr);
	if (err)
		return fl_status_of_errno(err);
	err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
	return err ? fl_status_of_errno(err) : FL_OK;
}

struct timespec fl_deadline_after_us(int64_t us)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (us < 0)
		us = 0;
	int64_t ns = deadline.tv_nsec + (us % 1000000) * 1000;
	deadline.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
	deadline.tv_nsec = (long)(ns % 1000000000);
	return deadline;
}

void fl_set_error(char *error, size_t error_size, const char *format, ...)
{
	va_list args;
	if (error == NULL || error_size == 0)
		return;
	va_start(args, format);
	vsnprintf(error, error_size, format, args);
	va_end(args);
}
